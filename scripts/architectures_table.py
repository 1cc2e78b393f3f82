"""Run the conformance suite and write docs/ARCHITECTURES.md (the family x check table), from the repo root:

    PYTHONPATH=src python scripts/architectures_table.py

Each cell is the outcome of one test of tests/core/test_conformance.py for one family: pass, FAIL, or "n/a"
with the skip reason as a footnote. Columns for the family itself (which injector, position kind) come from
building its tiny model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "core")]

CHECKS = {  # test name -> column title
    "test_reference": "by-hand reference",
    "test_eager_equals_sdpa": "eager = sdpa",
    "test_padding_left_and_right": "padding L/R",
    "test_prefix_changes_output": "prefix matters",
    "test_only_prefix_and_head_train": "only prefix + head train",
    "test_gradient_checkpointing": "grad. checkpointing",
    "test_mixed_prefixes_equal_rows_alone": "mixed prefixes",
    "test_save_load_exact": "save → load",
    "test_generate_equals_step_by_step[dynamic]": "generate (dynamic)",
    "test_generate_equals_step_by_step[static]": "generate (static)",
}


def run_suite() -> dict[tuple[str, str], tuple[str, str]]:
    """(check, family) -> (outcome, reason)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
             "tests/core/test_conformance.py"],
            cwd=ROOT, env=environment, check=False,
        )  # fmt: skip
        results = {}
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            name = case.get("name", "")
            if "[" not in name:
                continue
            test, family = name[:-1].split("[", 1)
            if test == "test_generate_equals_step_by_step":  # ids are "<family>-<cache>"
                family, cache = family.rsplit("-", 1)
                test = f"{test}[{cache}]"
            skipped, failed = case.find("skipped"), case.find("failure") or case.find("error")
            if failed is not None:
                results[(test, family)] = ("FAIL", (failed.get("message") or "")[:120])
            elif skipped is not None:
                results[(test, family)] = ("n/a", (skipped.get("message") or "").removeprefix("Skipped: "))
            else:
                results[(test, family)] = ("pass", "")
        return results


def family_facts(family: str) -> tuple[str, str, str]:
    """(encoder/decoder, injector, position kind) from the tiny model, or blanks if absent here."""
    from core_tiny import build, family_available, is_decoder
    from seq2seq_tiny import SEQ2SEQ_FAMILIES, seq2seq_model

    from ptuning.core.injection import REGISTERED_INJECTORS
    from ptuning.core.injection.scoping import is_scoped

    if family in SEQ2SEQ_FAMILIES:
        geometry = seq2seq_model(family).geometry
        return (
            "encoder-decoder",
            "interface, 3 prefix kinds (encoder_decoder.py)",
            str(geometry.position_kind),
        )
    if family_available(family):
        return ("decoder" if is_decoder(family) else "encoder", "", "")
    try:
        built = build(family, attn_implementation="eager")
    except Exception as error:  # noqa: BLE001 - shown in the table
        return ("?", f"build failed: {error}", "")
    if family in REGISTERED_INJECTORS:
        injector = f"registered ({REGISTERED_INJECTORS[family].__module__.rsplit('.', 1)[-1]}.py)"
    else:
        injector = "interface, prefix scoped to the call" if is_scoped(built.model.backbone) else "interface"
    geometry = built.model.geometry
    extras = [str(geometry.position_kind)]
    if geometry.sliding_window:
        extras.append(f"sliding window {geometry.sliding_window}")
    if geometry.softcapping:
        extras.append(f"softcap {geometry.softcapping:g}")
    if geometry.qk_norm:
        extras.append("q/k norm")
    if geometry.num_kv_heads == 1 < geometry.num_heads:
        extras.append("multi-query")
    elif geometry.num_kv_heads != geometry.num_heads:
        extras.append(f"GQA {geometry.num_heads}/{geometry.num_kv_heads}")
    return ("decoder" if geometry.is_decoder else "encoder", injector, ", ".join(extras))


def main() -> None:
    import torch
    import transformers
    from core_tiny import ALL_FAMILIES
    from seq2seq_tiny import SEQ2SEQ_FAMILIES

    results = run_suite()
    reasons: dict[str, int] = {}
    lines = [
        "| family (model_type) | kind | injection | positions, attention | "
        + " | ".join(CHECKS.values())
        + " |",
        "|---|---|---|---|" + "---|" * len(CHECKS),
    ]
    green = 0
    families = [*ALL_FAMILIES, *SEQ2SEQ_FAMILIES]
    for family in families:
        kind, injector, facts = family_facts(family)
        cells, all_ok, any_run = [], True, False
        for check in CHECKS:
            outcome, reason = results.get((check, family), ("missing", ""))
            if outcome == "n/a":
                reason = "an encoder: no generation" if reason.startswith("an encoder") else reason
                number = reasons.setdefault(reason, len(reasons) + 1)
                cells.append(f"n/a [{number}]")
            else:
                cells.append({"pass": "✅", "FAIL": "❌ FAIL", "missing": "?"}[outcome])
                all_ok &= outcome == "pass"
                any_run |= outcome == "pass"
        green += all_ok and any_run
        lines.append(f"| `{family}` | {kind} | {injector} | {facts} | " + " | ".join(cells) + " |")
    footnotes = [f"[{number}] {reason}" for reason, number in reasons.items()]
    header = (ROOT / "scripts" / "architectures_header.md").read_text()
    text = header.format(
        transformers=transformers.__version__,
        torch=torch.__version__.split("+")[0],
        green=green,
        total=len(families),
    )
    text += "\n".join(lines) + "\n\n" + "\n\n".join(footnotes) + "\n"
    (ROOT / "docs" / "ARCHITECTURES.md").write_text(text)
    print(f"docs/ARCHITECTURES.md: {green} of {len(families)} families pass every check that applies")


if __name__ == "__main__":
    main()

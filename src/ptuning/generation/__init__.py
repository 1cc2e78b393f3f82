"""Decoding for causal-LM prompt checkpoints, shared by evaluation, ``ptuning predict`` and the server.

Tasks hold data and scoring only; everything that turns prompt tokens into new tokens lives here:
``texts`` (what eval and predict use: greedy and sampled decoding on the continuous decoder, each sampled
prompt with a seed of its own, the rest through ``PromptModel.generate``), ``sampling`` (greedy /
temperature / top-k / top-p choices and stop strings) and ``decoder`` (continuous batching: requests for
different prefixes decode together, joining and leaving between steps; what the server uses too).
"""

from ptuning.generation.decoder import ContinuousDecoder, Sequence, StepEvent
from ptuning.generation.sampling import SamplingParams, StopStrings
from ptuning.generation.texts import (
    check_generation_room,
    decode_until_eos,
    generate_task_outputs,
    generate_texts,
    is_generative,
    plain_greedy,
)

__all__ = [
    "ContinuousDecoder",
    "SamplingParams",
    "Sequence",
    "StepEvent",
    "StopStrings",
    "check_generation_room",
    "decode_until_eos",
    "generate_task_outputs",
    "generate_texts",
    "is_generative",
    "plain_greedy",
]

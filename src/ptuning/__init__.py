"""ptuning: P-tuning v2 (deep prompt tuning) for PyTorch and Hugging Face transformers 5.

Layers, imported right to left only: ``core`` (prefixes, injection, heads, checkpoints) ←
``tasks`` (readers, features, metrics) ← ``generation`` (decoding) ← ``training`` / ``cli`` / ``serve``;
``interop`` (PEFT adapters) reads ``core`` only.
"""

__version__ = "0.1.0"

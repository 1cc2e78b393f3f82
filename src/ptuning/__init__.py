"""ptuning: P-tuning v2 (deep prompt tuning) for PyTorch and Hugging Face transformers 5.

Layers, imported right to left only: ``core`` (prefixes, injection, heads, checkpoints) ←
``tasks`` (readers, features, metrics) ← ``training`` / ``cli`` / ``serve``.
"""

__version__ = "0.1.0"

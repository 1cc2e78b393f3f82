"""The engine: prefix configuration, prefix encoders, injection into frozen models, heads, checkpoints.

Import from the submodules (``ptuning.core.model``, ``ptuning.core.config``...); this package file stays
empty so that light modules such as ``ptuning.core.kinds`` do not pull in torch and transformers.
"""

"""Other libraries' prompt formats, in and out. Depends on ``ptuning.core``; ``core`` never imports it
at module level (``core.checkpoint`` hands a PEFT adapter folder to ``peft_import`` when asked to load one).
"""

from ptuning.interop.peft_export import export_peft
from ptuning.interop.peft_format import PeftFormatError, is_peft_adapter, read_adapter
from ptuning.interop.peft_import import load_peft_adapter, peft_checkpoint_config

__all__ = [
    "PeftFormatError",
    "export_peft",
    "is_peft_adapter",
    "load_peft_adapter",
    "peft_checkpoint_config",
    "read_adapter",
]

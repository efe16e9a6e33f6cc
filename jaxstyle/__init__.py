"""jaxstyle: neural style transfer (Gatys et al.) as a functional JAX program.

    import jaxstyle
    result = jaxstyle.transfer("photo.jpg", "painting.jpg", size=256, output="out.png")
    result.to_pil()
"""
from importlib import import_module
from typing import Any

from jaxstyle.config import PRESETS, Config
from jaxstyle.errors import JaxstyleError

# The rest loads on first use: `jaxstyle --help` and option errors need no JAX at all.
_LAZY = {"transfer": "faces.api", "reconstruct_content": "faces.api", "reconstruct_style": "faces.api",
         "resume": "faces.api", "video": "faces.api", "load_weights": "faces.api",
         "enable_compilation_cache": "platform.runtime", "keep_freed_memory": "platform.runtime",
         "Progress": "observers.results", "Result": "observers.results"}

__all__ = ["Config", "PRESETS", "JaxstyleError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxstyle' has no attribute {name!r}")

"""jaxstyle: neural style transfer (Gatys et al.) as a functional JAX program.

    import jaxstyle
    result = jaxstyle.transfer("photo.jpg", "painting.jpg", size=256, output="out.png")
    result.to_pil()
"""
from .api import load_weights, reconstruct_content, reconstruct_style, resume, transfer
from .runtime import enable_compilation_cache, keep_freed_memory
from .config import PRESETS, Config
from .errors import JaxstyleError
from .results import Progress, Result

__all__ = ["Config", "PRESETS", "JaxstyleError", "Progress", "Result", "transfer",
           "reconstruct_content", "reconstruct_style", "resume", "load_weights", "enable_compilation_cache",
           "keep_freed_memory"]
__version__ = "0.1.0"

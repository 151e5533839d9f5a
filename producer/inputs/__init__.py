"""Image inputs on the producer side: uploads, the checks a job's images get at submission, and their resolution.

Importable by the worker without torch; Pillow is imported only by the functions that decode images.
"""

from .limits import InputLimits, InputSettings

__all__ = ["InputLimits", "InputSettings"]

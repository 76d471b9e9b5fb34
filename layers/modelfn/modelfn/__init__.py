"""modelfn: a serverless function runtime for ONNX models.

Importing the package is cheap: the runtime pieces are imported by the modules that need them.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from modelfn.function import ModelFunction


def __getattr__(name: str) -> object:
    """`from modelfn import ModelFunction` without importing the runtime when only the version is wanted."""
    if name == "ModelFunction":
        from modelfn.function import ModelFunction

        return ModelFunction
    raise AttributeError(name)


__all__ = ["ModelFunction", "__version__"]

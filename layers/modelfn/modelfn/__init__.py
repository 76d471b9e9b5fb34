"""modelfn: a serverless function runtime for ONNX models.

Importing the package is cheap: the runtime pieces are imported by the modules that need them.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from modelfn.function import ModelFunction
    from modelfn.model.loaded import LoadedModel


def __getattr__(name: str) -> object:
    """`from modelfn import ModelFunction` without importing the runtime when only the version is wanted."""
    if name == "ModelFunction":
        from modelfn.function import ModelFunction

        return ModelFunction
    if name == "LoadedModel":  # what a function's hooks are handed
        from modelfn.model.loaded import LoadedModel

        return LoadedModel
    raise AttributeError(name)


__all__ = ["LoadedModel", "ModelFunction", "__version__"]

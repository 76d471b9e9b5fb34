"""Error kinds of the core. Each carries the HTTP status the edge answers with, so transport code never guesses."""

from __future__ import annotations


class ModelfnError(Exception):
    """Base class: `status` is the HTTP status an edge maps this error to."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ModelfnError):
    """The client's request is malformed or does not fit the model's signature."""

    status = 400


class ModelNotFound(ModelfnError):
    """No such model, version or label in the store."""

    status = 404


class PayloadTooLarge(ModelfnError):
    """The request is too large: its body exceeds MODELFN_MAX_BODY_BYTES, or its tensors MODELFN_MAX_ELEMENTS."""

    status = 413


class NotReady(ModelfnError):
    """The version exists but cannot be served (failed integrity check or load)."""

    status = 503


class StoreError(ModelfnError):
    """The model store could not be read or written (network, permissions, layout)."""

    status = 502


class PublishError(ModelfnError):
    """A publish, label or quantize request was refused (bad artifact, version taken)."""

    status = 400

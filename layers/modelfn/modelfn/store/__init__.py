"""Model store: S3 and local folders behind one interface, plus the versioned layout on top of it."""

from modelfn.store.base import ObjectStore, open_store, split_uri
from modelfn.store.layout import Manifest, ModelRepository

__all__ = ["Manifest", "ModelRepository", "ObjectStore", "open_store", "split_uri"]

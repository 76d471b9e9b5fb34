"""Which models a process serves: resolving versions and labels, loading through the verified warm-start cache."""

from modelfn.registry.registry import ModelRegistry, VersionStatus

__all__ = ["ModelRegistry", "VersionStatus"]

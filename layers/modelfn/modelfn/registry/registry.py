"""The transport-neutral core: which models a process serves, resolving versions and labels, loading through
the warm-start cache. HTTP, SQS and S3 all go through here; only decoding differs."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from modelfn.errors import ModelfnError, ModelNotFound
from modelfn.model.loaded import LoadedModel
from modelfn.registry.labels import Resolutions
from modelfn.registry.loader import ModelCache, model_cache
from modelfn.settings import Settings
from modelfn.store import ModelRepository, open_store
from modelfn.store.base import located
from modelfn.store.layout import check_name


@dataclass
class VersionStatus:
    version: int
    ready: bool
    error: str | None = None


class ModelRegistry:
    def __init__(
        self,
        repo: ModelRepository,
        settings: Settings | None = None,
        models: Iterable[str] | None = None,
        cache: ModelCache | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings or Settings()
        self.allowed = sorted(set(models)) if models else None
        self.cache = cache or model_cache
        self._names: Resolutions[str, list[str]] = Resolutions(limit=1)

    @classmethod
    def from_uri(cls, uri: str, settings: Settings | None = None, models: Iterable[str] | None = None) -> ModelRegistry:
        return cls(ModelRepository(open_store(uri)), settings, models)

    def cached_model_names(self) -> list[str] | None:
        """The served models if listed within MODELFN_LABEL_TTL seconds, else None (no I/O, no lock)."""
        return self._names.fresh(self.repo.uri, self.settings.label_ttl)

    def model_names(self) -> list[str]:
        """The served models, re-listed from the store after MODELFN_LABEL_TTL seconds (as labels are), so a
        request path that needs the list (/predict without a model) never pays a store round trip; while the store
        is down, the last list it gave."""
        return self._names.get(
            self.repo.uri, self.settings.label_ttl, self._list_models, f"the models of {self.repo.uri}"
        )

    def _list_models(self) -> list[str]:
        names = self.repo.models()
        return names if self.allowed is None else [n for n in names if n in self.allowed]

    def _check_served(self, name: str) -> None:
        check_name(name)
        if self.allowed is not None and name not in self.allowed:
            raise ModelNotFound(f"model {name!r} is not served here (serving: {', '.join(self.allowed)})")

    def resolve(self, name: str, version: str | int | None = None) -> int:
        self._check_served(name)
        try:
            return self.cache.resolve(self.repo, name, version, self.settings.label_ttl)
        except ModelNotFound as e:
            raise ModelNotFound(e.message) from e

    def get(self, name: str, version: str | int | None = None) -> LoadedModel:
        """The loaded model: ModelNotFound (404) if the version does not exist, NotReady (503) if it cannot be
        served (integrity check or load failed)."""
        resolved = self.resolve(name, version)
        return self.cache.get(self.repo, name, resolved, self.settings)

    def peek(self, name: str, version: int) -> LoadedModel | None:
        return self.cache.peek(self.repo, name, version)

    def lookup(self, name: str, version: str | int | None = None) -> LoadedModel | None:
        """The loaded model when `version` resolves within MODELFN_LABEL_TTL (an integer always does) and that
        version is in memory, else None: no I/O and no blocking lock, so an event loop may call it and run `get` in
        a worker thread only when this says None."""
        if self.allowed is not None and name not in self.allowed:
            return None
        resolved = self.cache.fresh(self.repo, name, version, self.settings.label_ttl)
        return None if resolved is None else self.cache.peek(self.repo, name, resolved)

    def versions(self, name: str) -> list[int]:
        self._check_served(name)
        versions = self.repo.versions(name)
        if not versions:
            raise located(ModelNotFound(f"model {name!r} not found"), self.repo.uri, logging.DEBUG)
        return versions

    def status(self, name: str, version: str | int | None = None) -> VersionStatus:
        """Whether a version is servable, loading it if need be (a version is ready only once it is loaded)."""
        resolved = self.resolve(name, version)
        try:
            self.cache.get(self.repo, name, resolved, self.settings)
        except ModelNotFound:
            raise
        except ModelfnError as e:
            return VersionStatus(resolved, False, e.message)
        return VersionStatus(resolved, True)

    def preload(self) -> dict[str, str]:
        """Load the default version of every served model now, so no first request pays for it. Failures are
        reported, not raised: every other model keeps serving."""
        problems: dict[str, str] = {}
        for name in self.model_names():
            try:
                self.get(name)
            except ModelfnError as e:
                problems[name] = e.message
        return problems

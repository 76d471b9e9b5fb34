"""API keys (MODELFN_API_KEYS): who may call the service.

The setting lists keys separated by commas, each a plain key or `sha256:<hex>`, the SHA-256 of a key (so a
deployment's configuration need not hold the keys themselves). When it is set, every route but the public ones
(routes.py `public`: the health checks and the documentation) needs `Authorization: Bearer KEY` or
`X-API-Key: KEY`, else 401 with `WWW-Authenticate: Bearer`.

Only SHA-256 digests are kept and compared, with `hmac.compare_digest` against every configured digest (no early
exit), so neither a key's length nor which entry matched shows in the timing. Keys never appear in a message, a
log line or an error body; a request's identity for rate limits is the digest, never the key.

Where it applies: wherever the service runs, because the check lives in the service core (dispatch.py). That
covers `modelfn serve` and the container, and also the Lambda functions (ModelFunction): there API Gateway's
authorizer or IAM is the real gate, and MODELFN_API_KEYS, when a deployment sets it, is a second, cheap and
consistent one (unset, it costs one attribute check). A SageMaker endpoint is the exception to avoid: its
InvokeEndpoint passes no Authorization header to the container, so keys there would refuse every invocation; IAM
on InvokeEndpoint protects it instead.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from modelfn.service.request import Refused

CHALLENGE = {"www-authenticate": 'Bearer realm="modelfn"'}
DIGEST_PREFIX = "sha256:"


class Unauthorized(Refused):
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, CHALLENGE)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: `Authorization: Bearer KEY` first, else `X-API-Key: KEY`."""
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key", "").strip() or None


class ApiKeys:
    """The configured keys as SHA-256 digests; `identify` admits a request or raises 401."""

    def __init__(self, digests: Sequence[bytes]) -> None:
        if not digests:
            raise ValueError("MODELFN_API_KEYS lists no key")
        self.digests = tuple(digests)

    @classmethod
    def parse(cls, value: str | None) -> ApiKeys | None:
        """None when the setting is unset or blank (no authentication). An entry is never echoed in an error."""
        if value is None or not value.strip():
            return None
        digests: list[bytes] = []
        for i, entry in enumerate((e.strip() for e in value.split(",")), start=1):
            if not entry:
                continue
            if entry.lower().startswith(DIGEST_PREFIX):
                digests.append(_digest_of(entry[len(DIGEST_PREFIX) :], i))
            else:
                digests.append(hashlib.sha256(entry.encode()).digest())
        return cls(digests)

    def identify(self, headers: Mapping[str, str]) -> str:
        """The identity of the key the request presents (its digest, in hex), or 401."""
        key = presented_key(headers)
        if key is None:
            raise Unauthorized("missing API key: send Authorization: Bearer KEY or X-API-Key: KEY")
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        matched: bytes | None = None
        for known in self.digests:  # every entry, so the time does not say which one matched
            if hmac.compare_digest(known, digest):
                matched = known
        if matched is None:
            raise Unauthorized("invalid API key")
        return matched.hex()


def _digest_of(hexdigest: str, position: int) -> bytes:
    try:
        digest = bytes.fromhex(hexdigest)
    except ValueError as e:
        raise ValueError(f"MODELFN_API_KEYS entry {position}: sha256: must be followed by 64 hex digits") from e
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError(f"MODELFN_API_KEYS entry {position}: sha256: must be followed by 64 hex digits")
    return digest

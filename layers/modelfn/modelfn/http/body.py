"""Reading request bodies under the size limit, with gzip/deflate request compression (tritonclient offers it)."""

from __future__ import annotations

from starlette.requests import Request

from modelfn.errors import InvalidInput
from modelfn.fastpath import decompress, too_large


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing with 413 as soon as it is known to exceed `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large(limit)
        except ValueError as e:
            raise InvalidInput(f"invalid Content-Length {declared!r}") from e
    body = getattr(request, "_body", None)
    if body is None:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        body = b"".join(chunks)
    if len(body) > limit:
        raise too_large(limit)
    return decompress(body, request.headers.get("content-encoding", "identity"), limit)

"""Paths as some clients build them: doubled and trailing slashes.

The AWS extension's client joins its saved base URL (which it forces to end in `/`) with paths that
start with one (`.../esd//dataset`), and API Gateway answered with or without a trailing slash. For
the prefixes given, this ASGI layer collapses repeated slashes and drops a trailing one before
routing, so `/esd//dataset/` reaches `/esd/dataset`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

_SLASHES = re.compile(r"/{2,}")


class SlashTolerance:
    def __init__(self, app: ASGIApp, prefixes: Sequence[str]) -> None:
        self.app = app
        self.prefixes = tuple(p.rstrip("/") for p in prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            tidy = _SLASHES.sub("/", path)
            tidy = tidy.rstrip("/") or "/"
            if tidy != path and any(tidy == p or tidy.startswith(p + "/") for p in self.prefixes):
                scope = {**scope, "path": tidy, "raw_path": tidy.encode()}
        await self.app(scope, receive, send)

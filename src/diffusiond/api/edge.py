"""The edge: one ASGI layer in front of every dialect, before routing and auth.

For every HTTP request it

1. gives the request an id (the client's `x-request-id` when it is a sane token, else a new one),
   sent back as `x-request-id` on every response and written in every error;
2. finds the dialect whose paths the request is under (`Dialect.prefixes`), for the error shape;
3. bounds the body by its route class: an upload route a dialect declares takes multipart with at
   most its files (each `max_upload_bytes`) and fields (each `max_form_field_bytes`, all non-file
   bytes together `max_json_bytes`), or raw bytes up to `max_upload_bytes`; every other body is
   JSON-class, at most `max_json_bytes` and `max_json_depth` levels of nesting. Content-Length is
   checked before anything is read and the bytes as they stream in (chunked bodies too); multipart
   is parsed as it streams, so a part is refused the moment it passes its bound and nothing past
   the limits reaches the application (or its temporary files);
4. on a dialect's paths, asks for a valid key before the first byte of a body is read (except on
   the upload routes a signed URL authorises), so a request without one costs a few KiB, never its
   body;
5. answers what it refuses, the framework's own errors (404, 405, bad JSON, bad multipart,
   validation) and any unexpected exception (a 500, logged with the request id: a defect) in the
   dialect's error shape; paths of no dialect get `{"error": {"code", "message", "requestId"}}`.

A dialect joins with one `Dialect(...)` line in `app.py`'s list.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import pydantic
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diffusiond.api.errors import Renderer, as_domain_error, request_id, respond, server_error
from diffusiond.config import Settings
from diffusiond.domain.errors import DomainError, InvalidParams, PayloadTooLarge

log = logging.getLogger(__name__)
Authenticate = Callable[[Request], Awaitable[object]]
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# ---- what dialects declare -------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """A route that takes images: multipart with up to `files` files, (`raw`) the bytes of one, or
    (`json`) a JSON body carrying up to `files` base64 images (A1111-style), bounded as JSON plus
    that many encoded images.

    `keyless`: a signed URL authorises it, and the handler checks the signature before it reads.
    """

    method: str
    path: str  # a route template: "/v1/resource/image/{resource_id}" ("{key:path}" spans slashes)
    files: int = 1
    raw: bool = False
    keyless: bool = False
    json: bool = False
    max_bytes: int | None = None  # a raw body's own limit (a model file's part); None: max_upload_bytes

    def matches(self, method: str, path: str) -> bool:
        pattern = re.sub(r"\\\{[^}:]+:path\\\}", ".+", re.escape(self.path))
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern)
        return method == self.method and re.fullmatch(pattern, path) is not None


@dataclass(frozen=True)
class Dialect:
    """A family of paths that answers errors in one shape."""

    name: str
    prefixes: tuple[str, ...]
    render: Renderer
    uploads: tuple[Upload, ...] = ()

    def owns(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    def upload(self, method: str, path: str) -> Upload | None:
        return next((u for u in self.uploads if u.matches(method, path)), None)


class GenericErrorBody(pydantic.BaseModel):
    code: str
    message: str
    requestId: str


class GenericError(pydantic.BaseModel):
    """The error shape of paths no dialect owns."""

    error: GenericErrorBody


def render_generic(request: Request, err: DomainError) -> Response:
    body = GenericError(error=GenericErrorBody(code=err.code, message=err.message, requestId=request_id(request)))
    return JSONResponse(body.model_dump(), status_code=err.status)


GENERIC = Dialect("generic", (), render_generic)


@dataclass(frozen=True)
class EdgeLimits:
    json_bytes: int
    json_depth: int
    upload_bytes: int
    form_fields: int
    form_field_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(json_bytes=settings.max_json_bytes, json_depth=settings.max_json_depth,
                   upload_bytes=settings.max_upload_bytes, form_fields=settings.max_form_fields,
                   form_field_bytes=settings.max_form_field_bytes)


# ---- body guards: each sees the body's chunks as they stream in, and raises on the first excess -----


class BodyGuard(Protocol):
    limit: int  # total bytes

    def feed(self, chunk: bytes) -> None: ...

    def end(self) -> None: ...


def too_large(limit: int, what: str = "the request body") -> PayloadTooLarge:
    # The code every size refusal has (`invalid_file_size`): 413 in most shapes, 400 in Stability's.
    return PayloadTooLarge(f"{what} is larger than {limit:,} bytes, the most this route takes")


class SizeGuard:
    """Counts bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise too_large(self.limit)

    def end(self) -> None:
        pass


_JSON_TOKENS = re.compile(rb'[][{}"\\]')
_OPEN, _CLOSE, _QUOTE, _BACKSLASH = frozenset(b"[{"), frozenset(b"]}"), ord('"'), ord("\\")


class JsonGuard(SizeGuard):
    """Counts bytes and JSON nesting, without parsing: brackets outside strings, one regex pass.

    Whatever the body is, `json.loads` never sees more than `depth` levels (the parser recurses).
    """

    def __init__(self, limit: int, depth: int) -> None:
        super().__init__(limit)
        self.max_depth = depth
        self.depth = 0
        self.in_string = False
        self.escaped = False  # the chunk ended on a backslash inside a string

    def feed(self, chunk: bytes) -> None:
        super().feed(chunk)
        skip = 0 if self.escaped else -1
        self.escaped = False
        for m in _JSON_TOKENS.finditer(chunk):
            i = m.start()
            if i == skip:
                continue
            c = chunk[i]
            if self.in_string:
                if c == _BACKSLASH:
                    skip = i + 1
                    self.escaped = skip == len(chunk)
                elif c == _QUOTE:
                    self.in_string = False
            elif c == _QUOTE:
                self.in_string = True
            elif c in _OPEN:
                self.depth += 1
                if self.depth > self.max_depth:
                    raise InvalidParams(f"body: JSON nested deeper than {self.max_depth} levels",
                                        code="invalid_json")
            elif c in _CLOSE:
                self.depth -= 1


class MultipartGuard(SizeGuard):
    """Parses multipart/form-data as it streams: counts parts and bounds each one's size."""

    def __init__(self, boundary: bytes, files: int, limits: EdgeLimits) -> None:
        super().__init__(files * limits.upload_bytes + limits.json_bytes)
        self.limits = limits
        self.max_files = files
        self.files = self.fields = 0
        self.file_bytes = 0  # file contents so far; the rest (headers, fields, boundaries) has its own bound
        self.part_limit = 0
        self.part_size = 0
        self.part_is_file = False
        self.part_name = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header: list[bytes] = [b"", b""]
        self.ended = False
        try:
            self.parser = MultipartParser(boundary, callbacks={  # type: ignore[arg-type]
                "on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_end": self._end,
            })
        except FormParserError as e:
            raise malformed(str(e)) from None

    def feed(self, chunk: bytes) -> None:
        super().feed(chunk)
        try:
            self.parser.write(chunk)
        except FormParserError as e:
            raise malformed(str(e)) from None
        if self.size - self.file_bytes > self.limits.json_bytes:
            raise too_large(self.limits.json_bytes, "the form's fields and headers")

    def end(self) -> None:
        if not self.ended:
            raise malformed("the body ended before the closing boundary")

    def _part_begin(self) -> None:
        self.headers, self.header = [], [b"", b""]

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header[0] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header[1] += data[start:end]

    def _header_end(self) -> None:
        self.headers.append((self.header[0].strip().lower(), self.header[1].strip()))
        self.header = [b"", b""]

    def _headers_finished(self) -> None:
        disposition = dict(self.headers).get(b"content-disposition")
        _, options = parse_options_header(disposition)
        if disposition is None or b"name" not in options:
            raise malformed("a part has no Content-Disposition name")
        self.part_name = options[b"name"].decode("latin-1")
        self.part_is_file = b"filename" in options
        self.part_size = 0
        if self.part_is_file:
            self.files += 1
            self.part_limit = self.limits.upload_bytes
            if self.files > self.max_files:
                raise InvalidParams(f"too many files: this route takes at most {self.max_files}",
                                    code="invalid_multipart")
        else:
            self.fields += 1
            self.part_limit = self.limits.form_field_bytes
            if self.fields > self.limits.form_fields:
                raise InvalidParams(f"too many fields: at most {self.limits.form_fields}", code="invalid_multipart")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.part_size += end - start
        if self.part_is_file:
            self.file_bytes += end - start
        if self.part_size > self.part_limit:
            if self.part_is_file:
                raise PayloadTooLarge(f"{self.part_name}: the file is larger than {self.part_limit:,} bytes")
            raise too_large(self.part_limit, f"form field {self.part_name[:64]!r}")

    def _end(self) -> None:
        self.ended = True


def malformed(why: str) -> InvalidParams:
    return InvalidParams(f"body: malformed multipart/form-data: {why}", code="invalid_multipart")


# ---- the middleware ----------------------------------------------------------------------------------


@dataclass
class _Exchange:
    """One request's state as it passes the edge."""

    dialect: Dialect
    request_id: str
    started: bool = False
    refusal: DomainError | None = None


class Edge:
    """The ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, *, dialects: Sequence[Dialect], limits: EdgeLimits,
                 authenticate: Authenticate) -> None:
        self.app = app
        self.dialects = tuple(dialects)
        self.limits = limits
        self.authenticate = authenticate

    def dialect_for(self, path: str) -> Dialect:
        return next((d for d in self.dialects if d.owns(path)), GENERIC)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict((k.lower(), v) for k, v in scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        ex = _Exchange(self.dialect_for(scope["path"]), rid)

        async def send_out(message: Message) -> None:
            if message["type"] == "http.response.start":
                ex.started = True
                MutableHeaders(scope=message).append("x-request-id", ex.request_id)
            await send(message)

        try:
            guard = self.guard(scope, headers, ex.dialect)
            if guard is not None and self.needs_key(scope, ex.dialect):
                await self.authenticate(Request(scope))
        except DomainError as e:
            await self.answer(scope, ex, e, send_out)
            return
        except Exception:
            await self.answer(scope, ex, server_error(Request(scope)), send_out)
            return
        await self.run(scope, receive, send_out, ex, guard)

    async def run(self, scope: Scope, receive: Receive, send_out: Send, ex: _Exchange,
                  guard: BodyGuard | None) -> None:
        async def receive_guarded() -> Message:
            if ex.refusal is not None:
                raise ex.refusal
            message = await receive()
            if guard is not None and message["type"] == "http.request":
                try:
                    guard.feed(message.get("body", b""))
                    if not message.get("more_body", False):
                        guard.end()
                except DomainError as e:
                    ex.refusal = e
                    raise
            return message

        async def send_unless_refused(message: Message) -> None:
            if ex.refusal is None:  # once the edge refused the body, its answer replaces the app's
                await send_out(message)

        try:
            await self.app(scope, receive_guarded, send_unless_refused)
        except Exception:
            if ex.refusal is None:
                if ex.started:
                    raise
                await self.answer(scope, ex, server_error(Request(scope)), send_out)
                return
        if ex.refusal is not None and not ex.started:
            await self.answer(scope, ex, ex.refusal, send_out)

    async def answer(self, scope: Scope, ex: _Exchange, err: DomainError, send_out: Send) -> None:
        response = respond(ex.dialect.render, Request(scope), err)

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send_out)

    def needs_key(self, scope: Scope, dialect: Dialect) -> bool:
        if dialect is GENERIC:
            return False  # no route outside the dialects reads a body
        upload = dialect.upload(scope["method"], scope["path"])
        return upload is None or not upload.keyless

    def guard(self, scope: Scope, headers: dict[bytes, bytes], dialect: Dialect) -> BodyGuard | None:
        """The guard for this request's body; None when it has none. Raises what the headers refuse."""
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            return None
        if length is not None and not (length.isdigit() and len(length) <= 18):
            raise InvalidParams("Content-Length is not a number", code="bad_request")
        if length is not None and int(length) == 0:
            return None
        guard = self.body_guard(scope, headers, dialect)
        if length is not None and int(length) > guard.limit:
            raise too_large(guard.limit)
        return guard

    def body_guard(self, scope: Scope, headers: dict[bytes, bytes], dialect: Dialect) -> BodyGuard:
        lim = self.limits
        upload = dialect.upload(scope["method"], scope["path"])
        if upload is not None and upload.raw:
            return SizeGuard(upload.max_bytes or lim.upload_bytes)
        if upload is not None and upload.json:  # base64 takes 4 bytes for every 3, plus a data-URL prefix
            return JsonGuard(lim.json_bytes + upload.files * (lim.upload_bytes * 4 // 3 + 64), lim.json_depth)
        ctype, options = parse_options_header(headers.get(b"content-type"))
        if upload is not None and ctype == b"multipart/form-data":
            boundary = options.get(b"boundary")
            if not boundary:
                raise malformed("the Content-Type has no boundary")
            return MultipartGuard(boundary, upload.files, lim)
        return JsonGuard(lim.json_bytes, lim.json_depth)


# ---- installing it -----------------------------------------------------------------------------------


def install(app: FastAPI, *, dialects: Sequence[Dialect], limits: EdgeLimits, authenticate: Authenticate) -> None:
    """Put the edge in front of `app`, and render the framework's errors in each path's dialect shape."""
    edge_dialects = tuple(dialects)

    def dialect_of(request: Request) -> Dialect:
        return next((d for d in edge_dialects if d.owns(request.url.path)), GENERIC)

    async def framework_error(request: Request, exc: Exception) -> Response:
        err = as_domain_error(exc, {})
        return respond(dialect_of(request).render, request, err if err is not None else server_error(request))

    for kind in (HTTPException, RequestValidationError, DomainError):
        app.add_exception_handler(kind, framework_error)
    app.add_middleware(Edge, dialects=edge_dialects, limits=limits, authenticate=authenticate)

"""OpenAI audio routes: transcriptions and translations (multipart upload), speech (binary).

The uploaded file is spooled once (memory up to 1 MiB, then a temporary file) while it is
counted against `max_audio_bytes`; each attempt streams it to the backend from there, so
retries and fallbacks work without holding the file twice. Text fields are counted while they
are read, the number of parts is capped, and encoded parts are refused (nothing is unpacked).
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import IO

import orjson
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from synapse import metrics
from synapse.api import relay
from synapse.api.context import Context
from synapse.api.protocol import reading_body
from synapse.backends import upstream
from synapse.errors import BadRequest, PayloadTooLarge
from synapse.http.client import SizedBody
from synapse.http.message import Request, StreamResponse
from synapse.routing.deployment import DeploymentState

SPOOL_IN_MEMORY = 1 << 20
FIELD_LIMIT = 64 * 1024
CHUNK = 64 * 1024
# OpenAI's transcription form has about a dozen fields (some repeated, like include[]).
MAX_PARTS = 64
_PLAIN_TRANSFER = frozenset({"", "binary", "8bit", "7bit"})
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # C0 but HTAB, and DEL (RFC 9110 5.5)


class Upload:
    """The multipart form of a transcription request, with its file spooled once."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115  closed by close()
        self.filename = "audio"
        self.content_type = "application/octet-stream"
        self.size = 0
        self.has_file = False

    def field(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)

    def form(self, backend_model: str) -> tuple[dict[str, str], SizedBody]:
        """Headers and a multipart body for one attempt; the file streams from the spool, from
        its start each time the body is opened (a resend on a fresh connection replays it)."""
        boundary = uuid.uuid4().hex
        head = bytearray()
        for name, value in self.fields:
            head += _part_head(boundary, name) + b"\r\n"
            head += (backend_model if name == "model" else value).encode() + b"\r\n"
        head += _part_head(boundary, "file", self.filename, self.content_type) + b"\r\n"
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        length = len(head) + self.size + len(tail)
        head_bytes = bytes(head)
        return headers, SizedBody(length, lambda: self._body(head_bytes, tail))

    async def _body(self, head: bytes, tail: bytes) -> AsyncIterator[bytes]:
        yield head
        self.file.seek(0)
        while chunk := self.file.read(CHUNK):
            yield chunk
        yield tail

    def close(self) -> None:
        self.file.close()


def _quote(value: str) -> str:
    """As browsers encode names in multipart/form-data (HTML's rule)."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _part_head(boundary: str, name: str, filename: str | None = None, ctype: str = "") -> bytes:
    disposition = f'form-data; name="{_quote(name)}"'
    if filename is not None:
        disposition += f'; filename="{_quote(filename)}"'
    lines = [f"--{boundary}", f"Content-Disposition: {disposition}"]
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    return ("\r\n".join(lines) + "\r\n").encode()


class _FormReader:
    """python-multipart's callbacks: each part checked, counted and stored as it arrives."""

    def __init__(self, upload: Upload, limit: int) -> None:
        self.upload = upload
        self.limit = limit
        self.parts = 0
        self.ended = False
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._name = ""
        self._kind: str | None = None  # "file", "field" or None (a part without a name)
        self._text = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._headers = {}
        self._kind = None

    def _header_end(self) -> None:
        """A part header, refused if its value holds a control character (the parser has
        checked the name): values are copied (name, filename, Content-Type) into the form
        rebuilt for the backend, where a bare LF would start a header of the caller's choosing."""
        if _CONTROL.search(self._value):
            raise BadRequest("a form part header holds a control character (only HTAB is allowed)")
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadRequest(f"multipart body has more than {MAX_PARTS} parts")
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            return
        _refuse_encoded(name, self._headers)
        self._name = name
        upload = self.upload
        if name == "file":
            self._kind = "file"
            upload.has_file = True
            filename = params.get(b"filename")
            if filename:
                upload.filename = filename.decode("utf-8", "replace")
            upload.content_type = self._headers.get("content-type", upload.content_type)
        else:
            self._kind = "field"
            self._text.clear()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "file":
            self.upload.size += end - start
            if self.upload.size > self.limit:
                raise PayloadTooLarge(
                    f"audio file exceeds the limit of {self.limit} bytes", param="file"
                )
            self.upload.file.write(data[start:end])
        elif self._kind == "field":
            self._text += data[start:end]
            if len(self._text) > FIELD_LIMIT:
                raise BadRequest(f"form field {self._name!r} is too long", param=self._name)

    def _part_end(self) -> None:
        if self._kind == "field":
            self.upload.fields.append((self._name, self._text.decode("utf-8", "replace")))
        self._kind = None

    def _end(self) -> None:
        self.ended = True


async def read_upload(request: Request, limit: int, timeout: float) -> Upload:
    ctype, params = parse_options_header(request.headers.get("Content-Type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadRequest("expected a multipart/form-data body with 'file' and 'model'")
    if request.content_length is not None and request.content_length > limit + FIELD_LIMIT:
        raise PayloadTooLarge(f"upload of {request.content_length} bytes exceeds {limit}")
    upload = Upload()
    reader = _FormReader(upload, limit)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        async with reading_body(timeout):
            while chunk := await request.body.chunk():
                parser.write(chunk)
        parser.finalize()
        if not reader.ended:
            raise BadRequest("malformed multipart body: it ends before its closing boundary")
    except FormParserError as exc:  # names the rule broken, quotes no bytes
        upload.close()
        raise BadRequest(f"malformed multipart body: {type(exc).__name__}") from None
    except BaseException:
        upload.close()
        raise
    if not upload.has_file:
        upload.close()
        raise BadRequest("'file' is required", param="file")
    if not upload.field("model"):
        upload.close()
        raise BadRequest("'model' is required", param="model")
    return upload


def _refuse_encoded(name: str, headers: dict[str, str]) -> None:
    """As for whole bodies: a compressed or base64 part is refused, never unpacked."""
    encoding = headers.get("content-encoding", "").strip().lower()
    transfer = headers.get("content-transfer-encoding", "").strip().lower()
    if encoding not in ("", "identity") or transfer not in _PLAIN_TRANSFER:
        raise BadRequest(
            f"form part {name!r}: encoded parts are not supported; send them as is",
            status=415,
            code="unsupported_content_encoding",
            param=name,
        )


async def transcriptions(request: Request) -> StreamResponse:
    return await _speech_to_text(request, "/audio/transcriptions")


async def translations(request: Request) -> StreamResponse:
    return await _speech_to_text(request, "/audio/translations")


async def _speech_to_text(request: Request, path: str) -> StreamResponse:
    ctx = Context.of(request)
    settings = ctx.settings
    upload = await read_upload(request, settings.max_audio_bytes, settings.body_read_timeout)
    try:
        group = ctx.resolve(upload.field("model"))
        metrics.AUDIO_BYTES.labels(group, "in", metrics.CONSUMER.get()).inc(upload.size)

        async def attempt(state: DeploymentState) -> upstream.Upstream:
            dep = state.deployment
            headers = upstream.backend_headers(state, ctx.trace.upstream_id())
            form_headers, body = upload.form(dep.backend_model)
            headers.update(form_headers)
            return await upstream.send(
                ctx.gateway.http,
                state,
                dep.openai_base + path,
                data=body,
                headers=headers,
                timeout=ctx.timeout(state, total=max(dep.timeout, settings.audio_timeout)),
                limit=settings.max_response_bytes,
            )

        up = await ctx.router.run(group, attempt, ctx.trace)
        return await relay.passthrough(up, ctx.trace)
    finally:
        upload.close()


async def speech(request: Request) -> StreamResponse:
    ctx = Context.of(request)
    body = await ctx.json()
    if not isinstance(body.get("input"), str) or not body["input"]:
        raise BadRequest("'input' is required and must be a non-empty string", param="input")
    group = ctx.resolve(body.get("model"))

    async def attempt(state: DeploymentState) -> upstream.Upstream:
        dep = state.deployment
        payload = orjson.dumps({**body, "model": dep.backend_model})
        return await ctx.send(state, dep.openai_base + "/audio/speech", payload, streaming=True)

    up = await ctx.router.run(group, attempt, ctx.trace)
    if up.status != 200:
        return await relay.passthrough(up, ctx.trace, 1 << 20)
    counter = metrics.AUDIO_BYTES.labels(group, "out", metrics.CONSUMER.get())
    return await relay.stream(
        request,
        up,
        ctx.trace,
        content_type=up.content_type,
        source=up.chunks(),
        done_marker=None,
        error_frame=None,
        on_chunk=lambda chunk: counter.inc(len(chunk)),
    )

"""OpenAI audio routes: transcriptions and translations (multipart upload), speech (binary).

The uploaded file is spooled once (memory up to 1 MiB, then a temporary file) while it is
counted against `max_audio_bytes`; each attempt streams it to the backend from there, so
retries and fallbacks work without holding the file twice. Text fields are counted while they
are read, the number of parts is capped, and encoded parts are refused (nothing is unpacked).
"""

from __future__ import annotations

import io
import tempfile
from typing import IO

import aiohttp
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from synapse import metrics
from synapse.api import relay
from synapse.api.context import Context
from synapse.api.protocol import reading_body
from synapse.backends import upstream
from synapse.errors import BadRequest, PayloadTooLarge
from synapse.routing.deployment import DeploymentState

SPOOL_IN_MEMORY = 1 << 20
FIELD_LIMIT = 64 * 1024
CHUNK = 64 * 1024
# OpenAI's transcription form has about a dozen fields (some repeated, like include[]).
MAX_PARTS = 64
_PLAIN_TRANSFER = frozenset({"", "binary", "8bit", "7bit"})


class _Borrowed(io.RawIOBase):
    """The spool lent to one attempt: aiohttp closes what it sends, the spool must survive."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__()
        self._file = file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


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

    def form(self, backend_model: str) -> aiohttp.FormData:
        """A fresh multipart body for one attempt; the file is streamed from the spool."""
        self.file.seek(0)
        form = aiohttp.FormData()
        for name, value in self.fields:
            form.add_field(name, backend_model if name == "model" else value)
        form.add_field(
            "file", _Borrowed(self.file), filename=self.filename, content_type=self.content_type
        )
        return form

    def close(self) -> None:
        self.file.close()


async def read_upload(request: web.Request, limit: int, timeout: float) -> Upload:
    if request.content_type != "multipart/form-data":
        raise BadRequest("expected a multipart/form-data body with 'file' and 'model'")
    if request.content_length is not None and request.content_length > limit + FIELD_LIMIT:
        raise PayloadTooLarge(f"upload of {request.content_length} bytes exceeds {limit}")
    upload = Upload()
    try:
        async with reading_body(timeout):
            await _read_parts(await request.multipart(), upload, limit)
    except (ValueError, AssertionError) as exc:  # aiohttp's multipart parser on bad framing
        upload.close()
        raise BadRequest(f"malformed multipart body: {exc}") from None
    except HttpProcessingError as exc:  # a part's headers; its message quotes the raw bytes
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


async def _read_parts(reader: aiohttp.MultipartReader, upload: Upload, limit: int) -> None:
    parts = 0
    async for part in reader:
        parts += 1
        if parts > MAX_PARTS:
            raise BadRequest(f"multipart body has more than {MAX_PARTS} parts")
        if not isinstance(part, aiohttp.BodyPartReader) or not part.name:
            continue
        _refuse_encoded(part)
        if part.name == "file":
            upload.has_file = True
            upload.filename = part.filename or upload.filename
            upload.content_type = part.headers.get("Content-Type", upload.content_type)
            while chunk := await part.read_chunk(CHUNK):
                upload.size += len(chunk)
                if upload.size > limit:
                    raise PayloadTooLarge(
                        f"audio file exceeds the limit of {limit} bytes", param="file"
                    )
                upload.file.write(chunk)
        else:
            value = bytearray()
            while chunk := await part.read_chunk(CHUNK):
                value += chunk
                if len(value) > FIELD_LIMIT:
                    raise BadRequest(f"form field {part.name!r} is too long", param=part.name)
            upload.fields.append((part.name, value.decode("utf-8", "replace")))


def _refuse_encoded(part: aiohttp.BodyPartReader) -> None:
    """As for whole bodies: a compressed or base64 part is refused, never unpacked."""
    encoding = part.headers.get("Content-Encoding", "").strip().lower()
    transfer = part.headers.get("Content-Transfer-Encoding", "").strip().lower()
    if encoding not in ("", "identity") or transfer not in _PLAIN_TRANSFER:
        raise BadRequest(
            f"form part {part.name!r}: encoded parts are not supported; send them as is",
            status=415,
            code="unsupported_content_encoding",
            param=part.name,
        )


async def transcriptions(request: web.Request) -> web.StreamResponse:
    return await _speech_to_text(request, "/audio/transcriptions")


async def translations(request: web.Request) -> web.StreamResponse:
    return await _speech_to_text(request, "/audio/translations")


async def _speech_to_text(request: web.Request, path: str) -> web.StreamResponse:
    ctx = Context.of(request)
    settings = ctx.settings
    upload = await read_upload(request, settings.max_audio_bytes, settings.body_read_timeout)
    try:
        group = ctx.resolve(upload.field("model"))
        metrics.AUDIO_BYTES.labels(group, "in", metrics.CONSUMER.get()).inc(upload.size)

        async def attempt(state: DeploymentState) -> upstream.Upstream:
            dep = state.deployment
            headers = upstream.backend_headers(state, ctx.trace.upstream_id())
            del headers["Content-Type"]  # FormData sets the multipart boundary
            return await upstream.send(
                ctx.gateway.http,
                state,
                dep.openai_base + path,
                data=upload.form(dep.backend_model),
                headers=headers,
                timeout=ctx.timeout(state, total=max(dep.timeout, settings.audio_timeout)),
                limit=settings.max_response_bytes,
            )

        up = await ctx.router.run(group, attempt, ctx.trace)
        return await relay.passthrough(up, ctx.trace)
    finally:
        upload.close()


async def speech(request: web.Request) -> web.StreamResponse:
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

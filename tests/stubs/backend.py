"""A small backend that speaks OpenAI's or Ollama's wire protocol, for tests and benchmarks.

Run: python -m tests.stubs.backend --kind openai|ollama --port P
Shapes follow the public API references (OpenAI: chat.completion, chat.completion.chunk SSE
ending in `data: [DONE]`, embeddings list; Ollama: /api/embed, /api/embeddings, NDJSON chat
and generate with a final `done: true` line). Behaviour is switched at run time through
`POST /_control {"mode": ...}` so a test can break a backend the way real ones break:

  ok          normal answers
  error500    every inference call answers 500
  hang        accept the request, never answer
  cut_stream  streams send two chunks, then the process drops the connection
  cut_body    inference calls answer 200 with a Content-Length, send half of it, then drop
              the connection (a process dying mid-answer)
  slow        answer after `delay` seconds
  busy        answer 429
  fail_once   answer 503 once, then behave as ok
  error400    answer 400 (a client error: never retried)
  error400_empty  answer 400 with an empty body (as llama.cpp's server can)

Hostile modes (a backend that is broken or malicious, for the gateway's bounds):

  gzip        non-streamed answers are a gzip body that unpacks to `gzip_mib` MiB
  endless     SSE streams never end (64 KiB deltas), until the reader goes away
  bad_frames  SSE streams carry a frame of the wrong shape (`data: [1, 2]`)
  long_line   Ollama NDJSON streams end with a final line carrying a `context` array of
              `context_len` numbers (legal: real Ollama sends this, often over 512 KiB)
  huge_tags   GET /api/tags streams an endless model list (counted in `tags_bytes`)

`done_delay` (seconds) holds an SSE stream open after `data: [DONE]`, as a server may
before it ends the chunked body.

Health checks (`GET /` for Ollama, `GET /health` for OpenAI) are counted in `health_calls`
and answered after `health_delay` seconds (a busy server slow to answer anything).

Embedding calls are logged in `embed_calls` (path, item count, `dimensions`, `truncate`), so a
test can see how requests were batched; `embed_delay` (seconds) holds each embedding call
before it answers (also in the error modes, to keep a call in flight), and `reject_text`
makes a call whose input holds that text answer 400, as Ollama does for an input longer than
the model's context with `truncate: false`. `dimensions` truncates the vectors.
`embed_text_delay` (seconds) is added per text after the first (an engine that embeds a batch
more slowly per text than single calls); `embed_scale` multiplies the OpenAI route's vectors (an
engine that does not normalize).

`/_stats` also reports `max_active`, the most requests handled at once (connections in use),
and `order`, the X-Request-ID of the last 1,000 inference calls in arrival order (reset:
`order: []`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hashlib
import math
import struct
import time
import zlib
from array import array

import orjson
from aiohttp import web

STATE: dict[str, object] = {
    "mode": "ok",
    "delay": 0.0,
    "calls": 0,
    "audio_bytes": 0,
    "active": 0,
    "max_active": 0,
    "embed_calls": [],
    "embed_delay": 0.0,
    "embed_text_delay": 0.0,
    "embed_scale": 1.0,
    "reject_text": None,
}
WORDS = ["Hello", " from", " the", " stub", " backend", "."]
DIM = 8


def vector(text: str) -> list[float]:
    """Deterministic unit vector from the text (same text → same vector)."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [b - 128 for b in digest[:DIM]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


async def behave(request: web.Request) -> web.StreamResponse | None:
    STATE["calls"] = int(STATE["calls"]) + 1  # type: ignore[call-overload]
    mode = STATE["mode"]
    STATE["last_request_id"] = request.headers.get("X-Request-ID")
    order = STATE.setdefault("order", [])
    order.append(STATE["last_request_id"])  # type: ignore[union-attr]
    del order[:-1000]  # type: ignore[index]  # bounded: benchmarks send many thousands
    if mode == "error500":
        return web.json_response(
            {"error": {"message": "stub failure", "type": "server_error"}}, status=500
        )
    if mode == "fail_once":
        STATE["mode"] = "ok"
        return web.json_response({"error": {"message": "transient"}}, status=503)
    if mode == "error400_empty":
        return web.Response(status=400)
    if mode == "error400":
        return web.json_response(
            {
                "error": {
                    "message": "stub rejects this request",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            status=400,
        )
    if mode == "busy":
        return web.json_response({"error": {"message": "busy"}}, status=429)
    if mode == "gzip":
        return web.Response(
            body=gzip_bomb(int(STATE.get("gzip_mib", 256))),  # type: ignore[call-overload]
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
    if mode == "cut_body":
        part = b'{"id": "chatcmpl-cut", "object": "chat.completion", "choices": ['
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 2 * len(part)
        await response.prepare(request)
        await response.write(part)
        request.transport.close()  # type: ignore[union-attr]
        return response
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "slow":
        await asyncio.sleep(float(STATE["delay"]))  # type: ignore[arg-type]
    return None


async def embedding_call(request: web.Request, texts: list, body: dict) -> web.Response | None:
    """Log the call, then answer as `behave` says, or 400 for a rejected text."""
    calls = STATE["embed_calls"]
    assert isinstance(calls, list)
    calls.append(
        {
            "path": request.path,
            "items": len(texts),
            "texts": texts,
            "dimensions": body.get("dimensions"),
            "truncate": body.get("truncate"),
        }
    )
    extra = float(STATE["embed_text_delay"]) * max(len(texts) - 1, 0)  # type: ignore[arg-type]
    await asyncio.sleep(float(STATE["embed_delay"]) + extra)  # type: ignore[arg-type]
    if (answer := await behave(request)) is not None:
        return answer
    if STATE["reject_text"] is not None and STATE["reject_text"] in texts:
        if request.path.startswith("/api/"):
            return json({"error": "the input length exceeds the context length"}, status=400)
        return json(
            {"error": {"message": "input too long", "type": "invalid_request_error"}}, status=400
        )
    return None


def embedding(text: str, body: dict) -> list[float]:
    dimensions = body.get("dimensions")
    return vector(text)[:dimensions] if isinstance(dimensions, int) else vector(text)


@functools.cache
def gzip_bomb(mib: int) -> bytes:
    """A valid gzip of a JSON chat answer padded to `mib` MiB (about 1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(b'{"object": "chat.completion", "padding": "')]
    block = b"a" * (1 << 20)
    parts += [packer.compress(block) for _ in range(mib)]
    parts.append(packer.compress(b'", "choices": []}') + packer.flush())
    return b"".join(parts)


@web.middleware
async def count_active(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if request.path.startswith("/_"):
        return await handler(request)
    STATE["active"] = int(STATE["active"]) + 1  # type: ignore[call-overload]
    STATE["max_active"] = max(int(STATE["max_active"]), int(STATE["active"]))  # type: ignore[call-overload]
    try:
        return await handler(request)
    finally:
        STATE["active"] = int(STATE["active"]) - 1  # type: ignore[call-overload]


def json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


# -- control ---------------------------------------------------------------------------------


async def control(request: web.Request) -> web.Response:
    STATE.update(await request.json())
    return json(STATE)


async def stats(request: web.Request) -> web.Response:
    return json(STATE)


# -- OpenAI ----------------------------------------------------------------------------------


async def health_check() -> None:
    STATE["health_calls"] = int(STATE.get("health_calls", 0)) + 1  # type: ignore[call-overload]
    await asyncio.sleep(float(STATE.get("health_delay", 0.0)))  # type: ignore[arg-type]


async def openai_health(request: web.Request) -> web.Response:
    await health_check()
    return web.Response(text="")


async def openai_models(request: web.Request) -> web.Response:
    return json(
        {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "stub",
                    "root": name,
                    "max_model_len": 4096,  # vLLM's extension
                }
                for name in str(STATE.get("served", "stub-model")).split(",")
            ],
        }
    )


def _completion_text(body: dict) -> str:
    messages = body.get("messages") or []
    last = messages[-1].get("content", "") if messages else body.get("prompt", "")
    return f"{''.join(WORDS)} You said: {last}"


async def openai_chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not isinstance(body.get("messages"), list):
        return json(
            {
                "error": {
                    "message": "messages is required",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": None,
                }
            },
            status=400,
        )
    STATE["last_chat_body"] = body
    if (refusal := _check_tool_messages(body["messages"])) is not None:
        return refusal
    if (answer := await behave(request)) is not None:
        return answer
    created = int(time.time())
    cid = "chatcmpl-stub"
    if body.get("stream"):
        return await _sse(request, body, cid, created)
    text = _completion_text(body)
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        text = '{"answer": "stub"}'
    message: dict[str, object] = {"role": "assistant", "content": text}
    finish = "stop"
    if calls := _tool_calls(body):
        message, finish = {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    if _thinks(body):
        message["reasoning_content"] = THOUGHT
    return json(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": 7,
                "completion_tokens": len(WORDS),
                "total_tokens": 7 + len(WORDS),
            },
        }
    )


THOUGHT = "The stub considers the question."


def _thinks(body: dict) -> bool:
    """vLLM with a reasoning parser: the template's switch turns reasoning output on."""
    return bool((body.get("chat_template_kwargs") or {}).get("enable_thinking"))


def _tool_calls(body: dict) -> list[dict]:
    """With tools offered and no tool result yet, call each offered function once
    (parallel calls), with "stub" for every required string argument."""
    messages = body.get("messages") or []
    if not body.get("tools") or body.get("tool_choice") == "none":
        return []
    if messages and messages[-1].get("role") == "tool":
        return []
    calls = []
    for n, tool in enumerate(body["tools"][: int(STATE.get("parallel_calls", 1))]):  # type: ignore[call-overload]
        fn = tool.get("function") or {}
        required = (fn.get("parameters") or {}).get("required") or []
        calls.append(
            {
                "id": f"call_stub{n}",
                "type": "function",
                "function": {
                    "name": fn.get("name"),
                    "arguments": orjson.dumps(dict.fromkeys(required, "stub")).decode(),
                },
            }
        )
    return calls


def _check_tool_messages(messages: list) -> web.Response | None:
    """OpenAI's rule (strict backends enforce it): each tool message answers, by
    `tool_call_id`, a call of the assistant message before it."""
    open_ids: set[str] = set()
    for m in messages:
        if not isinstance(m, dict):
            continue
        if m.get("role") == "assistant":
            open_ids = {c.get("id") for c in m.get("tool_calls") or ()}
        elif m.get("role") == "tool":
            if m.get("tool_call_id") not in open_ids:
                return json(
                    {
                        "error": {
                            "message": "Invalid parameter: messages with role 'tool' must be "
                            "a response to a preceeding message with 'tool_calls'.",
                            "type": "invalid_request_error",
                            "param": "messages",
                            "code": None,
                        }
                    },
                    status=400,
                )
            open_ids.discard(m["tool_call_id"])
    return None


async def _sse(request: web.Request, body: dict, cid: str, created: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        data = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body["model"],
            "choices": []
            if usage
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage:
            data["usage"] = usage
        return b"data: " + orjson.dumps(data) + b"\n\n"

    await response.write(chunk({"role": "assistant", "content": ""}))
    if STATE["mode"] == "bad_frames":
        await response.write(b"data: [1, 2]\n\n")
    if STATE["mode"] == "endless":
        try:
            while True:
                await response.write(chunk({"content": "x" * 65536}))
        except ConnectionError:
            STATE["disconnects"] = int(STATE.get("disconnects", 0)) + 1  # type: ignore[call-overload]
            return response
    if _thinks(body):
        await response.write(chunk({"reasoning_content": THOUGHT}))
    if calls := _tool_calls(body):
        for n, call in enumerate(calls):  # as vLLM and OpenAI stream them: head, then arguments
            head = {**call, "index": n, "function": {**call["function"], "arguments": ""}}
            await response.write(chunk({"tool_calls": [head]}))
            args = call["function"]["arguments"]
            await response.write(
                chunk({"tool_calls": [{"index": n, "function": {"arguments": args}}]})
            )
        await response.write(chunk({}, "tool_calls"))
        await _sse_end(response, body, chunk)
        return response
    words = WORDS
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        words = ['{"answer":', ' "stub"}']
    for i, word in enumerate(words):
        if STATE["mode"] == "cut_stream" and i == 2:
            request.transport.close()  # type: ignore[union-attr]  # the process "dies"
            return response
        try:
            await response.write(chunk({"content": word}))
        except ConnectionError:  # the gateway dropped us: its client went away
            STATE["disconnects"] = int(STATE.get("disconnects", 0)) + 1  # type: ignore[call-overload]
            return response
        await asyncio.sleep(float(STATE.get("chunk_delay", 0.0)))  # type: ignore[arg-type]
    await response.write(chunk({}, "stop"))
    await _sse_end(response, body, chunk)
    return response


async def _sse_end(response: web.StreamResponse, body: dict, chunk) -> None:  # type: ignore[no-untyped-def]
    """Usage only when asked for (`stream_options.include_usage`) and not switched off
    (`omit_usage`: a server that never reports it), then the terminator."""
    wanted = (body.get("stream_options") or {}).get("include_usage")
    if wanted and not STATE.get("omit_usage"):
        await response.write(
            chunk(
                {},
                usage={
                    "prompt_tokens": 7,
                    "completion_tokens": len(WORDS),
                    "total_tokens": 7 + len(WORDS),
                },
            )
        )
    await response.write(b"data: [DONE]\n\n")
    await asyncio.sleep(float(STATE.get("done_delay", 0.0)))  # type: ignore[arg-type]
    await response.write_eof()


async def openai_completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if (answer := await behave(request)) is not None:
        return answer
    return json(
        {
            "id": "cmpl-stub",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "text": _completion_text(body),
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9},
        }
    )


async def openai_embeddings(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if (answer := await embedding_call(request, texts, body)) is not None:
        return answer
    data = []
    for i, text in enumerate(texts):
        vec = [x * float(STATE["embed_scale"]) for x in embedding(str(text), body)]  # type: ignore[arg-type]
        emb: object = vec
        if body.get("encoding_format") == "base64":
            emb = base64.b64encode(array("f", vec).tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return json(
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
        }
    )


async def openai_transcription(request: web.Request) -> web.StreamResponse:
    reader = await request.multipart()
    fields: dict[str, str] = {}
    digest, size = hashlib.sha256(), 0
    async for part in reader:
        if part.name == "file":
            while chunk := await part.read_chunk(65536):
                digest.update(chunk)
                size += len(chunk)
        else:
            fields[part.name or ""] = (await part.read()).decode()
    STATE["audio_bytes"] = size
    if (answer := await behave(request)) is not None:
        return answer
    text = f"{size} bytes sha256 {digest.hexdigest()} model {fields.get('model')}"
    if request.path.endswith("translations"):
        text = "translated: " + text
    if fields.get("response_format") == "text":
        return web.Response(text=text)
    return json(
        {"text": text, **({"language": fields["language"]} if "language" in fields else {})}
    )


async def openai_speech(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if (answer := await behave(request)) is not None:
        return answer
    payload = speech_bytes(body["input"])
    response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
    await response.prepare(request)
    for i in range(0, len(payload), 4096):
        await response.write(payload[i : i + 4096])
    await response.write_eof()
    return response


def speech_bytes(text: str) -> bytes:
    """A valid WAV whose samples are derived from the text, so tests can compare bytes."""
    samples = (hashlib.sha256(text.encode()).digest() * 700)[:16000]
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + len(samples))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data"
        + struct.pack("<I", len(samples))
    )
    return header + samples


# -- OpenAI Responses API (as vLLM and OpenAI serve it) --------------------------------------


def _response_input_text(body: dict) -> str:
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _response_object(body: dict, status: str, output: list[dict]) -> dict:
    usage = None
    if status == "completed":
        usage = {
            "input_tokens": 7,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(WORDS),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 7 + len(WORDS),
        }
    return {
        "id": "resp_stub",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": body.get("temperature"),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }


async def openai_responses(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    STATE["last_responses_body"] = body
    if (answer := await behave(request)) is not None:
        return answer
    text = f"{''.join(WORDS)} You said: {_response_input_text(body)}"
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    item = {
        "id": "msg_stub",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    if not body.get("stream"):
        return json(_response_object(body, "completed", [item]))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    seq = 0

    async def event(kind: str, **fields: object) -> None:
        nonlocal seq
        data = orjson.dumps({"type": kind, "sequence_number": seq, **fields})
        seq += 1
        await response.write(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")

    ref = {"item_id": "msg_stub", "output_index": 0, "content_index": 0}
    started = _response_object(body, "in_progress", [])
    await event("response.created", response=started)
    await event("response.in_progress", response=started)
    await event(
        "response.output_item.added",
        output_index=0,
        item={**item, "status": "in_progress", "content": []},
    )
    await event("response.content_part.added", **ref, part={**part, "text": ""})
    for i, word in enumerate(WORDS):
        if STATE["mode"] == "cut_stream" and i == 2:
            request.transport.close()  # type: ignore[union-attr]
            return response
        await event("response.output_text.delta", **ref, delta=word, logprobs=[])
    await event("response.output_text.delta", **ref, delta=text[len("".join(WORDS)) :], logprobs=[])
    await event("response.output_text.done", **ref, text=text, logprobs=[])
    await event("response.content_part.done", **ref, part=part)
    await event("response.output_item.done", output_index=0, item=item)
    if STATE.get("responses_unfinished"):  # ends cleanly, but without its final event
        await response.write_eof()
        return response
    await event("response.completed", response=_response_object(body, "completed", [item]))
    await response.write_eof()
    return response


# -- Ollama ----------------------------------------------------------------------------------


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


async def ollama_root(request: web.Request) -> web.Response:
    await health_check()
    return web.Response(text="Ollama is running")


async def ollama_tags(request: web.Request) -> web.StreamResponse:
    if STATE["mode"] == "huge_tags":
        return await _huge_tags(request)
    names = str(STATE.get("models", "mxbai-embed-large:latest,llama3.1:8b")).split(",")
    return json(
        {
            "models": [
                {
                    "name": n,
                    "model": n,
                    "modified_at": now(),
                    "size": 669615493,
                    "digest": hashlib.sha256(n.encode()).hexdigest(),
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "bert",
                        "families": ["bert"],
                        "parameter_size": "334M",
                        "quantization_level": "F16",
                    },
                }
                for n in names
                if n
            ]
        }
    )


def _loaded() -> dict[str, dict]:
    return STATE.setdefault("loaded", {})  # type: ignore[return-value]


def _touch(body: dict) -> str | None:
    """Ollama loads a model on use and unloads it on `keep_alive: 0`; None, or the
    done_reason of a load/unload request (one with nothing to generate)."""
    model = body.get("model", "")
    if body.get("keep_alive") in (0, "0", "0s", "0m"):
        _loaded().pop(model, None)
        return "unload"
    _loaded()[model] = {"name": model, "model": model, "size": 5137025024, "size_vram": 0}
    return None


async def ollama_ps(request: web.Request) -> web.Response:
    expires = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(time.time() + 300))
    models = [
        {
            **m,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B"},
            "expires_at": expires,
            "context_length": 4096,
        }
        for name, m in _loaded().items()
    ]
    return json({"models": models})


async def _huge_tags(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    entry = orjson.dumps({"name": "x" * 1000, "model": "x", "size": 1}) + b","
    block = entry * 1024
    STATE["tags_bytes"] = 0
    try:
        await response.write(b'{"models": [')
        while True:
            await response.write(block)
            STATE["tags_bytes"] = int(STATE["tags_bytes"]) + len(block)  # type: ignore[call-overload]
    except ConnectionError:
        return response


async def ollama_embed(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    raw = body.get("input")
    texts = [] if raw in (None, "") else raw if isinstance(raw, list) else [raw]
    if (answer := await embedding_call(request, texts, body)) is not None:
        return answer
    _touch(body)
    if not texts:  # Ollama's load convention
        return json({"model": body["model"], "embeddings": []})
    return json(
        {
            "model": body["model"],
            "embeddings": [embedding(t, body) for t in texts],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": len(texts),
        }
    )


async def ollama_embeddings(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if (answer := await embedding_call(request, [body["prompt"]], body)) is not None:
        return answer
    return json({"embedding": legacy_vector(body["prompt"])})


def legacy_vector(text: str) -> list[float]:
    """The deprecated endpoint's vectors are not normalized (/api/embed's are), as in Ollama."""
    return [3 * x for x in vector(text)]


async def ollama_chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if (answer := await behave(request)) is not None:
        return answer
    generate = request.path.endswith("generate")
    key = "response" if generate else "message"

    def part(text: str) -> object:
        return text if generate else {"role": "assistant", "content": text}

    unloaded = _touch(body)
    if not (body.get("prompt") if generate else body.get("messages")):
        STATE["load_requests"] = int(STATE.get("load_requests", 0)) + 1  # type: ignore[call-overload]
        return json(
            {
                "model": body["model"],
                "created_at": now(),
                key: part(""),
                "done_reason": unloaded or "load",
                "done": True,
            }
        )

    final = {
        "done_reason": "stop",
        "done": True,
        "total_duration": 4883583458,
        "load_duration": 1334875,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 342546000,
        "eval_count": len(WORDS),
        "eval_duration": 4535599000,
    }
    if body.get("stream", True) is False:
        return json(
            {"model": body["model"], "created_at": now(), key: part("".join(WORDS)), **final}
        )
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for i, word in enumerate(WORDS):
        if STATE["mode"] == "cut_stream" and i == 2:
            request.transport.close()  # type: ignore[union-attr]
            return response
        await response.write(
            orjson.dumps(
                {"model": body["model"], "created_at": now(), key: part(word), "done": False}
            )
            + b"\n"
        )
    if STATE["mode"] == "long_line":
        final["context"] = list(range(int(STATE.get("context_len", 200_000))))  # type: ignore[call-overload]
    await response.write(
        orjson.dumps({"model": body["model"], "created_at": now(), key: part(""), **final}) + b"\n"
    )
    await response.write_eof()
    return response


async def ollama_show(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    return json(
        {
            "modelfile": f"FROM {body.get('model')}",
            "parameters": "",
            "template": "",
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "8.0B",
                "quantization_level": "Q4_0",
            },
            "model_info": {"general.architecture": "llama"},
            "capabilities": ["completion"],
        }
    )


async def ollama_pull(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    total = 1000
    lines = [{"status": "pulling manifest"}]
    lines += [
        {"status": "pulling abc", "digest": "sha256:abc", "total": total, "completed": c}
        for c in (0, 500, 1000)
    ]
    lines += [
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    STATE["pulled"] = body.get("model")
    for line in lines:
        await response.write(orjson.dumps(line) + b"\n")
    await response.write_eof()
    return response


def build(kind: str) -> web.Application:
    app = web.Application(client_max_size=1 << 30, middlewares=[count_active])
    app.router.add_post("/_control", control)
    app.router.add_get("/_stats", stats)
    if kind == "openai":
        app.router.add_get("/health", openai_health)
        app.router.add_get("/v1/models", openai_models)
        app.router.add_post("/v1/chat/completions", openai_chat)
        app.router.add_post("/v1/completions", openai_completions)
        app.router.add_post("/v1/embeddings", openai_embeddings)
        app.router.add_post("/v1/responses", openai_responses)
        app.router.add_post("/v1/audio/transcriptions", openai_transcription)
        app.router.add_post("/v1/audio/translations", openai_transcription)
        app.router.add_post("/v1/audio/speech", openai_speech)
    else:
        app.router.add_get("/", ollama_root)
        app.router.add_get("/api/tags", ollama_tags)
        app.router.add_get("/api/ps", ollama_ps)
        app.router.add_post("/api/embed", ollama_embed)
        app.router.add_post("/api/embeddings", ollama_embeddings)
        app.router.add_post("/api/chat", ollama_chat)
        app.router.add_post("/api/generate", ollama_chat)
        app.router.add_post("/api/show", ollama_show)
        app.router.add_post("/api/pull", ollama_pull)
        app.router.add_post("/v1/chat/completions", openai_chat)  # Ollama's OpenAI layer
        app.router.add_post("/v1/completions", openai_completions)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("openai", "ollama"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    web.run_app(build(args.kind), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()

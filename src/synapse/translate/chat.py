"""Ollama `/api/chat` and `/api/generate` onto an OpenAI-compatible backend, and back.

Ollama reports durations in nanoseconds; an OpenAI backend reports none, so they are
measured at the gateway: prompt_eval_duration = time to the first token, eval_duration =
the rest. Counts come from the backend's usage.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson

from synapse.errors import BadRequest

FINISH = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop"}


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _options(body: dict, provider: str) -> dict[str, object]:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise BadRequest("'options' must be an object", param="options")
    out: dict[str, object] = {}
    for key in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "stop"):
        if options.get(key) is not None:
            out[key] = options[key]
    if isinstance(options.get("num_predict"), int) and options["num_predict"] > 0:
        out["max_tokens"] = options["num_predict"]
    if provider == "hosted_vllm":  # vLLM's sampling extensions; OpenAI's API has none
        if options.get("top_k") is not None:
            out["top_k"] = options["top_k"]
        if options.get("min_p") is not None:
            out["min_p"] = options["min_p"]
        if options.get("repeat_penalty") is not None:
            out["repetition_penalty"] = options["repeat_penalty"]
    out.update(_think(body.get("think"), provider))
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": fmt},
        }
    elif fmt not in (None, ""):
        raise BadRequest("'format' must be \"json\" or a JSON schema object", param="format")
    return out


def _think(think: object, provider: str) -> dict[str, object]:
    """Ollama's `think` as the backend's reasoning switch.

    vLLM: the chat template's `enable_thinking` (Qwen3, DeepSeek-R1 style templates) and,
    for a level, `reasoning_effort`; OpenAI: `reasoning_effort` for a level. The reasoning
    comes back as `thinking` (from `reasoning_content` / `reasoning`).
    """
    if think is None:
        return {}
    if not isinstance(think, bool) and think not in ("low", "medium", "high"):
        raise BadRequest('\'think\' must be true, false, "low", "medium" or "high"')
    out: dict[str, object] = {}
    if provider == "hosted_vllm":
        out["chat_template_kwargs"] = {"enable_thinking": think is not False}
    if isinstance(think, str):
        out["reasoning_effort"] = think
    return out


@dataclass(slots=True)
class _Call:
    openai: dict
    answered: bool = False


class _Unanswered:
    """The tool calls of the last assistant turn that no tool result has claimed yet.

    Indexed by id and by function name, each in call order: a result finds its call in O(1)
    (claimed calls are dropped from the front of a queue once, when next met), so a long tool
    history costs time linear in its length.
    """

    def __init__(self) -> None:
        self.new_turn()

    def new_turn(self) -> None:
        """An assistant message with tool calls: earlier calls can no longer be answered."""
        self.calls: deque[_Call] = deque()
        self.by_id: dict[str, deque[_Call]] = defaultdict(deque)
        self.by_name: dict[str | None, deque[_Call]] = defaultdict(deque)

    def add(self, openai_call: dict) -> None:
        call = _Call(openai_call)
        self.calls.append(call)
        self.by_id[openai_call["id"]].append(call)
        self.by_name[openai_call["function"]["name"]].append(call)

    def claim(self, call_id: str | None, name: str | None) -> dict | None:
        """The earliest call with this id, else with this function name, else the earliest."""
        call = _first(self.by_id.get(call_id)) if call_id else None
        call = call or _first(self.by_name.get(name) if name else self.calls)
        if call is None:
            return None
        call.answered = True
        return call.openai


def _first(queue: deque[_Call] | None) -> _Call | None:
    while queue and queue[0].answered:
        queue.popleft()
    return queue[0] if queue else None


def _text_field(value: object, where: str) -> str | None:
    """An id or name the client may leave out; when present it must be a string."""
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"{where} must be a string", param="messages")


def _message(i: int, message: object, deployment: str, pending: _Unanswered) -> dict[str, object]:
    """One Ollama message as OpenAI's; `pending`: tool calls not yet answered.

    Tool-call ids are kept both ways: Ollama's own `id` / `tool_call_id` when the client sent
    them, otherwise a tool result is matched to the earliest unanswered call of its name
    (or, without a name, the earliest unanswered call).
    """
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise BadRequest(f"messages[{i}] must be an object with a 'role'", param="messages")
    if message.get("images"):
        raise BadRequest(
            f"messages[{i}].images: {deployment} is an OpenAI-compatible text backend and "
            "cannot take Ollama images",
            param="messages",
        )
    out: dict[str, object] = {"role": message["role"], "content": message.get("content") or ""}
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        pending.new_turn()
        out["tool_calls"] = [_tool_call(i, n, call, pending) for n, call in enumerate(calls)]
    if message["role"] == "tool":
        call_id = _text_field(message.get("tool_call_id"), f"messages[{i}].tool_call_id")
        name = message.get("tool_name") or message.get("name")
        match = pending.claim(call_id, _text_field(name, f"messages[{i}].tool_name"))
        if match is not None:  # the call's id as the backend saw it (maybe one we made up)
            call_id = match["id"]
        if call_id:
            out["tool_call_id"] = call_id
    if message.get("tool_name"):
        out["name"] = message["tool_name"]
    return out


def _tool_call(i: int, n: int, call: object, pending: _Unanswered) -> dict[str, object]:
    """An Ollama tool call as OpenAI's, with an id made up when the client sent none."""
    where = f"messages[{i}].tool_calls[{n}]"
    call = call if isinstance(call, dict) else {}
    fn = call.get("function") or {}
    if not isinstance(fn, dict):
        raise BadRequest(f"{where}.function must be an object", param="messages")
    openai_call = {
        "id": _text_field(call.get("id"), f"{where}.id") or f"call_{i}_{n}",
        "type": "function",
        "function": {
            "name": _text_field(fn.get("name"), f"{where}.function.name"),
            "arguments": orjson.dumps(fn.get("arguments", {})).decode(),
        },
    }
    pending.add(openai_call)
    return openai_call


def chat_request(body: dict, backend_model: str, provider: str, deployment: str) -> dict:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be an array", param="messages")
    pending = _Unanswered()
    request: dict[str, object] = {
        "model": backend_model,
        "messages": [_message(i, m, deployment, pending) for i, m in enumerate(messages)],
        **_options(body, provider),
    }
    if body.get("tools"):
        request["tools"] = body["tools"]
    return _streaming(request, body)


def generate_request(
    body: dict, backend_model: str, provider: str, deployment: str
) -> tuple[str, dict]:
    """(OpenAI path, request). `raw` prompts go to /completions, others through the chat template."""
    if body.get("images"):
        raise BadRequest(
            f"images: {deployment} is an OpenAI-compatible text backend and "
            "cannot take Ollama images",
            param="images",
        )
    if body.get("suffix"):
        raise BadRequest(
            f"suffix: fill-in-the-middle is not available on {deployment}", param="suffix"
        )
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string", param="prompt")
    options = _options(body, provider)
    if body.get("raw"):
        return "/completions", _streaming(
            {"model": backend_model, "prompt": prompt, **options}, body
        )
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    messages.append({"role": "user", "content": prompt})
    return "/chat/completions", _streaming(
        {"model": backend_model, "messages": messages, **options}, body
    )


def _streaming(request: dict, body: dict) -> dict:
    if body.get("stream", True):
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request


@dataclass
class Timing:
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None

    def mark(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def durations(self) -> dict[str, int]:
        end = time.perf_counter()
        first = self.first_token or end
        return {
            "total_duration": int((end - self.started) * 1e9),
            "load_duration": 0,
            "prompt_eval_duration": int((first - self.started) * 1e9),
            "eval_duration": int((end - first) * 1e9),
        }


def _tool_calls(calls: list[dict]) -> list[dict]:
    """OpenAI tool calls as Ollama's, keeping the backend's call id for the tool result."""
    out = []
    for index, call in enumerate(calls):
        fn = call.get("function") or {}
        args = fn.get("arguments") or "{}"
        try:
            parsed = orjson.loads(args) if isinstance(args, str) else args
        except orjson.JSONDecodeError:
            parsed = {"_raw": args}
        ollama_call: dict[str, object] = {
            "function": {"index": index, "name": fn.get("name"), "arguments": parsed}
        }
        if call.get("id"):
            ollama_call["id"] = call["id"]
        out.append(ollama_call)
    return out


def final_fields(usage: dict | None, finish: str | None, timing: Timing) -> dict[str, object]:
    """The last object's fields. Token counts only when the backend reported them: a
    missing count is left out rather than reported as 0."""
    out: dict[str, object] = {
        "done_reason": FINISH.get(finish or "stop", "stop"),
        "done": True,
        **timing.durations(),
    }
    usage = usage or {}
    if isinstance(usage.get("prompt_tokens"), int):
        out["prompt_eval_count"] = usage["prompt_tokens"]
    if isinstance(usage.get("completion_tokens"), int):
        out["eval_count"] = usage["completion_tokens"]
    return out


def chat_response(answer: dict, model: str, timing: Timing, *, generate: bool) -> dict:
    """A non-streamed OpenAI answer as Ollama's chat (or generate) answer."""
    choice = (answer.get("choices") or [{}])[0]
    thinking = ""
    if generate and "text" in choice:
        text = choice.get("text") or ""
        tool_calls: list[dict] = []
    else:
        message = choice.get("message") or {}
        text = message.get("content") or ""
        tool_calls = message.get("tool_calls") or []
        thinking = _reasoning(message)
    timing.mark()
    out = _part(model, text, generate, tool_calls, thinking)
    out.update(final_fields(answer.get("usage"), choice.get("finish_reason"), timing))
    return out


def _reasoning(message: dict) -> str:
    """Reasoning text as vLLM sends it (`reasoning_content`, newer versions `reasoning`)."""
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else ""


def _part(
    model: str,
    text: str,
    generate: bool,
    tool_calls: list[dict] | None = None,
    thinking: str = "",
) -> dict:
    """One Ollama answer object: `response` for generate, an assistant `message` for chat."""
    out: dict[str, object] = {"model": model, "created_at": now_iso()}
    if generate:
        out["response"] = text
        if thinking:
            out["thinking"] = thinking
    else:
        message: dict[str, object] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = _tool_calls(tool_calls)
        out["message"] = message
    return out


def too_long(limit: int) -> str:
    return f"the answer held for translation exceeds {limit} characters (max_response_bytes)"


async def sse_chunks(lines: AsyncIterator[bytes]) -> AsyncIterator[dict | None]:
    """The JSON chunks of an OpenAI SSE stream, then None for `data: [DONE]`.

    Nothing follows the last chunk of a stream cut before `[DONE]`, so a translator that emits
    its final frame only on None leaves the stream visibly incomplete. An error chunk raises.
    """
    async for raw in lines:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            yield None
            return
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError(f"a frame of unexpected shape: {data[:80]!r}")
        if chunk.get("error"):
            err = chunk["error"]
            raise ValueError(err.get("message") if isinstance(err, dict) else str(err))
        yield chunk


async def sse_to_ndjson(
    lines: AsyncIterator[bytes], model: str, timing: Timing, *, generate: bool, limit: int
) -> AsyncIterator[bytes]:
    """Re-frame an OpenAI SSE stream as Ollama NDJSON; the last line has `done: true`.

    Stops without the final line if the SSE stream ends before `data: [DONE]`, so the
    relay reports the stream as broken. Tool-call arguments are held until that line: more
    than `limit` characters of them break the stream too.
    """
    usage: dict | None = None
    finish: str | None = None
    calls: dict[int, dict] = {}
    arguments: dict[int, list[str]] = {}  # a call's argument fragments, joined once at the end
    held = 0
    async for chunk in sse_chunks(lines):
        if chunk is None:
            for k, parts in arguments.items():
                calls[k]["function"]["arguments"] = "".join(parts)
            final = _part(model, "", generate, [calls[k] for k in sorted(calls)])
            final.update(final_fields(usage, finish, timing))
            yield orjson.dumps(final) + b"\n"
            return
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            finish = choice.get("finish_reason") or finish
            thinking = ""
            if generate and "text" in choice:
                text = choice.get("text") or ""
            else:
                delta = choice.get("delta") or {}
                text = delta.get("content") or ""
                thinking = _reasoning(delta)
                for call in delta.get("tool_calls") or ():
                    index = call.get("index", 0)
                    slot = calls.setdefault(index, {"function": {"name": None, "arguments": ""}})
                    if call.get("id"):
                        slot["id"] = call["id"]
                    fn = call.get("function") or {}
                    if fn.get("name"):
                        slot["function"]["name"] = fn["name"]
                    piece = fn.get("arguments") or ""
                    held += len(piece)
                    if held > limit:
                        raise ValueError(too_long(limit))
                    arguments.setdefault(index, []).append(piece)
            if text or thinking:
                timing.mark()
                part = _part(model, text, generate, thinking=thinking)
                yield orjson.dumps({**part, "done": False}) + b"\n"

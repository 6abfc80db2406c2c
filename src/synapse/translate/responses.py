"""OpenAI's Responses API onto chat completions, for backends that do not serve `/responses`.

Covers text and multi-part input, instructions, multi-turn items (messages, function calls
and their outputs, references to items Synapse issued: synapse.translate.itemids), function
tools, structured output (`text.format`), usage and the streaming event sequence
(response.created … response.completed). Conversation state is not kept:
`previous_response_id` is refused before routing (see `refuse_stateful`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson

from synapse.errors import BadRequest
from synapse.translate import itemids
from synapse.translate.chat import sse_chunks, too_long

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def refuse_stateful(body: dict) -> None:
    """Synapse stores no responses: a chained request would silently lose its history."""
    for key in ("previous_response_id", "conversation"):
        if body.get(key):
            raise BadRequest(
                f"'{key}' is not supported: Synapse does not store responses. Send the "
                "earlier turns in 'input' (the output items of the previous response, or "
                "item_reference items naming them, followed by the new input), or set "
                "'store' to false so the client does so",
                param=key,
            )
    if body.get("background"):
        raise BadRequest("'background' responses are not supported", param="background")


# -- request -----------------------------------------------------------------------------------


def _text(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for n, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in TEXT_PARTS:
                raise BadRequest(f"{where}[{n}]: only text parts are accepted here", param="input")
            texts.append(str(part.get("text") or part.get("refusal") or ""))
        return "".join(texts)
    raise BadRequest(f"{where} must be a string or an array of content parts", param="input")


def _content(content: object, where: str) -> str | list[dict]:
    """A message's content for chat: text stays text, images become image_url parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where} must be a string or an array of content parts", param="input")
    if not any(isinstance(p, dict) and p.get("type") == "input_image" for p in content):
        return _text(content, where)
    parts: list[dict] = []
    for n, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") == "input_image":
            if not isinstance(part.get("image_url"), str):
                raise BadRequest(f"{where}[{n}]: only images given by 'image_url'", param="input")
            image = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": _text([part], where)})
    return parts


def _messages(body: dict, key: bytes) -> list[dict]:
    messages: list[dict] = []
    instructions = body.get("instructions")
    if instructions:
        messages.append({"role": "system", "content": _text(instructions, "instructions")})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadRequest("'input' must be a string or a non-empty array of items", param="input")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object", param="input")
        kind = item.get("type", "message")
        if kind == "item_reference":
            item = itemids.resolve(item.get("id"), key, where)
            kind = item["type"]
        if kind == "message":
            role = ROLES.get(item.get("role"))  # type: ignore[arg-type]
            if role is None:
                raise BadRequest(f"{where}.role must be one of {', '.join(ROLES)}", param="input")
            messages.append({"role": role, "content": _content(item.get("content"), where)})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id") or item.get("id") or new_id("call"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not item.get("call_id"):
                raise BadRequest(f"{where}.call_id is required", param="input")
            output = item.get("output")
            text = output if isinstance(output, str) else _text(output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            continue  # a previous turn's reasoning: chat completions takes none back
        else:
            raise BadRequest(
                f"{where}: items of type {kind!r} are not supported by this deployment; it "
                "takes message, function_call, function_call_output, reasoning and "
                "item_reference items (other item types belong to OpenAI's hosted tools)",
                param="input",
            )
    return messages


def with_own_items(body: dict, key: bytes) -> dict:
    """The request for a backend that serves `/responses` itself: references to items this
    deployment issued (on a translated deployment, e.g. a fallback) become the items, which
    that backend could not resolve; everything else stays as the client sent it."""
    items = body.get("input")
    if not isinstance(items, list):
        return body
    resolved = [itemids.carried(item["id"], key) if _is_reference(item) else None for item in items]
    if not any(resolved):
        return body
    return {**body, "input": [new or old for new, old in zip(resolved, items, strict=True)]}


def _is_reference(item: object) -> bool:
    return (
        isinstance(item, dict)
        and item.get("type") == "item_reference"
        and isinstance(item.get("id"), str)
    )


def _tools(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise BadRequest(
                f"tools[{i}]: only function tools are available on this deployment, not {kind!r}",
                param="tools",
            )
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: object) -> object:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(text: object) -> dict | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise BadRequest(f"text.format.type {fmt['type']!r} is not supported", param="text")


def chat_request(body: dict, backend_model: str, key: bytes) -> dict:
    """The chat completions request that does what a Responses `create` asks; `key` checks
    the ids of referenced items (itemids.item_key)."""
    request: dict[str, object] = {"model": backend_model, "messages": _messages(body, key)}
    if body.get("tools"):
        request["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            request["tool_choice"] = _tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is not None:
            request["parallel_tool_calls"] = body["parallel_tool_calls"]
    for key in ("temperature", "top_p", "user", "seed"):
        if body.get(key) is not None:
            request[key] = body[key]
    if body.get("max_output_tokens") is not None:
        request["max_tokens"] = body["max_output_tokens"]
    if (fmt := _response_format(body.get("text"))) is not None:
        request["response_format"] = fmt
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        request["reasoning_effort"] = effort
    if body.get("stream") is True:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request


# -- answer ------------------------------------------------------------------------------------


def usage(chat_usage: dict | None) -> dict | None:
    if not chat_usage:
        return None
    details = chat_usage.get("completion_tokens_details") or {}
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": chat_usage.get("prompt_tokens", 0),
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": chat_usage.get("completion_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": details.get("reasoning_tokens") or 0},
        "total_tokens": chat_usage.get("total_tokens", 0),
    }


def envelope(body: dict, response_id: str, created: int) -> dict:
    """The response object around the output: echoes what the request asked for."""
    tools = body.get("tools") or []
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": False,
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _finish(response: dict, finish: str | None, chat_usage: dict | None) -> dict:
    if finish == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"
    response["usage"] = usage(chat_usage)
    return response


def _message_item(item_id: str, text: str, status: str) -> dict:
    content = [] if status == "in_progress" else [_text_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def from_chat(answer: dict, body: dict, key: bytes) -> dict:
    """A non-streamed chat completion as a Responses API response object; its items' ids
    carry the items (itemids), signed with `key`."""
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    response = envelope(body, new_id("resp"), int(answer.get("created") or time.time()))
    output: list[dict] = []
    if message.get("content"):
        text = message["content"]
        output.append(_message_item(itemids.carrying_id("msg", [text], key), text, "completed"))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        fields = [call.get("id") or new_id("call"), fn.get("name") or "", fn.get("arguments") or ""]
        output.append(_call_item(itemids.carrying_id("fc", fields, key), *fields, "completed"))
    response["output"] = output
    return _finish(response, choice.get("finish_reason"), answer.get("usage"))


@dataclass
class _Item:
    index: int
    item_id: str
    parts: list[str] = field(default_factory=list)  # joined once at the end: linear
    call_id: str = ""
    name: str = ""

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class StreamState:
    """Builds the Responses event sequence from chat completion chunks."""

    body: dict
    limit: int  # characters of text and arguments held for the final events
    response: dict = field(init=False)
    sequence: int = 0
    message: _Item | None = None
    calls: dict[int, _Item] = field(default_factory=dict)
    next_index: int = 0
    held: int = 0

    def __post_init__(self) -> None:
        self.response = envelope(self.body, new_id("resp"), int(time.time()))

    def event(self, kind: str, **fields: object) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def start(self) -> list[bytes]:
        return [
            self.event("response.created", response=self.response),
            self.event("response.in_progress", response=self.response),
        ]

    def _hold(self, item: _Item, piece: str) -> None:
        self.held += len(piece)
        if self.held > self.limit:
            raise ValueError(too_long(self.limit))
        item.parts.append(piece)

    def _new_index(self) -> int:
        self.next_index += 1
        return self.next_index - 1

    def text(self, delta: str) -> list[bytes]:
        events = []
        if self.message is None:
            self.message = _Item(self._new_index(), itemids.bare_id("msg"))
            item = _message_item(self.message.item_id, "", "in_progress")
            events += [
                self.event(
                    "response.output_item.added", output_index=self.message.index, item=item
                ),
                self.event(
                    "response.content_part.added",
                    item_id=self.message.item_id,
                    output_index=self.message.index,
                    content_index=0,
                    part=_text_part(""),
                ),
            ]
        self._hold(self.message, delta)
        events.append(
            self.event(
                "response.output_text.delta",
                item_id=self.message.item_id,
                output_index=self.message.index,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return events

    def call(self, chunk_call: dict) -> list[bytes]:
        events = []
        fn = chunk_call.get("function") or {}
        slot = self.calls.get(chunk_call.get("index", 0))
        if slot is None:
            slot = _Item(
                self._new_index(),
                itemids.bare_id("fc"),
                call_id=chunk_call.get("id") or new_id("call"),
                name=fn.get("name") or "",
            )
            self.calls[chunk_call.get("index", 0)] = slot
            item = _call_item(slot.item_id, slot.call_id, slot.name, "", "in_progress")
            events.append(
                self.event("response.output_item.added", output_index=slot.index, item=item)
            )
        if fn.get("arguments"):
            self._hold(slot, fn["arguments"])
            events.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=slot.item_id,
                    output_index=slot.index,
                    delta=fn["arguments"],
                )
            )
        return events

    def finish(self, finish: str | None, chat_usage: dict | None) -> list[bytes]:
        events = []
        done: list[tuple[int, dict]] = []
        if self.message is not None:
            m = self.message
            text = m.text
            events += [
                self.event(
                    "response.output_text.done",
                    item_id=m.item_id,
                    output_index=m.index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                ),
                self.event(
                    "response.content_part.done",
                    item_id=m.item_id,
                    output_index=m.index,
                    content_index=0,
                    part=_text_part(text),
                ),
            ]
            item = _message_item(m.item_id, text, "completed")
            events.append(self.event("response.output_item.done", output_index=m.index, item=item))
            done.append((m.index, item))
        for slot in self.calls.values():
            arguments = slot.text
            events.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=slot.item_id,
                    output_index=slot.index,
                    name=slot.name,
                    arguments=arguments,
                )
            )
            item = _call_item(slot.item_id, slot.call_id, slot.name, arguments, "completed")
            events.append(
                self.event("response.output_item.done", output_index=slot.index, item=item)
            )
            done.append((slot.index, item))
        self.response["output"] = [item for _, item in sorted(done, key=lambda d: d[0])]
        _finish(self.response, finish, chat_usage)
        completed = self.response["status"] == "completed"
        kind = "response.completed" if completed else "response.incomplete"
        events.append(self.event(kind, response=self.response))
        return events


async def sse_to_events(
    lines: AsyncIterator[bytes], body: dict, limit: int
) -> AsyncIterator[bytes]:
    """Chat completion SSE → Responses API SSE events.

    Ends without `response.completed` if the chat stream ends before `data: [DONE]`, so the
    relay reports the stream as broken.
    """
    state = StreamState(body, limit)
    for event in state.start():
        yield event
    finish: str | None = None
    chat_usage: dict | None = None
    async for chunk in sse_chunks(lines):
        if chunk is None:
            for event in state.finish(finish, chat_usage):
                yield event
            return
        chat_usage = chunk.get("usage") or chat_usage
        for choice in chunk.get("choices") or ():
            finish = choice.get("finish_reason") or finish
            delta = choice.get("delta") or {}
            if delta.get("content"):
                for event in state.text(delta["content"]):
                    yield event
            for call in delta.get("tool_calls") or ():
                for event in state.call(call):
                    yield event


TERMINAL_EVENTS = (b"response.completed", b"response.incomplete", b"response.failed")


async def checked_events(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A backend's own Responses stream, line by line; ValueError if it ends unfinished.

    The terminal event carries the whole response (often far more than the relay's tail
    window), so the end is recognised by its event name, not by a marker in the last bytes.
    """
    finished = False
    async for line in lines:
        head = line[:80].replace(b" ", b"")
        if any(
            head.startswith(b"event:" + kind) or b'"type":"' + kind + b'"' in head
            for kind in TERMINAL_EVENTS
        ):
            finished = True
        yield line
    if not finished:
        raise ValueError("the backend closed the stream before its final response event")

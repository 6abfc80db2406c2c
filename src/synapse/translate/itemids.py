"""Responses item ids that carry their item, so an `item_reference` resolves on any replica.

Synapse stores no responses and runs as several replicas. The ids of the items it issues in
non-streamed translated responses (assistant messages and function calls) hold the item:
`msg_s…` / `fc_s…`, then base64url of a 16-byte HMAC-SHA256 tag and the zlib-compressed
item. Any replica sharing the key rebuilds the item from the id alone; a changed or foreign
id fails the tag. An item whose id would exceed `MAX_ID_CHARS`, and every streamed item
(its id is announced before its content exists), gets a bare id (`msg_x…`, `fc_x…`), and a
reference to it is refused with a 400 that names the alternatives. Backends that serve the
Responses API themselves get this deployment's carrying ids replaced by their items (they
could not resolve them) and every other reference as sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import zlib
from functools import lru_cache

import orjson

from synapse.errors import BadRequest

# The longest id issued or read: ~12 KiB of compressed item, about 30 KB of English text.
MAX_ID_CHARS = 16384
_MAX_ITEM_JSON = 40 * 1024  # never compressed or inflated beyond this (~5 ms of zlib)
_TAG_BYTES = 16
CARRIED, BARE = "s", "x"  # never hex digits, so never the start of a random id
_KINDS = {"msg": "message", "fc": "function_call"}
_ARITY = {"message": 2, "function_call": 4}  # the kind, then its fields
# Without a master key every Synapse shares this public secret: the tag then catches
# corrupted ids and those of keyed deployments, not forgeries (which give a caller nothing
# it could not send as an item itself).
KEYLESS_SECRET = "synapse keyless deployment"
_NO_STORE = (
    "Synapse stores no responses: send the item itself in 'input', or set 'store' to false "
    "so the client sends items instead of references (Vercel AI SDK: "
    "providerOptions.openai.store = false)"
)


@lru_cache(maxsize=4)
def item_key(master_key: str | None) -> bytes:
    """The tag key, derived from the master key every replica shares (rotating it voids ids)."""
    secret = (master_key or KEYLESS_SECRET).encode()
    return hmac.new(secret, b"synapse responses item ids v1", hashlib.sha256).digest()


def bare_id(prefix: str) -> str:
    return f"{prefix}_{BARE}{os.urandom(16).hex()}"


def carrying_id(prefix: str, fields: list[str], key: bytes) -> str:
    """An id holding `fields` (message: [text]; function call: [call_id, name, arguments]),
    or a bare id when they would not fit."""
    raw = orjson.dumps([_KINDS[prefix], *fields])
    if len(raw) > _MAX_ITEM_JSON:
        return bare_id(prefix)
    packed = zlib.compress(raw)
    tag = hmac.new(key, prefix.encode() + packed, hashlib.sha256).digest()[:_TAG_BYTES]
    item_id = f"{prefix}_{CARRIED}" + base64.urlsafe_b64encode(tag + packed).decode().rstrip("=")
    return item_id if len(item_id) <= MAX_ID_CHARS else bare_id(prefix)


def resolve(item_id: object, key: bytes, where: str) -> dict:
    """The input item an `item_reference` stands for; a 400 saying why when there is none."""
    if not isinstance(item_id, str) or not item_id:
        raise BadRequest(f"{where}.id must be a non-empty string", param="input")
    shown = item_id if len(item_id) <= 48 else item_id[:40] + "…"
    prefix, _, rest = item_id.partition("_")
    if prefix in _KINDS and rest.startswith(BARE):
        raise BadRequest(
            f"{where}: item {shown!r} does not carry its content (it was streamed, so its id "
            f"was issued before its content existed, or its id would have exceeded "
            f"{MAX_ID_CHARS} characters). {_NO_STORE}",
            param="input",
        )
    item = carried(item_id, key)
    if item is None:
        raise BadRequest(
            f"{where}: item {shown!r} was not issued by this Synapse deployment, or was "
            f"changed (Synapse resolves only the ids of items it issued itself, checked with "
            f"its key). {_NO_STORE}",
            param="input",
        )
    return item


def carried(item_id: str, key: bytes) -> dict | None:
    """The input item a carrying id of this deployment holds, else None."""
    prefix, _, rest = item_id.partition("_")
    fields = _unpack(prefix, rest, key) if len(item_id) <= MAX_ID_CHARS else None
    if fields is None:
        return None
    if fields[0] == "message":
        return {"type": "message", "role": "assistant", "content": fields[1]}
    return {
        "type": "function_call",
        "call_id": fields[1],
        "name": fields[2],
        "arguments": fields[3],
    }


def _unpack(prefix: str, rest: str, key: bytes) -> list | None:
    """The fields of a carrying id whose tag checks out, else None."""
    if prefix not in _KINDS or not rest.startswith(CARRIED):
        return None
    body = rest[1:]
    try:
        blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None
    tag, packed = blob[:_TAG_BYTES], blob[_TAG_BYTES:]
    expected = hmac.new(key, prefix.encode() + packed, hashlib.sha256).digest()[:_TAG_BYTES]
    if not hmac.compare_digest(tag, expected):
        return None
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(packed, _MAX_ITEM_JSON)
        fields = orjson.loads(raw) if inflate.eof and not inflate.unconsumed_tail else None
    except (zlib.error, orjson.JSONDecodeError):
        return None
    if (
        not isinstance(fields, list)
        or not fields
        or fields[0] != _KINDS[prefix]
        or len(fields) != _ARITY[fields[0]]
        or not all(isinstance(f, str) for f in fields)
    ):
        return None
    return fields

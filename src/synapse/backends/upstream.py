"""HTTP to backends over one pooled keep-alive client session.

A request either yields an open `Upstream` response (the caller owns it) or raises
`Retryable`, which the router turns into a retry, a fallback or an error.

Every read from a backend is bounded (`synapse_settings.max_response_bytes`), in bytes as
they arrive: backends are asked for `Accept-Encoding: identity` and an encoded answer is
refused, so no compressed answer can unpack past the limit (backends sit on the cluster
network, where compression buys nothing and decompression bombs cost the whole pod).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.connector import Connection

if TYPE_CHECKING:
    from synapse.routing.deployment import DeploymentState

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
LIMIT_SETTING = "synapse_settings.max_response_bytes"
# Connections per backend beyond the deployments' max_parallel_requests: health checks,
# /api/tags and requests still finishing on a slot released a moment ago.
CONNECTION_HEADROOM = 16
# After a stream's end marker: how long, and how many bytes, until the backend's answer ends.
DRAIN_TIMEOUT = 5.0
DRAIN_LIMIT = 64 * 1024
_DRAINING: set[asyncio.Task[None]] = set()  # referenced until done


class Retryable(Exception):
    """A failure before the response started: safe to try another deployment."""

    def __init__(self, kind: str, deployment: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{deployment}: {reason}")
        self.kind = kind  # "connect", "timeout", "status"
        self.reason = reason  # names no internal address: shown on the keyless listener
        self.message = f"{deployment}: {reason}"
        self.status = status


class ResponseTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer exceeds {LIMIT_SETTING} ({limit} bytes)")
        self.limit = limit


def reason(exc: BaseException) -> str:
    """Why a backend could not be reached, in words that name no internal address."""
    if isinstance(exc, TimeoutError):
        return "no answer within its timeout"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
            return "connection refused"
        return f"cannot connect ({os_error.strerror or type(os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by the backend"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"network error ({exc.strerror or type(exc).__name__})"
    return type(exc).__name__


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes (no unbounded buffers)."""
    length = response.content_length
    if length is not None and length > limit:
        raise ResponseTooLarge(limit)
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def split_lines(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Complete lines (SSE and NDJSON framing) of any length up to `limit` bytes.

    aiohttp's own line reader stops at 128 KiB; an Ollama final line carrying a `context`
    array is legally longer.
    """
    pending = bytearray()
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if pending:
                pending += chunk[start : end + 1]
                yield bytes(pending)
                pending.clear()
            else:
                yield chunk[start : end + 1]
            start = end + 1
        pending += chunk[start:]
        if len(pending) > limit:
            raise ResponseTooLarge(limit)
    if pending:
        yield bytes(pending)


class Upstream:
    """An open backend response plus the deployment slot it holds, released together."""

    __slots__ = ("_released", "limit", "response", "state")

    def __init__(
        self, response: aiohttp.ClientResponse, state: DeploymentState, limit: int
    ) -> None:
        self.response = response
        self.state = state
        self.limit = limit
        self._released = False

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def content_type(self) -> str:
        return self.response.headers.get("Content-Type", "application/json")

    async def read(self, limit: int | None = None) -> bytes:
        return await read_bounded(self.response, min(limit or self.limit, self.limit))

    def chunks(self) -> AsyncIterator[bytes]:
        return self.response.content.iter_any()

    def lines(self) -> AsyncIterator[bytes]:
        return split_lines(self.response.content.iter_any(), self.limit)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.response.release()
            self.state.release()

    def finish(self) -> None:
        """Release once the rest of the answer (after its end marker) has arrived.

        The client's handler returns at once; the connection goes back to the pool when the
        backend's last bytes come in, or is dropped if they do not come soon.
        """
        if self._released:
            return
        if self.response.content.at_eof():
            self.release()
            return
        task = asyncio.get_running_loop().create_task(self._drain())
        _DRAINING.add(task)
        task.add_done_callback(_DRAINING.discard)

    async def _drain(self) -> None:
        extra = 0
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                async for chunk in self.response.content.iter_any():
                    extra += len(chunk)
                    if extra > DRAIN_LIMIT:
                        break
        except (aiohttp.ClientError, TimeoutError):
            pass
        if self.response.content.at_eof():
            self.release()
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection (client gone or stream broken): the backend sees it and stops."""
        if not self._released:
            self.response.close()
            self.release()


class _Response(aiohttp.ClientResponse):
    """A response whose connection is never reused after an error answer.

    A backend that answers an error before reading the request body can leave that body
    unread on a keep-alive connection, to be parsed as the next request (whoever sends it
    gets a 501 with an HTML page). Errors are rare and a reconnect is cheap, so after any
    error answer the connection is closed instead of going back to the pool.
    """

    async def start(self, connection: Connection) -> _Response:
        protocol = connection.protocol
        await super().start(connection)
        if self.status >= 400 and protocol is not None:
            protocol.force_close()  # closed, not pooled, when released
            if self.connection is None:  # a short answer was read whole and already pooled
                protocol.close()  # the pool drops closing connections
        return self


def new_session(connect_timeout: float, per_backend: int) -> aiohttp.ClientSession:
    """One pool for all backends, at most `per_backend` connections to each host:port."""
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=per_backend, ttl_dns_cache=30, keepalive_timeout=60
    )
    return aiohttp.ClientSession(
        connector=connector,
        response_class=_Response,
        cookie_jar=aiohttp.DummyCookieJar(),  # backends set no cookies worth keeping
        timeout=aiohttp.ClientTimeout(sock_connect=connect_timeout),
        auto_decompress=False,  # answers are asked for, and checked to be, identity-encoded
        headers={"Accept-Encoding": "identity"},
        skip_auto_headers=("User-Agent", "Accept"),  # less per-request work
    )


def connections_per_backend(parallel: Iterable[tuple[str, int | None]], floor: int) -> int:
    """The per-host connection cap: `floor`, raised to above the declared parallelism.

    `parallel` is (host:port, max_parallel_requests) per deployment. Deployments sharing a
    host add up; the headroom keeps health checks and /api/tags from queueing behind
    requests that use every slot.
    """
    per_host: dict[str, int] = {}
    for host, limit in parallel:
        if limit is not None:
            per_host[host] = per_host.get(host, 0) + limit
    return max([floor, *(n + CONNECTION_HEADROOM for n in per_host.values())])


def encoding_refused(response: aiohttp.ClientResponse) -> str | None:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    return f"sent a {encoding}-encoded answer though asked for identity"


async def send(
    session: aiohttp.ClientSession,
    state: DeploymentState,
    url: str,
    *,
    data: Any,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
    limit: int,
    method: str = "POST",
) -> Upstream:
    """Open a request to a backend; on success the caller owns the returned Upstream."""
    dep = state.deployment
    try:
        response = await session.request(method, url, data=data, headers=headers, timeout=timeout)
    except TimeoutError as exc:
        raise Retryable("timeout", dep.id, reason(exc)) from None
    except aiohttp.ClientConnectionError as exc:
        raise Retryable("connect", dep.id, reason(exc)) from None
    if (refused := encoding_refused(response)) is not None:
        response.close()
        raise Retryable("status", dep.id, refused)
    if response.status in RETRYABLE_STATUS:
        try:
            detail = (await response.content.read(512)).decode("utf-8", "replace").strip()
        except (aiohttp.ClientError, TimeoutError):
            detail = ""
        finally:
            response.close()
        status = response.status
        raise Retryable("status", dep.id, f"answered {status}: {detail}", status=status)
    return Upstream(response, state, limit)


def backend_headers(state: DeploymentState, request_id: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
    if state.deployment.api_key:
        headers["Authorization"] = f"Bearer {state.deployment.api_key}"
    return headers

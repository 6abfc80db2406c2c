"""HTTP to backends over one pool of keep-alive connections (`synapse.http.client`).

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
import socket
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING

from synapse.http.client import (
    BodyTooLarge,
    ClientError,
    ConnectError,
    InvalidResponse,
    Pool,
    Response,
    ServerDisconnected,
    SizedBody,
    Timeout,
)

if TYPE_CHECKING:
    from synapse.routing.deployment import DeploymentState

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
LIMIT_SETTING = "synapse_settings.max_response_bytes"
# Connections per backend beyond the deployments' max_parallel_requests: requests still
# finishing on a slot released a moment ago (health checks and model lists have their own).
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
    if isinstance(exc, ConnectError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            return "host name not found"
        if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
            return "connection refused"
        return f"cannot connect ({os_error.strerror or type(os_error).__name__})"
    if isinstance(exc, ServerDisconnected):
        return "connection closed by the backend"
    if isinstance(exc, InvalidResponse):
        return "invalid HTTP answer"
    if isinstance(exc, OSError):
        return f"network error ({exc.strerror or type(exc).__name__})"
    return type(exc).__name__


async def read_bounded(response: Response, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes (no unbounded buffers)."""
    try:
        return await response.read(limit)
    except BodyTooLarge:
        raise ResponseTooLarge(limit) from None


async def split_lines(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Complete lines (SSE and NDJSON framing) of any length up to `limit` bytes.

    Line readers of HTTP libraries stop early (aiohttp's at 128 KiB); an Ollama final line
    carrying a `context` array is legally longer.
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

    def __init__(self, response: Response, state: DeploymentState, limit: int) -> None:
        self.response = response
        self.state = state
        self.limit = limit
        self._released = False

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def content_type(self) -> str:
        return self.response.headers.get("Content-Type") or "application/json"

    async def read(self, limit: int | None = None) -> bytes:
        return await read_bounded(self.response, min(limit or self.limit, self.limit))

    def chunks(self) -> AsyncIterator[bytes]:
        return self.response.chunks()

    def lines(self) -> AsyncIterator[bytes]:
        return split_lines(self.response.chunks(), self.limit)

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
        if self.response.at_eof():
            self.release()
            return
        task = asyncio.get_running_loop().create_task(self._drain())
        _DRAINING.add(task)
        task.add_done_callback(_DRAINING.discard)

    async def _drain(self) -> None:
        extra = 0
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                async for chunk in self.response.chunks():
                    extra += len(chunk)
                    if extra > DRAIN_LIMIT:
                        break
        except (ClientError, TimeoutError):
            pass
        if self.response.at_eof():
            self.release()
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection (client gone or stream broken): the backend sees it and stops."""
        if not self._released:
            self.response.close()
            self.release()


def new_pool(connect_timeout: float, per_backend: int) -> Pool:
    """One pool for all backends, at most `per_backend` connections to each host:port.

    Answers with a status of 400 or more never leave their connection in the pool: a
    backend that answers an error before reading the request body can leave that body
    unread, to be parsed as the next request.
    """
    return Pool(per_host=per_backend, connect_timeout=connect_timeout)


def connections_per_backend(parallel: Iterable[tuple[str, int | None]], floor: int) -> int:
    """The per-host connection cap: `floor`, raised to above the declared parallelism.

    `parallel` is (host:port, max_parallel_requests) per deployment. Deployments sharing a
    host add up; the headroom covers connections still finishing after their slot is freed.
    """
    per_host: dict[str, int] = {}
    for host, limit in parallel:
        if limit is not None:
            per_host[host] = per_host.get(host, 0) + limit
    return max([floor, *(n + CONNECTION_HEADROOM for n in per_host.values())])


def encoding_refused(response: Response) -> str | None:
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    return f"sent a {encoding}-encoded answer though asked for identity"


def _identity(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's headers, asking for an identity-encoded answer (see the module's doc)."""
    return {**(headers or {}), "Accept-Encoding": "identity"}


async def send(
    pool: Pool,
    state: DeploymentState,
    url: str,
    *,
    data: bytes | AsyncIterable[bytes] | SizedBody,
    headers: Mapping[str, str],
    timeout: Timeout,
    limit: int,
    method: str = "POST",
) -> Upstream:
    """Open a request to a backend; on success the caller owns the returned Upstream."""
    dep = state.deployment
    try:
        response = await pool.request(
            method, url, headers=_identity(headers), body=data, timeout=timeout
        )
    except TimeoutError as exc:
        raise Retryable("timeout", dep.id, reason(exc)) from None
    except InvalidResponse as exc:
        raise Retryable("status", dep.id, reason(exc)) from None
    except ClientError as exc:
        raise Retryable("connect", dep.id, reason(exc)) from None
    if (refused := encoding_refused(response)) is not None:
        response.close()
        raise Retryable("status", dep.id, refused)
    if response.status in RETRYABLE_STATUS:
        try:
            detail = (await response.read_some(512)).decode("utf-8", "replace").strip()
        except (ClientError, TimeoutError):
            detail = ""
        finally:
            response.close()
        status = response.status
        raise Retryable("status", dep.id, f"answered {status}: {detail}", status=status)
    return Upstream(response, state, limit)


async def fetch(
    pool: Pool,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    limit: int,
    method: str = "GET",
) -> tuple[int, bytes]:
    """A small exchange (model lists, health probes): status and body of at most `limit` bytes.

    Raises ClientError (an encoded answer is an InvalidResponse), TimeoutError or
    ResponseTooLarge.
    """
    response = await pool.request(
        method,
        url,
        headers=_identity(headers),
        body=None,
        timeout=Timeout(total=timeout, connect=pool.connect_timeout),
    )
    try:
        if (refused := encoding_refused(response)) is not None:
            raise InvalidResponse(refused)
        body = await read_bounded(response, limit)
    finally:
        response.release()
    return response.status, body


def backend_headers(state: DeploymentState, request_id: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
    if state.deployment.api_key:
        headers["Authorization"] = f"Bearer {state.deployment.api_key}"
    return headers

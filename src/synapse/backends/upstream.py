"""HTTP to backends over one pooled keep-alive client session.

A request either yields an open `Upstream` response (status < 500 and not 429: the caller
owns it) or raises `Retryable`, which the router turns into a retry, a fallback or an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from synapse.routing.deployment import DeploymentState

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class Retryable(Exception):
    """A failure before the response started: safe to try another deployment."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # "connect", "timeout", "status"
        self.message = message
        self.status = status


class ResponseTooLarge(Exception):
    pass


class Upstream:
    """An open backend response plus the deployment slot it holds, released together."""

    __slots__ = ("_released", "response", "state")

    def __init__(self, response: aiohttp.ClientResponse, state: DeploymentState) -> None:
        self.response = response
        self.state = state
        self._released = False

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def content_type(self) -> str:
        return self.response.headers.get("Content-Type", "application/json")

    async def read(self, limit: int) -> bytes:
        """The whole body, refusing more than `limit` bytes (no unbounded buffers)."""
        length = self.response.content_length
        if length is not None and length > limit:
            raise ResponseTooLarge(f"backend answer of {length} bytes exceeds {limit}")
        if length is not None:
            return await self.response.read()
        chunks, size = [], 0
        async for chunk in self.response.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(f"backend answer exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def chunks(self) -> AsyncIterator[bytes]:
        return self.response.content.iter_any()

    def lines(self) -> AsyncIterator[bytes]:
        """Complete lines (SSE and NDJSON framing); aiohttp bounds each line's length."""
        return self.response.content.__aiter__()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.response.release()
            self.state.release()

    def close(self) -> None:
        """Drop the connection (client gone or stream broken): the backend sees it and stops."""
        if not self._released:
            self.response.close()
            self.release()


def new_session(connect_timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=30, keepalive_timeout=60)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # backends set no cookies worth keeping
        timeout=aiohttp.ClientTimeout(sock_connect=connect_timeout),
        auto_decompress=True,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),  # less per-request work
    )


async def send(
    session: aiohttp.ClientSession,
    state: DeploymentState,
    url: str,
    *,
    data: Any,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
    method: str = "POST",
) -> Upstream:
    """Open a request to a backend; on success the caller owns the returned Upstream."""
    dep = state.deployment
    try:
        response = await session.request(method, url, data=data, headers=headers, timeout=timeout)
    except TimeoutError:
        raise Retryable("timeout", f"{dep.id} did not answer within its timeout") from None
    except aiohttp.ClientConnectionError as exc:
        raise Retryable("connect", f"{dep.id} unreachable: {exc or type(exc).__name__}") from None
    if response.status in RETRYABLE_STATUS:
        try:
            detail = (await response.content.read(512)).decode("utf-8", "replace").strip()
        except (aiohttp.ClientError, TimeoutError):
            detail = ""
        finally:
            response.release()
        raise Retryable(
            "status", f"{dep.id} answered {response.status}: {detail}", status=response.status
        )
    return Upstream(response, state)


def backend_headers(state: DeploymentState, request_id: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
    if state.deployment.api_key:
        headers["Authorization"] = f"Bearer {state.deployment.api_key}"
    return headers

"""The paced SSE backend and its client: each event's latency from the backend's stamp."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

paced_sse = pytest.importorskip("paced_sse")
load = pytest.importorskip("load")


def test_stamp_round_trip_and_foreign_content() -> None:
    content = paced_sse.stamp()
    now = time.monotonic_ns()
    assert 0 <= paced_sse.stamp_latency_us(content, now) < 1e6
    assert paced_sse.stamp_latency_us("t=1000", 3_000) == 2.0
    assert paced_sse.stamp_latency_us("hello", now) is None
    assert paced_sse.stamp_latency_us("t=x", now) is None


def test_event_is_an_openai_chunk() -> None:
    raw = paced_sse.event({"content": "t=5"})
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    chunk = orjson.loads(raw[6:])
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"] == {"content": "t=5"}


def test_client_reads_every_paced_event_with_its_latency() -> None:
    from aiohttp import web

    async def scenario() -> dict:
        runner = web.AppRunner(paced_sse.make_app(5, 0.002))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            return await load.paced_series(url, load.PACED.body, 2, None)
        finally:
            await runner.cleanup()

    out = asyncio.run(scenario())
    assert out["errors"] == 0 and out["streams"] == 2
    assert len(out["latency_us"]) == 10  # 5 stamped events x 2 streams; stop and [DONE] skipped
    assert all(0 < us < 1e6 for us in out["latency_us"])

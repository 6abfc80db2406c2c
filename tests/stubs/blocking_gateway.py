"""`synapse serve` with one more route whose handler blocks the event loop on purpose.

For the loop watch tests only: `python -m tests.stubs.blocking_gateway serve --config …`.
`POST /debug/block?seconds=S` (keyed like every route of the main port) sleeps S seconds in
`time.sleep`, on the loop, so the watchdog's line must name `block_on_purpose`.
"""

from __future__ import annotations

import time

from synapse.api.protocol import json_response
from synapse.api.surface import Surface
from synapse.cli import main
from synapse.gateway import Gateway
from synapse.http.message import Request, Response
from synapse.server import app, lifecycle


async def block_on_purpose(request: Request) -> Response:
    seconds = float(request.query_string.removeprefix("seconds="))
    time.sleep(seconds)  # noqa: ASYNC251 - the point: nothing else runs meanwhile
    return json_response({"slept": seconds})


def main_app_with_block(gateway: Gateway) -> Surface:
    surface = app.main_app(gateway)
    surface.routes.add("POST", "/debug/block", block_on_purpose)
    return surface


if __name__ == "__main__":
    lifecycle.main_app = main_app_with_block  # type: ignore[assignment]
    raise SystemExit(main())

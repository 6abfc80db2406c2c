"""The route table: exact paths, one `{name}` tail, HEAD on GET routes, 404 vs 405."""

from __future__ import annotations

import pytest

from synapse.http.routes import NoRoute, Routes


async def chat(request: object) -> None: ...
async def models(request: object) -> None: ...
async def model(request: object) -> None: ...


@pytest.fixture
def routes() -> Routes:
    table = Routes()
    table.add("POST", "/v1/chat/completions", chat)
    table.add("GET", "/v1/models", models)
    table.add("GET", "/v1/models/{model}", model)
    return table


def test_exact_path_and_method(routes: Routes) -> None:
    assert routes.match("POST", "/v1/chat/completions") == (chat, "/v1/chat/completions", {})


def test_get_routes_answer_head(routes: Routes) -> None:
    assert routes.match("HEAD", "/v1/models")[0] is models


def test_tail_parameter_takes_the_rest_of_the_path(routes: Routes) -> None:
    handler, route, params = routes.match("GET", "/v1/models/org/llama3.1:8b")
    assert (handler, route, params) == (model, "/v1/models/{model}", {"model": "org/llama3.1:8b"})


def test_an_empty_tail_is_no_match(routes: Routes) -> None:
    with pytest.raises(NoRoute) as caught:
        routes.match("GET", "/v1/models/")
    assert caught.value.allowed == frozenset()


def test_known_path_wrong_method_names_the_allowed_ones(routes: Routes) -> None:
    with pytest.raises(NoRoute) as caught:
        routes.match("GET", "/v1/chat/completions")
    assert caught.value.allowed == {"POST"}
    with pytest.raises(NoRoute) as caught:
        routes.match("DELETE", "/v1/models/x")
    assert caught.value.allowed == {"GET", "HEAD"}


def test_unknown_path_is_404(routes: Routes) -> None:
    with pytest.raises(NoRoute) as caught:
        routes.match("GET", "/nope")
    assert not caught.value.allowed

"""`synapse bench --direct-embed-url` tells whether a group and another engine share one
embedding space: the cosine of their vectors for the same texts (README "Embedding spaces")."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Backend, Backend]]:
    served, other = Backend("openai"), Backend("openai")
    try:
        served.control(embed_scale=3.0)  # same direction, another scale: one space
        gw = Gateway(routing_config(served, None), tmp_path_factory.mktemp("agreement"))
        yield gw, served, other
        gw.stop()
    finally:
        served.stop()
        other.stop()


def _bench(gw: Gateway, direct: Backend) -> dict:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "synapse", "bench", "--url", gw.url, "--key", MASTER_KEY),
            *("--embed-model", "embed-openai", "--direct-embed-url", direct.url + "/v1"),
            *("--direct-embed-model", "e5-small", "--skip-chat", "--json", "-n", "2"),
            *("--warmup", "0", "--batches", "1", "--batch-size", "2", "--concurrency", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout, done.stderr
    return json.loads(done.stdout)["embedding"]["agreement"]


def test_the_same_model_elsewhere_agrees(setup) -> None:
    gw, _, other = setup
    other.control(embed_scale=1.0)
    agreement = _bench(gw, other)
    assert agreement["min"] == pytest.approx(1.0, abs=1e-6)
    assert len(agreement["cosines"]) == 8


def test_other_vectors_are_shown_not_to_agree(setup) -> None:
    gw, _, other = setup
    other.control(embed_scale=-1.0)  # the opposite direction: clearly another space
    agreement = _bench(gw, other)
    assert agreement["mean"] == pytest.approx(-1.0, abs=1e-6)
    assert agreement["min"] == pytest.approx(-1.0, abs=1e-6)

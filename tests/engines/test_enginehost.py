"""The engine host on its own: OpenAI's audio formats and errors, as Speaches would answer."""

from __future__ import annotations

import re

import httpx
import pytest

from synapse.local.stack import Stack

pytestmark = pytest.mark.engines

SENTENCE = "The quick brown fox jumps over the lazy dog."  # tiny.en got it 40 times in 40
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
MAGIC = {"mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3"), "opus": (b"OggS",), "flac": (b"fLaC",)}


@pytest.fixture(scope="module")
def host(stack: Stack) -> str:
    return stack.children["audio"].url


@pytest.fixture(scope="module")
def wav(host: str) -> bytes:
    body = {"model": "piper-en_US-joe-medium", "input": SENTENCE, "response_format": "wav"}
    response = httpx.post(host + "/v1/audio/speech", json=body, timeout=60)
    response.raise_for_status()
    return response.content


def _transcribe(host: str, audio: bytes, **fields: str) -> httpx.Response:
    data = {"model": "whisper-tiny.en", **fields}
    return httpx.post(
        host + "/v1/audio/transcriptions", data=data, files={"file": ("a.wav", audio)}, timeout=60
    )


@pytest.mark.parametrize("fmt", sorted(CONTENT_TYPES))
def test_speech_formats(host: str, fmt: str) -> None:
    body = {"model": "tts-1", "input": SENTENCE, "voice": "alloy", "response_format": fmt}
    with httpx.stream("POST", host + "/v1/audio/speech", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPES[fmt]
        parts = list(response.iter_raw())
    audio = b"".join(parts)
    assert len(audio) > 2000
    assert audio.startswith(MAGIC.get(fmt, (b"",)))


def test_speed_changes_the_length(host: str, wav: bytes) -> None:
    body = {"model": "piper-en_US-joe-medium", "input": SENTENCE, "response_format": "pcm"}
    normal = httpx.post(host + "/v1/audio/speech", json=body, timeout=60).content
    fast = httpx.post(host + "/v1/audio/speech", json={**body, "speed": 2.0}, timeout=60).content
    assert len(fast) < 0.75 * len(normal)


def test_transcription_formats(host: str, wav: bytes) -> None:
    text = _transcribe(host, wav, response_format="text")
    assert text.headers["content-type"].startswith("text/plain")
    assert "brown fox" in text.text.lower()
    srt = _transcribe(host, wav, response_format="srt").text
    assert re.search(r"^1\n00:00:00,000 --> 00:00:\d\d,\d{3}\n", srt)
    vtt = _transcribe(host, wav, response_format="vtt").text
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ")
    verbose = _transcribe(
        host, wav, response_format="verbose_json", **{"timestamp_granularities[]": "word"}
    ).json()
    assert verbose["task"] == "transcribe" and verbose["language"] == "en"
    assert verbose["duration"] > 1 and verbose["segments"]
    assert any(w["word"].strip().lower().startswith("dog") for w in verbose["words"])


def test_errors_look_like_openai(host: str, wav: bytes) -> None:
    unknown = _transcribe(host, wav, model="whisper-large-v3")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "model_not_found"
    missing = httpx.post(
        host + "/v1/audio/transcriptions", data={"model": "whisper-tiny.en"}, timeout=30
    )
    assert missing.status_code == 400
    assert _transcribe(host, wav, response_format="docx").status_code == 400
    assert _transcribe(host, b"not audio at all").status_code == 400
    speech = host + "/v1/audio/speech"
    assert httpx.post(speech, json={"model": "tts-1"}, timeout=30).status_code == 400
    too_fast = {"model": "tts-1", "input": "x", "speed": 9}
    assert httpx.post(speech, json=too_fast, timeout=30).status_code == 400


def test_models_and_health(host: str) -> None:
    assert httpx.get(host + "/health", timeout=10).json() == {"status": "ok"}
    ids = {m["id"] for m in httpx.get(host + "/v1/models", timeout=10).json()["data"]}
    assert ids == {"whisper-tiny.en", "piper-en_US-joe-medium"}

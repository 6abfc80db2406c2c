"""Speech routes through the `openai` SDK: uploads arrive whole, audio streams back intact."""

from __future__ import annotations

import hashlib
import io
import os

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config
from tests.stubs.backend import speech_bytes


def audio_config(stt: Backend, tts: Backend, tts_fallback: Backend | None = None, **kw) -> dict:
    config = routing_config(None, None, **kw)
    config["model_list"] = [
        {
            "model_name": "whisper-large-v3",
            "litellm_params": {
                "model": "openai/Systran/faster-whisper-large-v3",
                "api_base": stt.url + "/v1",
            },
            "model_info": {"id": "stt", "mode": "audio_transcription"},
        },
        {
            "model_name": "piper-tts",
            "litellm_params": {
                "model": "openai/speaches-ai/piper-en_US-amy-medium",
                "api_base": tts.url + "/v1",
            },
            "model_info": {"id": "tts", "mode": "audio_speech"},
        },
    ]
    if tts_fallback is not None:
        config["model_list"].append(
            {
                "model_name": "piper-tts-backup",
                "litellm_params": {
                    "model": "openai/speaches-ai/piper-en_US-joe-medium",
                    "api_base": tts_fallback.url + "/v1",
                },
                "model_info": {"id": "tts-backup", "mode": "audio_speech"},
            }
        )
        config["router_settings"]["fallbacks"] = [{"piper-tts": ["piper-tts-backup"]}]
    return config


@pytest.fixture(scope="module")
def speech_backends():
    stt, tts, backup = Backend("openai"), Backend("openai"), Backend("openai")
    yield stt, tts, backup
    for b in (stt, tts, backup):
        b.stop()


@pytest.fixture(scope="module")
def audio_gateway(speech_backends, tmp_path_factory):
    stt, tts, backup = speech_backends
    gw = Gateway(
        audio_config(stt, tts, backup, max_audio_bytes=1_000_000), tmp_path_factory.mktemp("audio")
    )
    yield gw
    gw.stop()


@pytest.fixture
def client(audio_gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=audio_gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)


AUDIO = os.urandom(300_000)


def test_transcription_backend_receives_every_byte(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-large-v3",
        file=("clip.wav", io.BytesIO(AUDIO), "audio/wav"),
        language="en",
        temperature=0.0,
    )
    digest = hashlib.sha256(AUDIO).hexdigest()
    # The stub reports what it received, and the model id the gateway rewrote.
    assert result.text == f"300000 bytes sha256 {digest} model Systran/faster-whisper-large-v3"


def test_transcription_text_format_passes_through(client: openai.OpenAI) -> None:
    text = client.audio.transcriptions.create(
        model="whisper-large-v3",
        file=("a.wav", io.BytesIO(b"RIFF1234"), "audio/wav"),
        response_format="text",
    )
    assert text.startswith("8 bytes sha256")


# openai 3.x marks audio.translations deprecated; the route is still served (and used).
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_translation(client: openai.OpenAI) -> None:
    result = client.audio.translations.create(
        model="whisper-large-v3", file=("clip.wav", io.BytesIO(AUDIO[:1000]), "audio/wav")
    )
    assert result.text.startswith("translated: 1000 bytes")


def test_speech_bytes_arrive_intact_and_stream(client: openai.OpenAI) -> None:
    whole = client.audio.speech.create(model="piper-tts", voice="amy", input="Hello there")
    assert whole.content == speech_bytes("Hello there")
    chunks = []
    with client.audio.speech.with_streaming_response.create(
        model="piper-tts", voice="amy", input="Streaming works", response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        for chunk in response.iter_bytes(1024):
            chunks.append(chunk)
    assert len(chunks) > 1 and b"".join(chunks) == speech_bytes("Streaming works")


def test_oversized_upload_is_413(client: openai.OpenAI, speech_backends) -> None:
    stt = speech_backends[0]
    before = stt.stats()["calls"]
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(
            model="whisper-large-v3", file=("big.wav", io.BytesIO(b"\0" * 1_200_000), "audio/wav")
        )
    assert err.value.status_code == 413
    assert stt.stats()["calls"] == before  # never reached the backend


def test_missing_file_or_model_is_400(audio_gateway: Gateway) -> None:
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    no_file = httpx.post(
        audio_gateway.url + "/v1/audio/transcriptions",
        data={"model": "whisper-large-v3"},
        files={"x": ("x", b"1")},
        headers=auth,
    )
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    no_model = httpx.post(
        audio_gateway.url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", b"RIFF")},
        headers=auth,
    )
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    not_multipart = httpx.post(
        audio_gateway.url + "/v1/audio/transcriptions",
        json={"model": "whisper-large-v3"},
        headers=auth,
    )
    assert not_multipart.status_code == 400


def test_failing_speech_backend_falls_back(client: openai.OpenAI, speech_backends) -> None:
    _, tts, backup = speech_backends
    tts.control(mode="error500")
    try:
        audio = client.audio.speech.create(model="piper-tts", voice="amy", input="fallback")
        assert audio.content == speech_bytes("fallback")
        assert backup.stats()["calls"] >= 1
    finally:
        tts.control(mode="ok")


def test_transcription_retry_resends_the_whole_file(client: openai.OpenAI, speech_backends) -> None:
    stt = speech_backends[0]
    calls = stt.stats()["calls"]
    stt.control(mode="fail_once")  # 503 first: the same spooled file goes again on the retry
    result = client.audio.transcriptions.create(
        model="whisper-large-v3", file=("clip.wav", io.BytesIO(AUDIO), "audio/wav")
    )
    assert result.text.startswith("300000 bytes sha256 " + hashlib.sha256(AUDIO).hexdigest())
    assert stt.stats()["calls"] == calls + 2

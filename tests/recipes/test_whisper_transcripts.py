"""recipes/mini_spoken_squad/local/whisper_transcripts.py: spoken-word normalisation of
Whisper's written-form output, and resuming after an interruption (Whisper itself is faked:
its real run is covered in tests/baselines/test_cascade.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mini_spoken_squad"
sys.path.insert(0, str(RECIPE / "local"))

import whisper_transcripts  # noqa: E402

RAW = {"a": "In 2012, the U.S. had 8,000 students.", "b": "Super Bowl 50 was played.", "c": "Hello there!"}


class FakeWhisper:
    calls: list[list[str]] = []

    def __init__(self, **kwargs):
        pass

    def transcribe(self, wavs, skip_errors=False):
        FakeWhisper.calls.append(list(wavs))
        return [RAW[Path(w).stem] for w in wavs]


@pytest.fixture
def run(tmp_path, monkeypatch):
    import funasr_clsr.baselines.cascade as cascade

    monkeypatch.setattr(cascade, "WhisperTranscriber", FakeWhisper)
    FakeWhisper.calls = []
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text("".join(json.dumps({"key": k, "source": str(tmp_path / f"{k}.wav")}) + "\n" for k in RAW))
    out = tmp_path / "hyp.jsonl"

    def _run(*extra):
        monkeypatch.setattr(sys, "argv", ["whisper_transcripts.py", "--jsonl", str(jsonl), "--out", str(out),
                                          *extra])
        whisper_transcripts.main()
        return [json.loads(line) for line in out.read_text().splitlines()]

    return _run, out


def test_transcripts_are_normalised_like_the_references(run):
    _run, _ = run
    rows = {r["key"]: r for r in _run("--group", "2")}
    assert rows["a"]["text"] == "in twenty twelve the u s had eight thousand students"
    assert rows["b"]["text"] == "super bowl fifty was played"
    assert rows["a"]["raw"] == RAW["a"]
    assert [len(c) for c in FakeWhisper.calls] == [2, 1]


def test_interrupted_run_resumes_without_duplicates(run):
    _run, out = run
    # one finished record and a line cut mid-write by an interruption
    out.write_text(json.dumps({"key": "a", "text": "kept", "raw": "kept"}) + "\n" + '{"key": "b", "te')
    rows = _run()
    assert [r["key"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["text"] == "kept"  # not redone
    assert FakeWhisper.calls == [[str(out.parent / "b.wav"), str(out.parent / "c.wav")]]
    assert _run() == rows and len(FakeWhisper.calls) == 1  # nothing left to do

"""Cascade baseline: Whisper model assembly, Whisper transcripts, CLSR-ASR transcripts, ranking."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from clsr_testing import CONTEXTS, QUESTIONS, TINY_TE

from funasr_clsr.baselines import cascade


# ------------------------------------------------------------- model assembly
@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Two small 'model.bin' halves and metadata standing in for the PyPI packages."""
    src = tmp_path / "pkgs"
    src.mkdir()
    rng = np.random.default_rng(0)
    parts = []
    for i, n in enumerate((300_001, 123_457), 1):
        p = src / f"model.bin.part{i}"
        p.write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        parts.append(p)
    meta = []
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (src / name).write_text(f"{name} contents\n")
        meta.append(src / name)
    monkeypatch.setattr(cascade, "_whisper_sources", lambda: (parts, meta))
    return parts, meta


def test_whisper_folder_is_assembled_once_and_verified(fake_parts, tmp_path):
    parts, meta = fake_parts
    out = cascade.whisper_base_dir(tmp_path / "cache")
    joined = b"".join(p.read_bytes() for p in parts)
    assert (out / "model.bin").read_bytes() == joined
    assert all((out / m.name).read_text() == m.read_text() for m in meta)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    stamp = (out / "model.bin").stat().st_mtime_ns
    assert cascade.whisper_base_dir(tmp_path / "cache") == out
    assert (out / "model.bin").stat().st_mtime_ns == stamp  # reused, not rewritten
    with open(out / "model.bin", "r+b") as f:  # an interrupted copy by some other tool
        f.truncate(1000)
    cascade.whisper_base_dir(tmp_path / "cache")
    assert (out / "model.bin").read_bytes() == joined


def test_failed_assembly_leaves_no_partial_model(fake_parts, tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError("No space left on device")

    monkeypatch.setattr(cascade.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        cascade.whisper_base_dir(tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_missing_whisper_packages_are_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(cascade, "WHISPER_PACKAGES", {"no-such-dist": "no_such_module_for_clsr_tests"})
    with pytest.raises(cascade.WhisperUnavailableError, match="pip install no-such-dist"):
        cascade.whisper_base_dir(tmp_path / "cache")
    with pytest.raises(cascade.WhisperUnavailableError, match="no model.bin"):
        cascade.WhisperTranscriber(model_dir=tmp_path)


# --------------------------------------------------------------- Whisper ASR
SENTENCES = ["the quick brown fox jumps over the lazy dog",
             "the university is the major seat of the congregation of holy cross"]


def _whisper_ready() -> str | None:
    """Why the real Whisper test cannot run here, or None."""
    if shutil.which("espeak-ng") is None:
        return "espeak-ng is not installed (apt-get install espeak-ng) - needed to synthesise test speech"
    for mod in cascade.WHISPER_PACKAGES.values():
        if importlib.util.find_spec(mod) is None:
            return f"Whisper-base data package {mod} is not installed"
    if importlib.util.find_spec("faster_whisper") is None:
        return "faster-whisper is not installed"
    return None


@pytest.fixture(scope="module")
def whisper():
    reason = _whisper_ready()
    if reason:
        pytest.skip(reason)
    # the real model goes to the user cache (FUNASR_CLSR_CACHE or ~/.cache/funasr_clsr) like in use
    return cascade.WhisperTranscriber(progress=False)


def test_whisper_transcribes_espeak_speech(whisper, tmp_path):
    from funasr_clsr.evaluation.metrics import word_error_rate

    wavs = []
    for i, text in enumerate(SENTENCES):
        wav = tmp_path / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
        wavs.append(str(wav))
    # a silent input between two files: empty transcript, and the batch keeps each file's text
    hyps = whisper.transcribe([wavs[0], np.zeros(16000, np.float32), wavs[1]])
    assert hyps[1] == ""
    for ref, hyp in zip(SENTENCES, [hyps[0], hyps[2]]):
        wer = word_error_rate([ref], [hyp])["wer"]
        assert wer < 30.0, (ref, hyp, wer)


def test_whisper_reports_missing_files_before_decoding(whisper, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        whisper.transcribe([np.zeros(100, np.float32), str(tmp_path / "nope.wav")])
    assert whisper.transcribe([str(tmp_path / "nope.wav")], skip_errors=True) == [""]


# ------------------------------------------------------------ CLSR-ASR front end
class _EchoASR:
    """Stands in for CLSR.transcribe: returns each input's name, records batch sizes."""

    def __init__(self):
        self.batches = []

    def transcribe(self, inputs, batch_size=8, sample_rate=None):
        self.batches.append(len(inputs))
        return [os.path.basename(x) for x in inputs]


def test_clsr_asr_transcripts_keep_input_order(tmp_path):
    wavs = []
    for i, n in enumerate((10, 500, 50, 300, 20)):
        p = tmp_path / f"w{i}.wav"
        p.write_bytes(b"x" * n)
        wavs.append(str(p))
    asr = _EchoASR()
    out = cascade.transcribe_with_clsr_asr(asr, wavs, batch_size=2, progress=False)
    assert out == [f"w{i}.wav" for i in range(5)]
    assert asr.batches == [2, 2, 1]
    with pytest.raises(TypeError, match="cannot transcribe"):
        cascade.transcribe_with_clsr_asr(object(), wavs)


def test_clsr_asr_front_end_with_a_tiny_clsr(pair_dir):
    from clsr_testing import build_tiny

    am = build_tiny()
    wavs = [str(pair_dir / f"ctx{i}.wav") for i in range(3)]
    out = cascade.transcribe_with_clsr_asr(am, wavs, batch_size=2, progress=False)
    assert out == [am.model.transcribe([w])[0] for w in wavs]


# ----------------------------------------------------------------- ranking
@pytest.fixture(scope="module")
def text_encoder():
    from funasr_clsr.text_encoder import TextEncoder

    torch.manual_seed(0)
    return TextEncoder(str(TINY_TE)).eval()


def test_dense_cascade_ranks_the_right_transcript_first(text_encoder):
    sim = cascade.cascade_similarity(QUESTIONS, CONTEXTS, text_encoder)
    assert sim.shape == (8, 8)
    assert (sim.argmax(1) == np.arange(8)).all()
    vecs = cascade.cascade_embeddings(CONTEXTS, text_encoder)
    assert torch.allclose(vecs, text_encoder.encode(CONTEXTS, is_query=False), atol=1e-6)
    # a transcript garbled into another context's words now ranks that context's question
    garbled = list(CONTEXTS)
    garbled[0] = CONTEXTS[1]
    assert cascade.cascade_similarity(QUESTIONS[:1], garbled, text_encoder)[0].argmax() != 0


def test_bm25_cascade_and_empty_transcripts(text_encoder):
    sim = cascade.cascade_similarity(QUESTIONS, CONTEXTS, method="bm25")
    assert (sim.argmax(1) == np.arange(8)).all()
    vecs = cascade.cascade_embeddings(["", "the king of the city", "  "], text_encoder)
    assert vecs.shape == (3, text_encoder.hidden_size) and torch.isfinite(vecs).all()
    assert torch.allclose(vecs.norm(dim=1), torch.ones(3)) and torch.equal(vecs[0], vecs[2])


def test_bad_cascade_arguments(text_encoder):
    with pytest.raises(ValueError, match="dense' or 'bm25"):
        cascade.cascade_similarity(QUESTIONS, CONTEXTS, text_encoder, method="tfidf")
    with pytest.raises(ValueError, match="needs a text encoder"):
        cascade.cascade_similarity(QUESTIONS, CONTEXTS)
    with pytest.raises(TypeError, match="not one string"):
        cascade.cascade_embeddings("the king", text_encoder)

"""funasr_clsr.longform: windows, scoring, clips and retrieve() with a deterministic stand-in model."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from funasr_clsr import longform as lf
from funasr_clsr.audio import AudioError

SR = 16000
BANDS = [300.0, 700.0, 1100.0, 1500.0, 1900.0, 2300.0, 2700.0, 3100.0]


class ToneModel:
    """Stand-in for CLSR: a window's vector is its energy in 8 tone bands; question 'band k' is e_k."""

    class frontend:  # noqa: N801 - mimics model.frontend.fs
        fs = SR

    def __init__(self):
        self.batches = []

    def _vec(self, x):
        spec = np.abs(np.fft.rfft(x))
        freqs = np.fft.rfftfreq(len(x), 1 / SR)
        v = np.array([spec[(freqs > f - 100) & (freqs < f + 100)].sum() for f in BANDS], np.float32)
        return v / max(np.linalg.norm(v), 1e-9)

    def encode_speech(self, inputs, batch_size=8, sample_rate=None, return_text=False):
        self.batches.append(len(inputs))
        vecs = np.stack([self._vec(np.asarray(x)) for x in inputs])
        texts = [f"band {int(np.argmax(v))}" for v in vecs]
        return (vecs, texts) if return_text else vecs

    def encode_text(self, texts, is_query=True):
        out = np.zeros((len(texts), len(BANDS)), np.float32)
        for i, t in enumerate(texts):
            out[i, int(t.split()[-1])] = 1.0
        return out


def tone_recording(bands, seconds=2.0, silent=()):
    t = np.arange(int(seconds * SR)) / SR
    parts = [np.zeros_like(t, dtype=np.float32) if i in silent else
             (0.3 * np.sin(2 * np.pi * BANDS[b] * t)).astype(np.float32) for i, b in enumerate(bands)]
    return np.concatenate(parts)


def test_window_bounds_tile_and_merge_the_short_tail():
    assert lf.window_bounds(100, sr=10, window_s=4.0) == [(0, 40), (40, 80), (80, 100)]
    assert lf.window_bounds(85, sr=10, window_s=4.0) == [(0, 40), (40, 85)]  # 0.5 s tail < 1 s: merged
    assert lf.window_bounds(30, sr=10, window_s=4.0) == [(0, 30)]  # shorter than a window: one
    assert lf.window_bounds(100, sr=10, window_s=4.0, overlap_s=2.0)[:3] == [(0, 40), (20, 60), (40, 80)]
    with pytest.raises(ValueError, match="smaller than window_s"):
        lf.window_bounds(100, sr=10, window_s=4.0, overlap_s=4.0)


def test_streamed_windows_equal_the_bounds_for_any_block_size():
    rng = np.random.default_rng(0)
    for _ in range(100):
        total, block = int(rng.integers(1, 500)), int(rng.integers(1, 120))
        win = int(rng.integers(1, 90))
        hop = int(rng.integers(1, win + 1))
        min_last = int(rng.integers(0, win + 1))
        ramp = np.arange(total, dtype=np.float32)
        blocks = (ramp[i:i + block] for i in range(0, total, block))
        got = list(lf.windows_from_blocks(blocks, win, hop, min_last))
        expect = lf.window_bounds(total, 1, win, win - hop, min_last)
        assert [(s, e) for s, e, _ in got] == expect
        for s, e, a in got:
            np.testing.assert_array_equal(a, ramp[s:e])


def test_questions_and_top_k_are_validated():
    assert lf.check_questions("who?") == ["who?"]
    for bad, match in [(None, "no question"), ([], "empty list"), (["ok", " "], "question 2 is empty"),
                       ([3], "not a string"), ("x" * (lf.MAX_QUESTION_CHARS + 1), "characters long"),
                       (42, "is a int: give a string"), (b"who", "is a bytes"),
                       ("bad \ud800 half", "question 1 is not valid Unicode text")]:
        with pytest.raises(ValueError, match=match):
            lf.check_questions(bad)
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="top_k"):
            lf.check_top_k(bad)


def test_scores_and_top_k():
    s = lf.cosine_scores([[1.0, 0.0]], [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(s, [[1.0, 0.0, np.sqrt(0.5)]], atol=1e-6)
    assert lf.top_k_indices([0.5, 0.9, 0.5, 0.1], 3) == [1, 0, 2]  # ties keep recording order
    assert lf.top_k_indices([0.5, 0.9], 10) == [1, 0]  # k > n: all


def test_write_clip_reads_only_the_span_at_the_source_rate(tmp_path):
    x = (np.arange(SR * 5) % 2000 - 1000).astype(np.int16)
    src = tmp_path / "a.wav"
    sf.write(src, x, SR, subtype="PCM_16")
    out = lf.write_clip(src, 1.25, 2.5, tmp_path / "c.wav")
    y, sr = sf.read(out, dtype="int16")
    assert sr == SR and np.array_equal(y, x[20000:40000])
    stereo = tmp_path / "s44.wav"
    sf.write(stereo, np.zeros((44100 * 3, 2), np.float32) + 0.1, 44100)
    info = sf.info(lf.write_clip(stereo, 1.0, 2.0, tmp_path / "s.wav"))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 44100)
    with pytest.raises(AudioError, match="beyond the end"):
        lf.write_clip(src, 6.0, 7.0, tmp_path / "late.wav")
    with pytest.raises(ValueError, match="valid span"):
        lf.write_clip(src, 2.0, 1.0, tmp_path / "neg.wav")
    arr = lf.write_clip(np.ones(SR, np.float32) * 0.5, 0.5, 1.0, tmp_path / "arr.wav")
    assert sf.info(arr).frames == SR // 2


def test_retrieve_finds_the_right_window_with_exact_times(tmp_path, caplog):
    bands = [0, 5, 2, 7, 3]
    wav = tmp_path / "talk.wav"
    sf.write(wav, tone_recording(bands, silent={4}), SR)
    model = ToneModel()
    with caplog.at_level(logging.WARNING):
        res, meta = lf.retrieve(model, [str(wav)], key=["talk"], question=["band 7", "band 2"], top_k=2,
                                window_s=2.0, window_batch_size=3, clip_dir=tmp_path / "clips")
    assert "1 of 5 segments are silent" in caplog.text
    assert model.batches == [3, 1]  # batches of window_batch_size; the silent window never encoded
    assert [r["question"] for r in res] == ["band 7", "band 2"] and res[0]["key"] == "talk"
    top = res[0]["segments"][0]
    assert (top["start"], top["end"], top["transcript"]) == (6.0, 8.0, "band 7")
    assert top["score"] == pytest.approx(1.0, abs=1e-3)
    assert res[1]["segments"][0]["start"] == 4.0
    clip, _ = sf.read(top["clip"], dtype="float32")
    np.testing.assert_allclose(clip, tone_recording(bands)[6 * SR:8 * SR], atol=1e-4)
    assert meta["batch_data_time"] == pytest.approx(10.0)
    # top_k larger than the number of (non-silent) windows returns them all, best first
    res, _ = lf.retrieve(model, [str(wav)], question="band 5", top_k=50, window_s=2.0)
    segs = res[0]["segments"]
    assert len(segs) == 4 and (segs[0]["start"], segs[0]["end"]) == (2.0, 4.0)
    assert [s["score"] for s in segs] == sorted((s["score"] for s in segs), reverse=True)


def test_retrieve_on_arrays_short_and_silent_inputs(tmp_path, caplog):
    model = ToneModel()
    x = tone_recording([1, 6], seconds=1.5)
    res, _ = lf.retrieve(model, [x], key=["arr"], question="band 6", top_k=1, window_s=40.0,
                         clip_dir=tmp_path)
    seg = res[0]["segments"][0]  # 3 s < one window: one segment, the whole recording
    assert (seg["start"], seg["end"]) == (0.0, 3.0) and Path(seg["clip"]).is_file()
    with caplog.at_level(logging.WARNING):
        res, _ = lf.retrieve(model, [np.zeros(SR * 3, np.float32)], key=["quiet"], question="band 1",
                             window_s=1.0)
    assert res[0]["segments"] == [] and "silent" in caplog.text
    with pytest.raises(ValueError, match="question 1 is empty"):
        lf.retrieve(model, [x], question="")
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        lf.retrieve(model, [str(tmp_path / "nope.wav")], question="band 1")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                pkg = ".".join(path.relative_to(Path(lf.__file__).parents[1]).with_suffix("").parts[:-node.level])
                base = f"{pkg}.{base}" if base else pkg
            names.add(base)
    return names


def test_models_and_longform_never_import_retrieval():
    pkg = Path(lf.__file__).parent
    files = [pkg / "longform.py", *sorted((pkg / "models").rglob("*.py"))]
    for f in files:
        bad = {n for n in _imports(f) if n.startswith("funasr_clsr.retrieval") or n.startswith("funasr_clsr.bin")}
        assert not bad, f"{f} imports {bad}: the arrows go bin -> retrieval -> models"
    assert "funasr_clsr.longform" in _imports(pkg / "retrieval" / "segmentation.py")

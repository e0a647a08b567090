"""funasr_clsr.retrieval.segmentation: fixed windows, streamed window audio, VAD merging."""
from __future__ import annotations

import math
import sys
import tracemalloc
import types

import numpy as np
import pytest
import soundfile as sf

from funasr_clsr.audio import AudioError, load_audio
from funasr_clsr.retrieval import segmentation as segmod
from funasr_clsr.retrieval.segmentation import (
    Segment,
    VADUnavailableError,
    fixed_windows,
    iter_window_audio,
    merge_speech_regions,
    vad_segments,
)

SR = 16000


# --------------------------------------------------------------------------- Segment


def test_segment_times_and_serialisation():
    s = Segment.from_samples(8000, 24000, SR, audio=np.ones(16000, np.float32))
    assert (s.start, s.end, s.duration, s.num_samples) == (0.5, 1.5, 1.0, 16000)
    d = s.to_dict()
    assert "audio" not in d and d == {"start": 0.5, "end": 1.5, "start_sample": 8000, "end_sample": 24000}
    assert Segment.from_dict(d) == s  # audio is not compared
    assert "audio" not in repr(s)


# --------------------------------------------------------------------------- fixed windows


def check_cover(segs, total, win, hop):
    assert segs[0].start_sample == 0 and segs[-1].end_sample == total
    for a, b in zip(segs, segs[1:]):
        assert b.start_sample - a.start_sample == hop
        assert b.start_sample <= a.end_sample  # no gaps
    for s in segs:
        assert s.start == s.start_sample / SR and s.end == s.end_sample / SR
        assert s.end_sample > s.start_sample
    for s in segs[:-1]:
        assert s.num_samples == win


@pytest.mark.parametrize("total", [1, 5 * SR, 40 * SR, 40 * SR + 1, 95 * SR + 7, 3 * 3600 * SR])
@pytest.mark.parametrize("overlap", [0.0, 5.0, 20.0])
def test_fixed_windows_cover_exactly(total, overlap):
    win, hop = 40 * SR, int((40 - overlap) * SR)
    segs = fixed_windows(total, SR, 40.0, overlap)
    check_cover(segs, total, win, hop)
    last = segs[-1]
    if len(segs) > 1:
        assert last.num_samples >= 10 * SR  # default min_last_s = window / 4
        assert last.num_samples < win + 10 * SR
    if overlap == 0:
        assert sum(s.num_samples for s in segs) == total  # exact tiling


def test_fixed_windows_known_layout():
    segs = fixed_windows(130 * SR, SR, 40.0)
    assert [(s.start, s.end) for s in segs] == [(0, 40), (40, 80), (80, 120), (120, 130)]
    # A 5 s tail (< 10 s) is merged into the previous window.
    segs = fixed_windows(125 * SR, SR, 40.0)
    assert [(s.start, s.end) for s in segs] == [(0, 40), (40, 80), (80, 125)]
    # min_last_s=0 keeps every tail; a tail is never merged when it is the only window.
    assert len(fixed_windows(125 * SR, SR, 40.0, min_last_s=0)) == 4
    assert [(s.start, s.end) for s in fixed_windows(3 * SR, SR, 40.0)] == [(0, 3)]
    segs = fixed_windows(100 * SR, SR, 40.0, overlap_s=10.0)
    assert [(s.start, s.end) for s in segs] == [(0, 40), (30, 70), (60, 100)]


def test_fixed_windows_fractional_rates():
    segs = fixed_windows(1000, sr=8000, window_s=0.03, overlap_s=0.01)
    assert [s.start_sample for s in segs][:3] == [0, 160, 320]
    assert segs[0].end == 240 / 8000


@pytest.mark.parametrize("kwargs,match", [
    ({"window_s": 0}, "window_s"),
    ({"window_s": -1}, "window_s"),
    ({"window_s": float("nan")}, "window_s"),
    ({"overlap_s": 40.0}, "smaller than window_s"),
    ({"overlap_s": 50.0}, "smaller than window_s"),
    ({"overlap_s": -1.0}, "overlap_s"),
    ({"min_last_s": 41.0}, "min_last_s"),
    ({"sr": 0}, "sr"),
    ({"window_s": 1e-6}, "below one sample"),
])
def test_fixed_windows_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fixed_windows(100 * SR, **kwargs)


def test_fixed_windows_bad_total():
    with pytest.raises(ValueError, match="total_samples"):
        fixed_windows(0)
    with pytest.raises(ValueError, match="total_samples"):
        fixed_windows(12.5)


# --------------------------------------------------------------------------- streamed windows


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """97.3 s of 22.05 kHz stereo noise: resampled and down-mixed while streaming."""
    p = tmp_path_factory.mktemp("seg") / "long.wav"
    rng = np.random.default_rng(0)
    sf.write(p, (0.1 * rng.standard_normal((int(22050 * 97.3), 2))).astype(np.float32), 22050,
             subtype="FLOAT")
    return p


@pytest.mark.parametrize("window,overlap,block,min_last", [
    (40.0, 0.0, 60.0, None),
    (40.0, 0.0, 7.0, None),  # blocks smaller than a window
    (10.0, 2.5, 3.3, None),
    (10.0, 2.5, 3.3, 0.0),
    (30.0, 0.0, 200.0, 10.0),  # one block holds the whole file
    (200.0, 0.0, 11.0, None),  # file shorter than a window
])
def test_iter_window_audio_matches_fixed_windows(long_wav, window, overlap, block, min_last):
    whole = load_audio(long_wav)
    expect = fixed_windows(len(whole), SR, window, overlap, min_last)
    got = list(iter_window_audio(long_wav, window, overlap, block_seconds=block, min_last_s=min_last))
    assert [(s.start_sample, s.end_sample) for s in got] == \
        [(s.start_sample, s.end_sample) for s in expect]
    for s in got:
        assert s.audio.dtype == np.float32 and len(s.audio) == s.num_samples
        np.testing.assert_allclose(s.audio, whole[s.start_sample:s.end_sample], atol=1e-5)


def test_iter_window_audio_fuzz_against_fixed_windows(monkeypatch):
    # Random totals/windows/overlaps/tails and random block sizes (fed through a stand-in for
    # iter_blocks on a ramp, so every sample can be checked by value).
    rng = np.random.default_rng(7)
    sr = 100
    for _ in range(300):
        total = int(rng.integers(1, 3000))
        win = int(rng.integers(1, 400))
        ovl = int(rng.integers(0, win))
        min_last = int(rng.integers(0, win + 1))
        block = int(rng.integers(1, 500))
        ramp = np.arange(total, dtype=np.float32)

        def fake_blocks(path, block_seconds, target_sr, _b=block, _r=ramp):
            for i in range(0, len(_r), _b):
                yield i, _r[i:i + _b]

        monkeypatch.setattr(segmod, "iter_blocks", fake_blocks)
        args = (win / sr, ovl / sr)
        got = list(iter_window_audio("ramp.wav", *args, sr=sr, min_last_s=min_last / sr))
        expect = fixed_windows(total, sr, *args, min_last_s=min_last / sr)
        assert [(g.start_sample, g.end_sample) for g in got] == \
            [(e.start_sample, e.end_sample) for e in expect], (total, win, ovl, min_last, block)
        for g in got:
            np.testing.assert_array_equal(g.audio, ramp[g.start_sample:g.end_sample])


def test_iter_window_audio_array_input():
    x = np.random.default_rng(1).standard_normal(8000 * 25).astype(np.float32) * 0.1
    got = list(iter_window_audio(x, window_s=10.0, overlap_s=1.0, sample_rate=8000))
    y = load_audio(x, sample_rate=8000)
    assert [(s.start_sample, s.end_sample) for s in got] == \
        [(s.start_sample, s.end_sample) for s in fixed_windows(len(y), SR, 10.0, 1.0)]
    np.testing.assert_array_equal(got[1].audio, y[got[1].start_sample:got[1].end_sample])


def test_iter_window_audio_memory_is_bounded(tmp_path):
    # 120 s file, 5 s windows, 2 s blocks: the whole file at 16 kHz would be 7.7 MB.
    p = tmp_path / "two_min.wav"
    rng = np.random.default_rng(3)
    with sf.SoundFile(p, "w", SR, 1, subtype="PCM_16") as f:
        for _ in range(120):
            f.write((0.1 * rng.standard_normal(SR)).astype(np.float32))
    tracemalloc.start()
    n = 0
    try:
        for seg in iter_window_audio(p, window_s=5.0, block_seconds=2.0):
            n += seg.num_samples
            del seg
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 120 * SR
    assert peak < 2_000_000, peak


def test_iter_window_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        next(iter_window_audio(tmp_path / "nope.wav"))
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="empty"):
        next(iter_window_audio(p))
    with pytest.raises(ValueError, match="smaller than window_s"):
        next(iter_window_audio(p, window_s=5, overlap_s=5))


# --------------------------------------------------------------------------- VAD merge logic


def spans(segs):
    return [(s.start, s.end) for s in segs]


def test_merge_joins_small_gaps_only():
    regions = [[0, 1000], [1200, 3000], [4000, 5000]]  # gaps 0.2 s and 1.0 s
    assert spans(merge_speech_regions(regions, 40.0, 0.5)) == [(0, 3.0), (4.0, 5.0)]
    assert spans(merge_speech_regions(regions, 40.0, 1.0)) == [(0, 5.0)]
    assert spans(merge_speech_regions(regions, 40.0, 0.0)) == [(0, 1.0), (1.2, 3.0), (4.0, 5.0)]
    assert spans(merge_speech_regions(regions, 40.0, math.inf)) == [(0, 5.0)]


def test_merge_respects_max_length():
    regions = [[0, 3000], [3100, 6000], [6100, 9000]]
    # Joining all three would make 9 s > 7 s: the third starts a new segment.
    assert spans(merge_speech_regions(regions, 7.0, 0.5)) == [(0, 6.0), (6.1, 9.0)]


def test_merge_splits_long_regions_evenly():
    segs = merge_speech_regions([[1000, 101000]], max_segment_s=40.0, merge_gap_s=0.5)
    assert len(segs) == 3  # 100 s -> three equal parts, not 40 + 40 + 20
    assert spans(segs)[0][0] == 1.0 and spans(segs)[-1][1] == 101.0
    lens = [s.num_samples for s in segs]
    assert max(lens) - min(lens) <= 1 and max(lens) <= 40 * SR
    for a, b in zip(segs, segs[1:]):
        assert a.end_sample == b.start_sample


def test_merge_sorts_unions_overlaps_and_clips():
    regions = [[5000, 6000], [0, 1000], [500, 1500], [1500, 1500], [9000, 12000]]
    segs = merge_speech_regions(regions, 40.0, 0.0, total_samples=10 * SR)
    assert spans(segs) == [(0, 1.5), (5.0, 6.0), (9.0, 10.0)]
    assert all(s.start == s.start_sample / SR for s in segs)


def test_merge_min_segment_and_empty():
    assert merge_speech_regions([], 40.0, 0.5) == []
    segs = merge_speech_regions([[0, 100], [2000, 4000]], 40.0, 0.5, min_segment_s=0.5)
    assert spans(segs) == [(2.0, 4.0)]


@pytest.mark.parametrize("regions,match", [
    ([[-1, 500]], "negative or unknown"),
    ([[100, -1]], "negative or unknown"),
    ([[500, 100]], "ends before"),
    ([[1, 2, 3]], "pair"),
    ([["a", 2]], "pair"),
    ([5], "pair"),
])
def test_merge_rejects_bad_regions(regions, match):
    with pytest.raises(ValueError, match=match):
        merge_speech_regions(regions, 40.0, 0.5)


def test_merge_validates_arguments():
    with pytest.raises(ValueError, match="max_segment_s"):
        merge_speech_regions([[0, 1]], 0, 0.5)
    with pytest.raises(ValueError, match="merge_gap_s"):
        merge_speech_regions([[0, 1]], 40.0, -1)


# --------------------------------------------------------------------------- vad_segments


class EnergyVAD:
    """Fake fsmn-vad: AutoModel.generate-style output from a frame-energy threshold."""

    def __init__(self):
        self.calls = []

    def generate(self, input, **kwargs):
        x = np.asarray(input)
        self.calls.append(len(x))
        frame = SR // 100  # 10 ms
        n = len(x) // frame
        active = np.abs(x[: n * frame]).reshape(n, frame).max(axis=1) > 0.05
        regions, start = [], None
        for i, a in enumerate(np.append(active, False)):
            if a and start is None:
                start = i
            elif not a and start is not None:
                regions.append([start * 10, i * 10])
                start = None
        return [{"key": "rand_key", "value": regions}]


def burst_audio(bursts, total_s, sr=SR):
    """Tone bursts at (start_s, end_s) over silence."""
    x = np.zeros(int(total_s * sr), np.float32)
    for a, b in bursts:
        t = np.arange(int(a * sr), int(b * sr))
        x[t] = 0.3 * np.sin(2 * np.pi * 300 * t / sr)
    return x


def test_vad_segments_array():
    x = burst_audio([(1, 3), (3.2, 5), (8, 9)], 12)
    vad = EnergyVAD()
    segs = vad_segments(x, vad_model=vad, max_segment_s=40, merge_gap_s=0.5, with_audio=True)
    assert spans(segs) == [(1.0, 5.0), (8.0, 9.0)]
    assert vad.calls == [len(x)]
    np.testing.assert_array_equal(segs[1].audio, x[8 * SR:9 * SR])


def test_vad_segments_resamples_arrays():
    x8 = burst_audio([(1, 2)], 3, sr=8000)
    segs = vad_segments(x8, vad_model=EnergyVAD(), sample_rate=8000)
    assert len(segs) == 1 and abs(segs[0].start - 1.0) <= 0.02 and abs(segs[0].end - 2.0) <= 0.02


def test_vad_segments_path_in_blocks_rejoins_speech(tmp_path):
    # Speech from 9 s to 13 s crosses the 10 s block edge; it must come back as one segment.
    x = burst_audio([(2, 4), (9, 13), (21, 22)], 25)
    p = tmp_path / "talk.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    vad = EnergyVAD()
    segs = vad_segments(p, vad_model=vad, block_seconds=10.0, with_audio=True, progress=True)
    assert vad.calls == [10 * SR, 10 * SR, 5 * SR]  # never the whole file at once
    assert spans(segs) == [(2.0, 4.0), (9.0, 13.0), (21.0, 22.0)]
    for s in segs:
        np.testing.assert_allclose(s.audio, x[s.start_sample:s.end_sample], atol=1e-6)
    # The same result as running on the whole array.
    assert spans(vad_segments(x, vad_model=EnergyVAD())) == spans(segs)


def test_vad_segments_splits_long_speech():
    x = burst_audio([(0, 50)], 50)
    segs = vad_segments(x, vad_model=EnergyVAD(), max_segment_s=20)
    assert len(segs) == 3 and spans(segs)[0][0] == 0 and spans(segs)[-1][1] == 50.0
    assert all(s.duration <= 20 for s in segs)


def test_vad_segments_bad_model_output():
    class Broken:
        def generate(self, input, **kw):
            return [{"text": "hello"}]

    class Streaming:
        def generate(self, input, **kw):
            return [{"value": [[100, -1]]}]

    x = burst_audio([(0, 1)], 2)
    with pytest.raises(ValueError, match="unexpected VAD output"):
        vad_segments(x, vad_model=Broken())
    with pytest.raises(ValueError, match="streaming"):
        vad_segments(x, vad_model=Streaming())
    with pytest.raises(TypeError, match="generate"):
        vad_segments(x, vad_model=object())


def test_vad_unavailable_is_clear(monkeypatch):
    # Stand-in funasr whose AutoModel fails the way an offline hub download does.
    fake = types.ModuleType("funasr")

    def AutoModel(**kwargs):
        raise ConnectionError("Name resolution failed\nfor modelscope.cn")

    fake.AutoModel = AutoModel
    monkeypatch.setitem(sys.modules, "funasr", fake)
    monkeypatch.setattr(segmod, "_VAD_CACHE", {})
    with pytest.raises(VADUnavailableError) as ei:
        vad_segments(np.zeros(SR, np.float32))
    msg = str(ei.value)
    assert "\n" not in msg and "fsmn-vad" in msg and "ConnectionError" in msg and "fixed windows" in msg


def test_vad_model_built_once_by_name(monkeypatch):
    built = []
    fake = types.ModuleType("funasr")

    def AutoModel(model, **kwargs):
        built.append((model, kwargs.get("disable_update"), kwargs.get("disable_pbar")))
        return EnergyVAD()

    fake.AutoModel = AutoModel
    monkeypatch.setitem(sys.modules, "funasr", fake)
    monkeypatch.setattr(segmod, "_VAD_CACHE", {})
    x = burst_audio([(1, 2)], 3)
    assert spans(vad_segments(x, vad_model="/models/fsmn-vad")) == [(1.0, 2.0)]
    vad_segments(x, vad_model="/models/fsmn-vad")
    assert built == [("/models/fsmn-vad", True, True)]

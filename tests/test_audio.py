"""funasr_clsr.audio: decoding, resampling, validation and block streaming on synthetic files."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from funasr_clsr import audio
from funasr_clsr.audio import (
    AudioError,
    AudioFileNotFoundError,
    audio_info,
    is_silent,
    iter_blocks,
    load_audio,
)

REPO = Path(__file__).resolve().parents[1]


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def no_ffmpeg(monkeypatch):
    """Behave as on a machine without ffmpeg, whatever this one has."""
    monkeypatch.setattr(audio, "_ffmpeg", lambda: None)


def assert_one_line(err: BaseException, *needles: str) -> None:
    msg = str(err)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


# --------------------------------------------------------------------------- files


def test_wav_16k_mono_roundtrip(tmp_path):
    x = sine(440, 1.5, 16000)
    p = tmp_path / "a.wav"
    sf.write(p, x, 16000, subtype="PCM_16")
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1.0 / 32768 + 1e-6)  # 16-bit quantisation only
    assert load_audio(str(p)).shape == x.shape  # str and Path both accepted


def test_wav_8k_is_upsampled(tmp_path):
    sr = 8000
    p = tmp_path / "b.wav"
    sf.write(p, sine(300, 2.0, sr), sr, subtype="PCM_16")
    y = load_audio(p, target_sr=16000)
    assert abs(len(y) - 2 * 16000) <= 1
    ref = sine(300, 2.0, 16000)
    # Away from the edges the resampled tone matches the tone generated at 16 kHz.
    mid = slice(800, 31000)
    np.testing.assert_allclose(y[mid], ref[: len(y)][mid], atol=2e-3)


def test_44k_stereo_is_downmixed_and_downsampled(tmp_path):
    sr = 44100
    left, right = sine(500, 1.0, sr, 0.6), sine(500, 1.0, sr, 0.2)
    p = tmp_path / "c.wav"
    sf.write(p, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    y = load_audio(p)
    assert abs(len(y) - 16000) <= 1
    ref = sine(500, 1.0, 16000, 0.4)  # mean of 0.6 and 0.2 amplitudes
    np.testing.assert_allclose(y[400:15600], ref[400:15600], atol=2e-3)
    # Downmix happens before resampling: same as down-mixing the array ourselves.
    np.testing.assert_allclose(y, load_audio((left + right) / 2, sample_rate=sr), atol=1e-6)


def test_flac_and_target_rate(tmp_path):
    x = sine(1000, 1.0, 16000)
    p = tmp_path / "d.flac"
    sf.write(p, x, 16000)
    y = load_audio(p, target_sr=8000)
    assert abs(len(y) - 8000) <= 1
    np.testing.assert_allclose(y[200:7800], sine(1000, 1.0, 8000)[200:7800], atol=3e-3)


def test_int_pcm_file_is_scaled(tmp_path):
    p = tmp_path / "i.wav"
    pcm = np.array([0, 16384, -32768, 32767] * 100, dtype=np.int16)
    sf.write(p, pcm, 16000, subtype="PCM_16")
    y = load_audio(p)
    np.testing.assert_allclose(y[:4], [0.0, 0.5, -1.0, 32767 / 32768], atol=1e-6)


def test_missing_file(tmp_path):
    p = tmp_path / "missing.wav"
    with pytest.raises(FileNotFoundError) as ei:
        load_audio(p)
    assert isinstance(ei.value, AudioFileNotFoundError)
    assert_one_line(ei.value, str(p), "not found")
    assert str(pickle.loads(pickle.dumps(ei.value))) == str(ei.value)
    with pytest.raises(FileNotFoundError):
        audio_info(p)
    with pytest.raises(FileNotFoundError):
        next(iter_blocks(p))


def test_text_file_named_wav(tmp_path, no_ffmpeg):
    p = tmp_path / "notes.wav"
    p.write_text("these are meeting notes, not audio\n" * 20)
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert_one_line(ei.value, str(p), "not a valid WAV")
    with pytest.raises(AudioError):
        audio_info(p)
    with pytest.raises(AudioError):
        next(iter_blocks(p))


def test_truncated_header(tmp_path, no_ffmpeg):
    good = tmp_path / "good.wav"
    sf.write(good, sine(440, 1.0, 16000), 16000, subtype="PCM_16")
    bad = tmp_path / "trunc.wav"
    bad.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioError) as ei:
        load_audio(bad)
    assert_one_line(ei.value, str(bad))


def test_truncated_body_keeps_what_is_there(tmp_path):
    # libsndfile trusts the bytes present over the header's data size: a cut wav loads short.
    good = tmp_path / "good.wav"
    sf.write(good, sine(440, 1.0, 16000), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[:44 + 2 * 5000])
    assert len(load_audio(cut)) == 5000


def test_corrupt_flac_stream(tmp_path, no_ffmpeg):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.flac"
    sf.write(good, (0.3 * rng.standard_normal(48000)).astype(np.float32), 16000)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(AudioError) as ei:
        load_audio(bad)
    assert_one_line(ei.value, str(bad))
    with pytest.raises(AudioError) as ei:
        list(iter_blocks(bad, block_seconds=0.2))
    assert_one_line(ei.value, str(bad), "corrupt or truncated")


def test_empty_wav(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert_one_line(ei.value, str(p), "empty audio")
    with pytest.raises(AudioError, match="empty audio"):
        list(iter_blocks(p))
    assert audio_info(p).frames == 0


def test_nan_in_float_wav(tmp_path):
    x = sine(440, 0.5, 16000)
    x[1234] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert_one_line(ei.value, str(p), "NaN/inf", "sample 1234")
    with pytest.raises(AudioError, match="sample 1234"):
        list(iter_blocks(p, block_seconds=0.05))


def test_unknown_format_without_ffmpeg_suggests_it(tmp_path, no_ffmpeg):
    p = tmp_path / "talk.m4a"
    p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert_one_line(ei.value, str(p), "'.m4a'", "ffmpeg")
    with pytest.raises(AudioError, match="ffmpeg"):
        list(iter_blocks(p))


def test_directory_is_rejected(tmp_path):
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_min_seconds(tmp_path):
    p = tmp_path / "short.wav"
    sf.write(p, sine(440, 0.2, 16000), 16000)
    with pytest.raises(AudioError) as ei:
        load_audio(p, min_seconds=0.5)
    assert_one_line(ei.value, str(p), "shorter than the minimum 0.5 s")
    assert len(load_audio(p, min_seconds=0.1)) == 3200


def test_sample_rate_for_file_is_ignored_with_warning(tmp_path):
    p = tmp_path / "w.wav"
    sf.write(p, sine(440, 0.5, 8000), 8000)
    with pytest.warns(UserWarning, match="header says 8000"):
        y = load_audio(p, sample_rate=16000)
    assert abs(len(y) - 8000) <= 1  # the header's 8 kHz was used


# --------------------------------------------------------------------------- arrays, bytes


def test_array_default_rate_and_resample():
    x = sine(200, 1.0, 16000)
    y = load_audio(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x)
    z = load_audio(sine(200, 1.0, 22050), sample_rate=22050)
    assert abs(len(z) - 16000) <= 1


@pytest.mark.parametrize("orient", ["samples_channels", "channels_samples"])
def test_2d_array_downmix(orient):
    a, b = sine(300, 0.5, 16000, 0.8), np.zeros(8000, np.float32)
    x = np.stack([a, b], axis=1 if orient == "samples_channels" else 0)
    np.testing.assert_allclose(load_audio(x), a / 2, atol=1e-7)


def test_int_arrays_scaled():
    np.testing.assert_allclose(load_audio(np.array([0, 16384, -32768], np.int16)), [0, 0.5, -1])
    np.testing.assert_allclose(load_audio(np.array([-2**31, 0], np.int32)), [-1, 0])
    np.testing.assert_allclose(load_audio(np.array([0, 128, 192], np.uint8)), [-1, 0, 0.5])


def test_list_is_float_samples():
    y = load_audio([0.0, 0.25, -0.5, 1])
    np.testing.assert_allclose(y, [0, 0.25, -0.5, 1])


def test_nan_and_inf_arrays():
    with pytest.raises(AudioError) as ei:
        load_audio(np.array([0.1, np.nan, 0.2], np.float32))
    assert_one_line(ei.value, "<array>", "NaN/inf", "sample 1")
    with pytest.raises(AudioError, match="utt7"):
        load_audio(np.array([np.inf]), name="utt7")


def test_bad_arrays():
    with pytest.raises(AudioError, match="empty audio"):
        load_audio(np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="shape"):
        load_audio(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(AudioError, match="dtype"):
        load_audio(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(np.zeros(10, np.float32), sample_rate=0)
    with pytest.raises(TypeError):
        load_audio(3.5)


def test_bytes_and_file_object(tmp_path, no_ffmpeg):
    p = tmp_path / "e.flac"
    x = sine(440, 0.5, 8000)
    sf.write(p, x, 8000)
    raw = p.read_bytes()
    y = load_audio(raw)
    np.testing.assert_allclose(y, load_audio(p), atol=1e-7)
    with open(p, "rb") as f:
        np.testing.assert_allclose(load_audio(f), y, atol=1e-7)
    np.testing.assert_allclose(load_audio(io.BytesIO(raw)), y, atol=1e-7)
    with pytest.raises(AudioError, match="<bytes>"):
        load_audio(b"definitely not audio" * 10)
    with pytest.raises(AudioError, match="zero bytes"):
        load_audio(b"")


def test_silence_is_not_an_error():
    z = load_audio(np.zeros(16000, np.float32))
    assert len(z) == 16000 and is_silent(z)
    assert is_silent(np.full(100, 5e-5, np.float32))
    assert not is_silent(sine(100, 0.1, 16000, amp=0.01))
    assert is_silent(np.zeros(0))


# --------------------------------------------------------------------------- info, blocks


def test_audio_info(tmp_path):
    p = tmp_path / "s.wav"
    sf.write(p, np.zeros((44100 * 3 + 5, 2), np.float32), 44100)
    info = audio_info(p)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 2, 44100 * 3 + 5)
    assert info.duration_s == pytest.approx(3 + 5 / 44100)


@pytest.mark.parametrize("sr,channels,block", [(44100, 2, 0.37), (16000, 1, 0.5), (8000, 1, 1.3)])
def test_blocks_equal_whole_file(tmp_path, sr, channels, block):
    rng = np.random.default_rng(1)
    n = int(sr * 4.1) + 3
    x = (0.2 * rng.standard_normal((n, channels))).astype(np.float32)
    p = tmp_path / f"long_{sr}.wav"
    sf.write(p, x, sr, subtype="FLOAT")
    whole = load_audio(p)
    blocks = list(iter_blocks(p, block_seconds=block))
    size = int(round(block * 16000))
    starts = [s for s, _ in blocks]
    assert starts == list(range(0, len(whole), size))
    assert all(len(b) == size for _, b in blocks[:-1]) and 0 < len(blocks[-1][1]) <= size
    assert all(b.dtype == np.float32 and b.ndim == 1 for _, b in blocks)
    joined = np.concatenate([b for _, b in blocks])
    assert len(joined) == len(whole)
    np.testing.assert_allclose(joined, whole, atol=1e-5)


def test_blocks_have_no_click_at_edges(tmp_path):
    # A pure tone resampled block-wise must stay smooth across block boundaries.
    sr = 22050
    p = tmp_path / "tone.wav"
    sf.write(p, sine(220, 3.0, sr), sr, subtype="FLOAT")
    y = np.concatenate([b for _, b in iter_blocks(p, block_seconds=0.25)])
    d = np.abs(np.diff(y[100:-100]))
    max_step = 2 * np.pi * 220 / 16000 * 0.5  # largest slope of a 0.5-amplitude 220 Hz tone
    assert d.max() < 1.05 * max_step


def test_iter_blocks_memory_is_bounded(tmp_path):
    # 60 s of 44.1 kHz stereo: decoding it whole would allocate > 20 MB; one block is ~64 KB.
    sr, seconds = 44100, 60
    p = tmp_path / "big.wav"
    rng = np.random.default_rng(2)
    with sf.SoundFile(p, "w", sr, 2, subtype="PCM_16") as f:
        for _ in range(seconds):
            f.write((0.1 * rng.standard_normal((sr, 2))).astype(np.float32))
    tracemalloc.start()
    total = 0
    try:
        for _, b in iter_blocks(p, block_seconds=1.0):
            total += len(b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(total - seconds * 16000) <= 1
    whole_bytes = seconds * sr * 2 * 4
    assert peak < 3_000_000 < whole_bytes / 5, peak


def test_iter_blocks_argument_errors(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(p, sine(440, 0.1, 16000), 16000)
    with pytest.raises(ValueError, match="block_seconds"):
        next(iter_blocks(p, block_seconds=0))
    with pytest.raises(ValueError, match="target_sr"):
        next(iter_blocks(p, target_sr=-1))


# --------------------------------------------------------------------------- ffmpeg fallback

FAKE_FFMPEG = """\
#!{python}
# Stand-in for ffmpeg: decodes "FAKE"-prefixed audio files the way the real one is called.
import sys
import numpy as np, soundfile as sf, soxr, io
args = sys.argv[1:]
src = args[args.index("-i") + 1]
sr = int(args[args.index("-ar") + 1])
assert args[args.index("-ac") + 1] == "1" and "f32le" in args and args[-1] == "pipe:1"
raw = sys.stdin.buffer.read() if src == "pipe:0" else open(src, "rb").read()
if not raw.startswith(b"FAKE"):
    sys.stderr.write("Invalid data found when processing input\\n")
    sys.exit(1)
x, in_sr = sf.read(io.BytesIO(raw[4:]), dtype="float32", always_2d=True)
y = soxr.resample(x.mean(axis=1), in_sr, sr).astype("<f4")
sys.stdout.buffer.write(y.tobytes())
"""

FAKE_FFPROBE = """\
#!{python}
# Stand-in for ffprobe: reports the first audio stream of "FAKE"-prefixed files as JSON.
import io, json, sys
import soundfile as sf
raw = open(sys.argv[-1], "rb").read()
if not raw.startswith(b"FAKE"):
    sys.stderr.write("Invalid data found when processing input\\n")
    sys.exit(1)
info = sf.info(io.BytesIO(raw[4:]))
print(json.dumps({{"streams": [{{"sample_rate": str(info.samplerate), "channels": info.channels,
                                 "duration": "%.6f" % info.duration}}], "format": {{}}}}))
"""


@pytest.fixture
def fake_ffmpeg(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("ffmpeg", FAKE_FFMPEG), ("ffprobe", FAKE_FFPROBE)):
        (bindir / name).write_text(text.format(python=sys.executable))
        (bindir / name).chmod(0o755)
    exe = bindir / "ffmpeg"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return exe


def _fake_encoded(tmp_path, name: str, x: np.ndarray, sr: int) -> Path:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="FLOAT")
    p = tmp_path / name
    p.write_bytes(b"FAKE" + buf.getvalue())
    return p


def test_ffmpeg_fallback_load_and_blocks(tmp_path, fake_ffmpeg):
    x = sine(330, 2.0, 22050)
    p = _fake_encoded(tmp_path, "talk.m4a", x, 22050)
    with pytest.raises(sf.SoundFileError):
        sf.info(p)  # soundfile really cannot read it
    y = load_audio(p)
    ref = load_audio(x, sample_rate=22050)
    np.testing.assert_allclose(y, ref, atol=1e-6)
    joined = np.concatenate([b for _, b in iter_blocks(p, block_seconds=0.3)])
    np.testing.assert_allclose(joined, ref, atol=1e-6)
    np.testing.assert_allclose(load_audio(p.read_bytes()), ref, atol=1e-6)
    info = audio_info(p)  # through ffprobe
    assert (info.sample_rate, info.channels, info.frames) == (22050, 1, 44100)


def test_ffmpeg_failure_is_one_line(tmp_path, fake_ffmpeg):
    p = tmp_path / "junk.mp4"
    p.write_bytes(b"junk" * 100)
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert_one_line(ei.value, str(p), "ffmpeg could not decode", "Invalid data")
    with pytest.raises(AudioError, match="ffmpeg could not decode"):
        list(iter_blocks(p))
    with pytest.raises(AudioError) as ei:
        audio_info(p)
    assert_one_line(ei.value, str(p), "ffprobe could not read it", "Invalid data")


# --------------------------------------------------------------------------- import weight


def test_modules_do_not_import_funasr_or_torch():
    # Load the modules under a bare package (skipping the plugin's registering __init__).
    code = textwrap.dedent(f"""
        import sys, types
        pkg = types.ModuleType("funasr_clsr"); pkg.__path__ = [{str(REPO / 'funasr_clsr')!r}]
        sys.modules["funasr_clsr"] = pkg
        import funasr_clsr.audio, funasr_clsr.retrieval
        import funasr_clsr.retrieval.segmentation, funasr_clsr.retrieval.index
        bad = [m for m in ("funasr", "torch", "librosa", "faiss") if m in sys.modules]
        print(",".join(bad))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("rate", [1, 3, 100, 3999])
def test_a_header_rate_far_below_speech_is_refused_not_resampled_into_hours(tmp_path, rate):
    p = tmp_path / f"r{rate}.wav"
    sf.write(p, np.zeros(4000, np.float32), rate)  # 8 KB of int16 that a 1 Hz header makes 66 minutes long
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert_one_line(ei.value, str(p), f"sample rate {rate} Hz is below 4000 Hz")


@pytest.mark.parametrize("samples", [1, 2, 399])
def test_a_few_samples_are_refused(tmp_path, samples):
    p = tmp_path / "few.wav"
    sf.write(p, np.full(samples, 0.1, np.float32), 16000)
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert_one_line(ei.value, str(p), "shorter than one 25 ms analysis window")
    sf.write(p, np.full(400, 0.1, np.float32), 16000)
    assert len(load_audio(p)) == 400  # one window is enough
    sf.write(p, np.full(2000, 0.1, np.float32), 4000)
    assert len(load_audio(p)) == 8000  # 4 kHz is allowed


def test_pause_cuts_split_long_input_into_even_pieces_at_its_pauses():
    from funasr_clsr.audio import pause_cuts

    sr = 16000
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(sr * 30)).astype(np.float32)
    x[int(15.5 * sr):int(15.8 * sr)] = 0.0  # a pause near the middle, where the one cut belongs
    cuts = pause_cuts(x, sr, max_seconds=20)
    assert cuts[0] == 0 and cuts[-1] == len(x) and len(cuts) == 3
    assert 15.5 * sr <= cuts[1] < 15.8 * sr
    # no pause: three even pieces of 10 s, each cut within 30 % of a piece from its even place
    y = (0.1 * rng.standard_normal(sr * 30)).astype(np.float32)
    cuts = pause_cuts(y, sr, max_seconds=12)
    assert len(cuts) == 4 and all(abs(c - i * 10 * sr) <= 3 * sr for i, c in enumerate(cuts))
    assert pause_cuts(y[:sr * 12], sr, max_seconds=12) == [0, sr * 12]  # short enough: one piece
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        pause_cuts(y, sr, max_seconds=0)
    with pytest.raises(ValueError, match="search must be in"):
        pause_cuts(y, sr, max_seconds=12, search=0.5)

"""Audio input for CLSR: decode, down-mix, resample, validate; stream long files in blocks.

Everything here returns mono float32 in [-1, 1] at ``target_sr`` (16 kHz for Paraformer).
Files are read with soundfile (libsndfile: wav, flac, ogg, mp3, aiff, ...); anything libsndfile
cannot read is handed to an ``ffmpeg`` subprocess when one is on PATH. Resampling uses soxr
(librosa falls back for whole-file loads only). No funasr/torch imports: this module is used by
the model and by the retrieval CLI, and must stay cheap to import.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence, Union

import numpy as np
import soundfile as sf

__all__ = [
    "AudioError",
    "AudioFileNotFoundError",
    "AudioInfo",
    "AudioSource",
    "SILENCE_PEAK",
    "audio_info",
    "is_silent",
    "iter_blocks",
    "load_audio",
    "pause_cuts",
    "resample",
]

AudioSource = Union[str, os.PathLike, np.ndarray, Sequence[float], bytes, bytearray, IO[bytes]]

#: Peak amplitude below which audio counts as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4


class AudioError(ValueError):
    """Audio that cannot be used; the message is one line naming the source and the problem."""


class AudioFileNotFoundError(FileNotFoundError):
    """A missing audio file (a FileNotFoundError, so ``except FileNotFoundError`` catches it)."""

    def __init__(self, path: str):
        self.message = f"{path}: audio file not found"
        super().__init__(2, self.message)  # errno ENOENT
        self.filename = path

    def __str__(self) -> str:  # OSError would print "[Errno 2] ...: 'path'"
        return self.message

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.filename,))


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float
    sample_rate: int
    channels: int
    frames: int


# --------------------------------------------------------------------------- helpers


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _check_rate(value, what: str) -> int:
    try:
        rate = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive integer, got {value!r}") from None
    if rate <= 0 or rate != value:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return rate


def _downmix(data: np.ndarray) -> np.ndarray:
    """(samples, channels) -> (samples,) by mean; mean keeps the [-1, 1] range."""
    if data.ndim == 1:
        return data
    if data.shape[1] == 1:
        return data[:, 0]
    return data.mean(axis=1, dtype=np.float32)


def _to_float32(data: np.ndarray, name: str) -> np.ndarray:
    """Scale integer PCM to [-1, 1]; floats are taken as already scaled."""
    kind = data.dtype.kind
    if kind == "f":
        return data.astype(np.float32, copy=False)
    if kind == "i":
        scale = float(2 ** (8 * data.dtype.itemsize - 1))
        return (data.astype(np.float64) / scale).astype(np.float32)
    if kind == "u":  # unsigned PCM (8-bit wav): centre on zero
        half = float(2 ** (8 * data.dtype.itemsize - 1))
        return ((data.astype(np.float64) - half) / half).astype(np.float32)
    raise AudioError(f"{name}: unsupported sample dtype {data.dtype} (expected int or float PCM)")


def _check_finite(x: np.ndarray, name: str, offset: int = 0, sr: int | None = None) -> None:
    if not np.isfinite(x).all():
        first = int(np.flatnonzero(~np.isfinite(x))[0]) + offset
        where = f"sample {first}" + (f" ({first / sr:.3f} s)" if sr else "")
        raise AudioError(f"{name}: audio contains NaN/inf samples (first at {where})")


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono float32 audio (soxr HQ; librosa if soxr is missing)."""
    if orig_sr == target_sr or x.size == 0:
        return x.astype(np.float32, copy=False)
    try:
        import soxr
    except ImportError:  # pragma: no cover - soxr ships with librosa >= 0.10
        import librosa

        return librosa.resample(x, orig_sr=orig_sr, target_sr=target_sr).astype(np.float32)
    return soxr.resample(x, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def pause_cuts(x: np.ndarray, sr: int, max_seconds: float, search: float = 0.3) -> list[int]:
    """Sample boundaries ``[0, ..., len(x)]`` that cut ``x`` into pieces of about ``max_seconds``.

    ``ceil(duration / max_seconds)`` equal pieces, each inner cut moved to the quietest 10 ms
    frame within ``search`` of a piece's length around its even position, so that words stay
    whole where a pause is near. Input no longer than ``max_seconds`` is one piece.
    """
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if not 0 <= search < 0.5:  # below half a piece, so that every piece keeps at least 0.4 of its length
        raise ValueError(f"search must be in [0, 0.5), got {search}")
    x = np.asarray(x, dtype=np.float32)
    hop = max(1, sr // 100)
    frames = len(x) // hop
    count = int(np.ceil(len(x) / (max_seconds * sr)))
    if count <= 1 or frames < 2 * count:
        return [0, len(x)]
    energy = np.square(x[:frames * hop].reshape(frames, hop)).mean(1)
    span = frames / count
    reach = max(1, int(search * span))
    cuts = [0]
    for i in range(1, count):
        centre = int(round(i * span))
        lo, hi = max(cuts[-1] // hop + 1, centre - reach), min(frames - 1, centre + reach)
        cuts.append(hop * (lo + int(np.argmin(energy[lo:hi + 1]))) if hi >= lo else hop * centre)
    return cuts + [len(x)]


def is_silent(x: np.ndarray, threshold: float = SILENCE_PEAK) -> bool:
    """True when the peak absolute amplitude is below ``threshold`` (or there are no samples)."""
    x = np.asarray(x)
    return x.size == 0 or float(np.max(np.abs(x))) < threshold


def _last_line(stderr: bytes, rc: int) -> str:
    """The last stderr line of a failed subprocess (its actual complaint), else its exit code."""
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return _one_line(lines[-1]) if lines else f"exit code {rc}"


def _ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


def _ffmpeg_cmd(exe: str, inp: str, target_sr: int) -> list[str]:
    # ffmpeg down-mixes (-ac 1) and resamples (-ar) itself, and emits raw float32 on stdout.
    return [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", inp,
            "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(target_sr),
            "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]


def _ffmpeg_decode(src: str | bytes, name: str, target_sr: int, exe: str) -> np.ndarray:
    inp = "pipe:0" if isinstance(src, bytes) else src
    try:
        proc = subprocess.run(_ffmpeg_cmd(exe, inp, target_sr),
                              input=src if isinstance(src, bytes) else None,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as e:
        raise AudioError(f"{name}: could not run ffmpeg ({_one_line(e)})") from None
    if proc.returncode != 0:
        raise AudioError(f"{name}: ffmpeg could not decode it ({_last_line(proc.stderr, proc.returncode)})")
    usable = len(proc.stdout) - len(proc.stdout) % 4
    return np.frombuffer(proc.stdout[:usable], dtype="<f4").astype(np.float32)


# Suffixes libsndfile reads besides its format names (sf.available_formats()).
_SNDFILE_SUFFIXES = {"WAVE", "OGA", "OPUS", "AIF", "AIFC", "SND", "SPH", "MAT"}


def _sf_reason(err: Exception) -> str:
    """libsndfile's own reason, without soundfile's "Error opening '<path>':" prefix."""
    return _one_line(getattr(err, "error_string", None) or err)


def _undecodable(name: str, suffix: str, err: Exception) -> AudioError:
    """The error for input libsndfile rejects when no ffmpeg is available."""
    fmt = suffix.lstrip(".").upper()
    reason = _sf_reason(err)
    if fmt and (fmt in sf.available_formats() or fmt in _SNDFILE_SUFFIXES):
        return AudioError(f"{name}: not a valid {fmt} file: corrupt, truncated or not audio ({reason})")
    what = f"'{suffix}' files" if suffix else "this input"
    return AudioError(f"{name}: soundfile cannot decode {what} ({reason}) and ffmpeg is not on PATH; "
                      "install ffmpeg or convert it to wav/flac")


# Telephone speech is 8 kHz: a rate far below it is a damaged header (a 1 Hz header makes 8 KB of bytes
# "decode" as over an hour of audio), and less than one 25 ms analysis window holds no frame to encode.
MIN_SOURCE_RATE = 4000
MIN_AUDIO_SECONDS = 0.025


def check_speech_header(name: str, sample_rate: int, frames: int) -> None:
    """Refuse, in one line, a file whose rate or length cannot be speech: no samples, a rate far
    below telephone speech, less than one analysis window. Every reader runs it (load_audio, the
    streaming indexer before it reads a window, the server on an upload's header)."""
    if frames == 0:
        raise AudioError(f"{name}: empty audio (zero samples)")
    if sample_rate < MIN_SOURCE_RATE:
        raise AudioError(f"{name}: sample rate {sample_rate} Hz is below {MIN_SOURCE_RATE} Hz, not speech audio "
                         "(a damaged header?)")
    if frames < MIN_AUDIO_SECONDS * sample_rate:
        raise AudioError(f"{name}: {frames} samples ({1000 * frames / sample_rate:.1f} ms) is shorter than one "
                         f"{1000 * MIN_AUDIO_SECONDS:g} ms analysis window")


def _finish(x: np.ndarray, name: str, sr: int, target_sr: int, min_seconds: float,
            decoded: bool = False) -> np.ndarray:
    """``decoded``: samples read from a file or bytes, whose header and length are checked as speech."""
    if decoded:
        check_speech_header(name, sr, x.size)
    elif x.size == 0:
        raise AudioError(f"{name}: empty audio (zero samples)")
    _check_finite(x, name, sr=sr)
    y = resample(x, sr, target_sr)
    if min_seconds > 0 and y.size < min_seconds * target_sr:
        raise AudioError(f"{name}: audio is {y.size / target_sr:.3f} s, shorter than the minimum "
                         f"{min_seconds:g} s")
    return np.ascontiguousarray(y, dtype=np.float32)


def _array_to_mono(data: np.ndarray, name: str) -> np.ndarray:
    if data.ndim == 0:
        raise AudioError(f"{name}: expected a 1-d or 2-d array of samples, got a scalar")
    if data.ndim > 2:
        raise AudioError(f"{name}: expected a 1-d or 2-d array of samples, got shape {data.shape}")
    if data.dtype.kind in "bcOUS":
        raise AudioError(f"{name}: unsupported sample dtype {data.dtype}")
    data = _to_float32(data, name)
    if data.ndim == 2:
        # The smaller dimension is the channel axis: (samples, channels) or (channels, samples).
        if data.shape[0] < data.shape[1]:
            data = data.T
        data = _downmix(data)
    return data


# --------------------------------------------------------------------------- public API


def load_audio(
    src: AudioSource,
    sample_rate: int | None = None,
    target_sr: int = 16000,
    min_seconds: float = 0.0,
    name: str | None = None,
) -> np.ndarray:
    """Decode ``src`` to mono float32 at ``target_sr``.

    ``src`` is a path (anything soundfile reads, else ffmpeg when on PATH), a numpy array or
    list of samples (``sample_rate`` gives its rate, default ``target_sr``; 2-d arrays may be
    (samples, channels) or (channels, samples)), or the bytes / a binary file object of an
    encoded file. ``name`` labels arrays/bytes in error messages. Silent audio is returned as is
    (see :func:`is_silent`); empty, non-finite, undecodable or too-short audio raises
    :class:`AudioError`, a missing file :class:`AudioFileNotFoundError`.
    """
    target_sr = _check_rate(target_sr, "target_sr")
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")

    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        label = name or path
        if not os.path.exists(path):
            raise AudioFileNotFoundError(path)
        if os.path.isdir(path):
            raise AudioError(f"{label}: is a directory, not an audio file")
        if sample_rate is not None:
            _check_rate(sample_rate, "sample_rate")
        try:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as e:
            exe = _ffmpeg()
            if exe is None:
                raise _undecodable(label, Path(path).suffix.lower(), e) from None
            x = _ffmpeg_decode(path, label, target_sr, exe)
            return _finish(x, label, target_sr, target_sr, min_seconds, decoded=True)
        if sample_rate is not None and int(sample_rate) != sr:
            warnings.warn(f"{label}: sample_rate={sample_rate} ignored; the file header says {sr} Hz",
                          stacklevel=2)
        return _finish(_downmix(data), label, sr, target_sr, min_seconds, decoded=True)

    if isinstance(src, (bytes, bytearray, memoryview)) or hasattr(src, "read"):
        label = name or (getattr(src, "name", None) if hasattr(src, "read") else None) or "<bytes>"
        raw = bytes(src) if not hasattr(src, "read") else src.read()
        if not isinstance(raw, (bytes, bytearray)):
            raise AudioError(f"{label}: file object must be opened in binary mode")
        if len(raw) == 0:
            raise AudioError(f"{label}: empty input (zero bytes)")
        try:
            data, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as e:
            exe = _ffmpeg()
            if exe is None:
                raise _undecodable(label, "", e) from None
            x = _ffmpeg_decode(bytes(raw), label, target_sr, exe)
            return _finish(x, label, target_sr, target_sr, min_seconds, decoded=True)
        return _finish(_downmix(data), label, sr, target_sr, min_seconds, decoded=True)

    label = name or "<array>"
    if isinstance(src, np.ndarray):
        data = src
    elif isinstance(src, (list, tuple)):
        try:  # Python numbers are sample values, not integer PCM: read them as floats
            data = np.asarray(src, dtype=np.float64)
        except (TypeError, ValueError):
            raise AudioError(f"{label}: list is not a (ragged-free) sequence of numbers") from None
    else:
        raise TypeError(f"unsupported audio source type {type(src).__name__}: expected a path, "
                        "bytes, a binary file object, a numpy array or a list of samples")
    sr = _check_rate(sample_rate if sample_rate is not None else target_sr, "sample_rate")
    return _finish(_array_to_mono(data, label), label, sr, target_sr, min_seconds)


def _ffprobe_info(path: str) -> AudioInfo | None:
    exe = shutil.which("ffprobe")
    if exe is None:
        return None
    cmd = [exe, "-v", "error", "-select_streams", "a:0",
           "-show_entries", "stream=sample_rate,channels,duration:format=duration", "-of", "json", path]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise AudioError(f"{path}: ffprobe could not read it ({_last_line(proc.stderr, proc.returncode)})")
    try:
        meta = json.loads(proc.stdout)
        stream = meta["streams"][0]
        sr = int(stream["sample_rate"])
        channels = int(stream["channels"])
        dur = stream.get("duration") or meta.get("format", {}).get("duration")
        duration = float(dur)
    except (ValueError, KeyError, IndexError, TypeError):
        raise AudioError(f"{path}: ffprobe found no audio stream with a known duration") from None
    frames = int(round(duration * sr))
    return AudioInfo(duration_s=frames / sr, sample_rate=sr, channels=channels, frames=frames)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Duration, rate, channels and frame count from the header, without decoding samples.

    For formats libsndfile does not read, ``ffprobe`` is used when on PATH (its frame count is
    derived from the container duration, so it may be approximate).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioFileNotFoundError(path)
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    try:
        info = sf.info(path)
    except (sf.SoundFileError, RuntimeError) as e:
        probed = _ffprobe_info(path) if _ffmpeg() else None
        if probed is None:
            raise _undecodable(path, Path(path).suffix.lower(), e) from None
        return probed
    return AudioInfo(duration_s=info.frames / info.samplerate, sample_rate=int(info.samplerate),
                     channels=int(info.channels), frames=int(info.frames))


class _Rechunker:
    """Collects variable-size pieces and hands out fixed-size blocks (memory: one block + piece)."""

    def __init__(self, size: int):
        self.size = size
        self.parts: list[np.ndarray] = []
        self.count = 0

    def push(self, x: np.ndarray) -> Iterator[np.ndarray]:
        if x.size:
            self.parts.append(x)
            self.count += x.size
        while self.count >= self.size:
            buf = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
            yield np.ascontiguousarray(buf[: self.size])
            rest = buf[self.size:]
            self.parts = [rest] if rest.size else []
            self.count = rest.size

    def flush(self) -> Iterator[np.ndarray]:
        if self.count:
            yield np.ascontiguousarray(np.concatenate(self.parts))
        self.parts, self.count = [], 0


def _iter_ffmpeg(path: str, block: int, target_sr: int, exe: str) -> Iterator[np.ndarray]:
    """Stream raw float32 from ffmpeg's stdout, ``block`` samples at a time."""
    with tempfile.TemporaryFile() as errf:  # a file, so a chatty stderr cannot block the pipe
        proc = subprocess.Popen(_ffmpeg_cmd(exe, path, target_sr), stdout=subprocess.PIPE, stderr=errf)
        try:
            tail = b""
            while True:
                chunk = proc.stdout.read(block * 4)
                if not chunk:
                    break
                chunk = tail + chunk
                usable = len(chunk) - len(chunk) % 4
                tail = chunk[usable:]
                yield np.frombuffer(chunk[:usable], dtype="<f4").astype(np.float32)
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if rc != 0:
            errf.seek(0)
            raise AudioError(f"{path}: ffmpeg could not decode it ({_last_line(errf.read(), rc)})")


def iter_blocks(
    path: str | os.PathLike,
    block_seconds: float = 60.0,
    target_sr: int = 16000,
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream a (long) file as ``(start_sample, block)`` pairs, mono float32 at ``target_sr``.

    ``start_sample`` counts samples at ``target_sr``. Every block holds exactly
    ``round(block_seconds * target_sr)`` samples except the last. Resampling is one streaming
    soxr resampler over the whole file, so the concatenated blocks equal :func:`load_audio` of
    the file and block edges do not click. Memory stays O(block) whatever the file length.
    """
    target_sr = _check_rate(target_sr, "target_sr")
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds}")
    block = max(1, int(round(block_seconds * target_sr)))
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioFileNotFoundError(path)
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")

    try:
        info = sf.info(path)
    except (sf.SoundFileError, RuntimeError) as e:
        exe = _ffmpeg()
        if exe is None:
            raise _undecodable(path, Path(path).suffix.lower(), e) from None
        pieces: Iterator[np.ndarray] = _iter_ffmpeg(path, block, target_sr, exe)
        sr = target_sr
    else:
        sr = int(info.samplerate)
        if info.frames == 0:
            raise AudioError(f"{path}: empty audio (zero samples)")
        # Read roughly one output block of input per step.
        in_block = max(1, int(round(block_seconds * sr)))
        pieces = _iter_soundfile(path, in_block)

    rechunk = _Rechunker(block)
    stream = None
    if sr != target_sr:
        import soxr

        stream = soxr.ResampleStream(sr, target_sr, 1, dtype="float32", quality="HQ")

    start = 0
    n_in = 0
    for piece in pieces:
        _check_finite(piece, path, offset=n_in, sr=sr)
        n_in += piece.size
        out = stream.resample_chunk(piece, last=False) if stream is not None else piece
        for blk in rechunk.push(out):
            yield start, blk
            start += blk.size
    if n_in == 0:
        raise AudioError(f"{path}: empty audio (zero samples)")
    if stream is not None:
        for blk in rechunk.push(stream.resample_chunk(np.zeros(0, np.float32), last=True)):
            yield start, blk
            start += blk.size
    for blk in rechunk.flush():
        yield start, blk
        start += blk.size


def _iter_soundfile(path: str, in_block: int) -> Iterator[np.ndarray]:
    pos = 0
    try:
        with sf.SoundFile(path) as f:
            while True:
                data = f.read(in_block, dtype="float32", always_2d=True)
                if len(data) == 0:
                    break
                pos += len(data)
                yield np.ascontiguousarray(_downmix(data), dtype=np.float32)
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(f"{path}: corrupt or truncated audio after {pos} samples "
                         f"({_sf_reason(e)})") from None

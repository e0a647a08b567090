"""Long recordings on the model side: fixed windows streamed from a file, scoring, top-k, clips.

A neutral module (numpy, soundfile and :mod:`funasr_clsr.audio` only; torch only inside
:func:`retrieve`) so that the model (``CLSR.inference(question=...)``) and the retrieval
package can both use it while the imports keep pointing one way:
``bin -> retrieval -> models -> longform -> audio``.

Window boundaries are integer sample positions on the ``sr`` (16 kHz) timeline, so a window's
times are exact: ``start = start_sample / sr``. Windows tile the recording without gaps; a
last window shorter than ``min_last_s`` (default a quarter window) is merged into the previous
one, and a recording shorter than one window is one window.
"""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf

from funasr_clsr.audio import AudioError, is_silent, iter_blocks, load_audio

__all__ = [
    "check_questions",
    "check_top_k",
    "cosine_scores",
    "encode_segments",
    "encode_windows",
    "iter_windows",
    "model_rate",
    "retrieve",
    "safe_name",
    "top_k_indices",
    "window_bounds",
    "window_params",
    "windows_from_blocks",
    "write_clip",
]

logger = logging.getLogger(__name__)

#: Longest question accepted, in characters (a text encoder truncates at 512 tokens anyway).
MAX_QUESTION_CHARS = 4000


# --------------------------------------------------------------------------- windows


def window_params(sr: int, window_s: float, overlap_s: float,
                  min_last_s: float | None) -> tuple[int, int, int]:
    """Validate window settings and convert them to (window, stride, min_last) in samples."""
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sr must be a positive integer, got {sr!r}")
    if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
    if not (isinstance(overlap_s, (int, float)) and math.isfinite(overlap_s) and overlap_s >= 0):
        raise ValueError(f"overlap_s must be >= 0 seconds, got {overlap_s!r}")
    if overlap_s >= window_s:
        raise ValueError(f"overlap_s ({overlap_s:g}) must be smaller than window_s ({window_s:g})")
    if min_last_s is None:
        min_last_s = window_s / 4
    if not (isinstance(min_last_s, (int, float)) and 0 <= min_last_s <= window_s):
        raise ValueError(f"min_last_s must be between 0 and window_s ({window_s:g}), got {min_last_s!r}")
    win = int(round(window_s * sr))
    hop = win - int(round(overlap_s * sr))
    if win < 1 or hop < 1:
        raise ValueError(f"window_s={window_s:g}/overlap_s={overlap_s:g} are below one sample at {sr} Hz")
    return win, hop, int(round(min_last_s * sr))


def window_bounds(total_samples: int, sr: int = 16000, window_s: float = 40.0, overlap_s: float = 0.0,
                  min_last_s: float | None = None) -> list[tuple[int, int]]:
    """``[(start_sample, end_sample), ...]`` of the fixed windows over ``total_samples``."""
    if isinstance(total_samples, bool) or not isinstance(total_samples, (int, np.integer)):
        raise ValueError(f"total_samples must be an integer, got {total_samples!r}")
    if total_samples <= 0:
        raise ValueError(f"total_samples must be > 0, got {total_samples}")
    win, hop, min_last = window_params(sr, window_s, overlap_s, min_last_s)
    bounds: list[list[int]] = []
    start = 0
    while True:
        end = min(start + win, total_samples)
        bounds.append([start, end])
        if end >= total_samples:
            break
        start += hop
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_last:
        bounds.pop()
        bounds[-1][1] = int(total_samples)
    return [(int(s), int(e)) for s, e in bounds]


def windows_from_blocks(blocks: Iterable[np.ndarray], win: int, hop: int,
                        min_last: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Cut a stream of consecutive sample blocks into the :func:`window_bounds` windows.

    Yields ``(start_sample, end_sample, audio)``. Memory stays about one window plus one block
    (the overlap is carried between windows), whatever the length of the stream.
    """
    buf = np.zeros(0, dtype=np.float32)  # samples [buf_start, buf_start + buf.size)
    buf_start = 0
    k_start = 0  # start of the next window
    exhausted = False
    it = iter(blocks)
    while True:
        # Window k is final once we know whether another window follows and, if so, whether it
        # is a short tail to merge into k: that needs samples up to max(k + win, next + min_last)
        # (+1 to tell "ends exactly here" from "continues").
        need = max(k_start + win, k_start + hop + min_last) + 1
        while not exhausted and buf_start + buf.size < need:
            try:
                b = next(it)
            except StopIteration:
                exhausted = True
                break
            buf = np.concatenate([buf, b]) if buf.size else b
        total = buf_start + buf.size if exhausted else None
        if total is not None and (total == 0 or k_start >= total):
            return
        end = k_start + win
        last = total is not None and end >= total
        if not last and total is not None:
            if total - (k_start + hop) < min_last and k_start + hop + win >= total:
                end, last = total, True  # the next window would be the short tail: merge it
        if last:
            end = total
        yield k_start, end, buf[k_start - buf_start:end - buf_start].copy()
        if last:
            return
        k_start += hop
        buf = buf[k_start - buf_start:]
        buf_start = k_start


def iter_windows(source: Any, window_s: float = 40.0, overlap_s: float = 0.0, sr: int = 16000,
                 block_seconds: float = 60.0, min_last_s: float | None = None,
                 sample_rate: int | None = None) -> Iterator[dict[str, Any]]:
    """Fixed windows of one recording as dicts ``{start, end, start_sample, end_sample, audio}``.

    A path is streamed with :func:`~funasr_clsr.audio.iter_blocks` (bounded memory); an array
    (at ``sample_rate``, default ``sr``) is converted with :func:`~funasr_clsr.audio.load_audio`.
    """
    win, hop, min_last = window_params(sr, window_s, overlap_s, min_last_s)
    if isinstance(source, (str, os.PathLike)):
        blocks: Iterable[np.ndarray] = (b for _, b in iter_blocks(source, block_seconds, target_sr=sr))
    else:
        blocks = [load_audio(source, sample_rate=sample_rate, target_sr=sr)]
    for s, e, audio in windows_from_blocks(blocks, win, hop, min_last):
        yield {"start": s / sr, "end": e / sr, "start_sample": s, "end_sample": e, "audio": audio}


# --------------------------------------------------------------------------- scoring


def cosine_scores(queries: Any, vectors: Any) -> np.ndarray:
    """(Q, N) cosine similarities between query rows and segment rows."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    v = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if v.size == 0:
        return np.zeros((q.shape[0], 0), dtype=np.float32)
    if q.shape[1] != v.shape[1]:
        raise ValueError(f"query vectors are {q.shape[1]}-d, segment vectors {v.shape[1]}-d")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return q @ v.T


def top_k_indices(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` best scores, best first (ties: earlier segment first); all if k > n."""
    s = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((np.arange(s.size), -s))  # primary key -score, then index
    return [int(i) for i in order[:k]]


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    return int(top_k)


def check_questions(question: Any) -> list[str]:
    """One question or a list of them, each a non-empty string of at most MAX_QUESTION_CHARS."""
    if question is None:
        raise ValueError("no question given")
    if isinstance(question, str):
        questions = [question]
    elif isinstance(question, (bytes, bytearray, dict)) or not hasattr(question, "__iter__"):
        raise ValueError(f"the question is a {type(question).__name__}: give a string or a list of strings")
    else:
        questions = list(question)
    if not questions:
        raise ValueError("no question given (empty list)")
    for i, q in enumerate(questions):
        if not isinstance(q, str):
            raise ValueError(f"question {i + 1} is a {type(q).__name__}, not a string")
        if not q.strip():
            raise ValueError(f"question {i + 1} is empty")
        try:
            q.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: no tokenizer can take it
            raise ValueError(f"question {i + 1} is not valid Unicode text (character {e.start}: "
                             f"{q[e.start]!r})") from None
        if len(q) > MAX_QUESTION_CHARS:
            raise ValueError(f"question {i + 1} is {len(q)} characters long, more than the "
                             f"{MAX_QUESTION_CHARS} accepted; shorten it")
    return questions


# --------------------------------------------------------------------------- clips

_CLIP_SUBTYPES = {"PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", "DOUBLE"}


def safe_name(text: str, limit: int = 60) -> str:
    """A file-name-safe version of a key/recording id."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "rec"
    return out[:limit]


def write_clip(source: Any, start: float, end: float, out_path: str | os.PathLike,
               sr: int = 16000) -> Path:
    """Write ``[start, end)`` seconds of ``source`` as a wav; returns the path.

    For a file soundfile can seek in, only those frames are read, at the file's own rate and
    channels (so the clip is the original audio); other files are streamed and cut at ``sr``;
    arrays are taken to be at ``sr``.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise ValueError(f"clip times {start}..{end} are not a valid span")
    tmp = out.with_name(out.name + ".partial")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with sf.SoundFile(path) as f:
                a = int(round(start * f.samplerate))
                b = min(int(round(end * f.samplerate)), f.frames)
                if b <= a:
                    raise AudioError(f"{path}: clip {start:.3f}-{end:.3f} s lies beyond the end of the "
                                     f"recording ({f.frames / f.samplerate:.3f} s)")
                f.seek(a)
                data = f.read(b - a, dtype="float32", always_2d=True)
                subtype = f.subtype if f.subtype in _CLIP_SUBTYPES else "PCM_16"
                rate = f.samplerate
        except (sf.SoundFileError, RuntimeError):
            data, rate, subtype = _cut_streamed(path, start, end, sr), sr, "PCM_16"
        if len(data) == 0:
            raise AudioError(f"{path}: no samples between {start:.3f} and {end:.3f} s")
    else:
        x = load_audio(source, target_sr=sr)
        data = x[int(round(start * sr)):int(round(end * sr))]
        rate, subtype = sr, "FLOAT"
        if data.size == 0:
            raise AudioError(f"<array>: no samples between {start:.3f} and {end:.3f} s")
    sf.write(tmp, data, rate, subtype=subtype, format="WAV")
    os.replace(tmp, out)
    return out


def _cut_streamed(path: str, start: float, end: float, sr: int) -> np.ndarray:
    """Samples [start, end) of a file soundfile cannot seek in (decoded through ffmpeg)."""
    a, b = int(round(start * sr)), int(round(end * sr))
    parts = []
    for pos, block in iter_blocks(path, 60.0, target_sr=sr):
        lo, hi = max(a, pos), min(b, pos + block.size)
        if hi > lo:
            parts.append(block[lo - pos:hi - pos])
        if pos + block.size >= b:
            break
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# --------------------------------------------------------------------------- retrieval


def encode_segments(model: Any, segments: Iterable[dict[str, Any]], batch_size: int = 8,
                    name: str = "<audio>", progress: Any = None
                    ) -> tuple[list[dict[str, Any]], np.ndarray, list[str]]:
    """Encode a stream of segments (dicts with ``audio`` at the model's rate) in batches.

    Returns (segments without their audio, (N, D) vectors, transcripts). Only one batch of
    audio is held at a time. Silent segments are left out (one warning per recording): their
    vectors carry no content and would come back for every question. ``progress`` is called
    with the number of segments done at each step.
    """
    kept: list[dict[str, Any]] = []
    vecs: list[np.ndarray] = []
    texts: list[str] = []
    pending: list[dict[str, Any]] = []
    silent = 0

    def flush() -> None:
        if not pending:
            return
        v, t = model.encode_speech([w["audio"] for w in pending], batch_size=batch_size, return_text=True)
        vecs.append(v.detach().cpu().float().numpy() if hasattr(v, "detach") else np.asarray(v, np.float32))
        texts.extend(t)
        for w in pending:
            w.pop("audio", None)
            kept.append(w)
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for seg in segments:
        if is_silent(seg["audio"]):
            silent += 1
            if progress is not None:
                progress(1)
            continue
        pending.append(seg)
        if len(pending) >= batch_size:
            flush()
    flush()
    if silent:
        total = silent + len(kept)
        if kept:
            logger.warning("%s: %d of %d segments are silent and were left out", name, silent, total)
        else:
            logger.warning("%s: the recording is silent (%d segments); nothing to search in it", name, total)
    matrix = np.concatenate(vecs) if vecs else np.zeros((0, 0), np.float32)
    return kept, matrix, texts


def model_rate(model: Any) -> int:
    """The sample rate the model's frontend expects (16 kHz for Paraformer)."""
    return int(getattr(getattr(model, "frontend", None), "fs", 16000) or 16000)


def encode_windows(model: Any, source: Any, window_s: float = 40.0, overlap_s: float = 0.0,
                   batch_size: int = 8, sample_rate: int | None = None, name: str | None = None,
                   progress: Any = None) -> tuple[list[dict[str, Any]], np.ndarray, list[str], float]:
    """:func:`encode_segments` over the fixed windows of one recording, streamed.

    Returns (windows, vectors, transcripts, duration in seconds).
    """
    label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<array>")
    end = [0.0]

    def windows() -> Iterator[dict[str, Any]]:
        for w in iter_windows(source, window_s, overlap_s, sr=model_rate(model), sample_rate=sample_rate):
            end[0] = w["end"]
            yield w

    kept, matrix, texts = encode_segments(model, windows(), batch_size, label, progress)
    return kept, matrix, texts, end[0]


def retrieve(model: Any, data_in: Any, /, key: Sequence[str] | None = None, question: Any = None,
             top_k: int = 3, window_s: float = 40.0, overlap_s: float = 0.0, window_batch_size: int = 8,
             clip_dir: str | os.PathLike | None = None, fs: int | None = None,
             **_: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Answer text questions over long recordings: FunASR's ``generate(input=..., question=...)``.

    ``data_in`` is what FunASR hands to ``inference``: a list of wav paths or sample arrays
    (at ``fs``, default 16 kHz). Each recording is cut into fixed windows, encoded in batches of
    ``window_batch_size`` and scored against every question. Returns FunASR's
    ``(results, meta)``, one result per (recording, question)::

        {"key", "question", "segments": [{"start", "end", "score", "transcript"[, "clip"]}]}

    best first; ``top_k`` larger than the number of windows returns them all. With
    ``clip_dir`` each returned segment is also written there as a wav (``"clip"``). ``model`` and
    ``data_in`` are positional-only: FunASR's kwargs carry a ``model`` entry of their own.
    """
    import time

    t0 = time.perf_counter()
    questions = check_questions(question)
    k = check_top_k(top_k)
    items = [data_in] if isinstance(data_in, (str, os.PathLike, bytes, np.ndarray)) else list(data_in)
    items = [x.detach().cpu().numpy() if hasattr(x, "detach") else x for x in items]
    keys = list(key) if key else [f"rec{i}" for i in range(len(items))]
    if len(keys) != len(items):
        raise ValueError(f"{len(items)} inputs but {len(keys)} keys")
    qvec = model.encode_text(questions, is_query=True)
    qvec = qvec.detach().cpu().float().numpy() if hasattr(qvec, "detach") else np.asarray(qvec, np.float32)
    sr = model_rate(model)
    results: list[dict[str, Any]] = []
    seconds = 0.0
    for item, rec_key in zip(items, keys):
        windows, vecs, texts, duration = encode_windows(
            model, item, window_s, overlap_s, window_batch_size, sample_rate=fs, name=str(rec_key))
        seconds += duration
        clip_src = item
        if clip_dir is not None and not isinstance(item, (str, os.PathLike)):
            clip_src = load_audio(item, sample_rate=fs, target_sr=sr)
        scores = cosine_scores(qvec, vecs) if len(windows) else np.zeros((len(questions), 0))
        if k > len(windows):
            logger.info("%s: top_k=%d but only %d windows; returning all", rec_key, k, len(windows))
        for qi, q in enumerate(questions):
            segments = []
            for rank, i in enumerate(top_k_indices(scores[qi], k), start=1):
                w = windows[i]
                seg = {"start": w["start"], "end": w["end"], "score": float(scores[qi, i]),
                       "transcript": texts[i]}
                if clip_dir is not None:
                    name = f"{safe_name(rec_key)}_q{qi + 1:02d}_r{rank:02d}.wav"
                    seg["clip"] = str(write_clip(clip_src, w["start"], w["end"], Path(clip_dir) / name, sr=sr))
                segments.append(seg)
            results.append({"key": rec_key, "question": q, "segments": segments})
    meta = {"load_data": f"{time.perf_counter() - t0:0.3f}", "batch_data_time": max(seconds, 1e-6)}
    return results, meta

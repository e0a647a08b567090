"""Cutting long recordings into retrieval units: fixed windows or VAD speech segments.

The CLSR paper indexes long recordings as fixed 40 s windows; VAD segmentation (FunASR's
``fsmn-vad``) is the alternative that avoids cutting words. Boundaries are kept in samples so
that times are exact (``start = start_sample / sr``) and windows tile the file without gaps.
funasr is imported only when a VAD model has to be built.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..audio import AudioSource, audio_info, iter_blocks, load_audio
from ..longform import window_bounds, window_params, windows_from_blocks

__all__ = [
    "Segment",
    "VADUnavailableError",
    "fixed_windows",
    "iter_window_audio",
    "merge_speech_regions",
    "segment_recording",
    "stream_segment_audio",
    "vad_segments",
]

logger = logging.getLogger(__name__)


@dataclass
class Segment:
    """One retrieval unit of a recording; ``audio`` (if any) is never serialised."""

    start: float
    end: float
    start_sample: int
    end_sample: int
    audio: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_samples(cls, start_sample: int, end_sample: int, sr: int,
                     audio: np.ndarray | None = None) -> "Segment":
        return cls(start=start_sample / sr, end=end_sample / sr, start_sample=int(start_sample),
                   end_sample=int(end_sample), audio=audio)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def num_samples(self) -> int:
        return self.end_sample - self.start_sample

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end,
                "start_sample": self.start_sample, "end_sample": self.end_sample}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Segment":
        return cls(start=float(d["start"]), end=float(d["end"]),
                   start_sample=int(d["start_sample"]), end_sample=int(d["end_sample"]))


# --------------------------------------------------------------------------- fixed windows
# The windowing arithmetic lives in funasr_clsr.longform, which the model uses too; these
# wrappers keep the Segment-based API of this module.

_window_params = window_params  # kept for callers of the old private name


def fixed_windows(
    total_samples: int,
    sr: int = 16000,
    window_s: float = 40.0,
    overlap_s: float = 0.0,
    min_last_s: float | None = None,
) -> list[Segment]:
    """Fixed windows of ``window_s`` starting every ``window_s - overlap_s`` seconds.

    The windows cover ``[0, total_samples)`` exactly. A last window shorter than ``min_last_s``
    (default a quarter window) is merged into the previous one, which then runs to the end; a
    recording shorter than one window is one segment.
    """
    return [Segment.from_samples(s, e, sr)
            for s, e in window_bounds(total_samples, sr, window_s, overlap_s, min_last_s)]


def iter_window_audio(
    path: str | os.PathLike | np.ndarray,
    window_s: float = 40.0,
    overlap_s: float = 0.0,
    sr: int = 16000,
    block_seconds: float = 60.0,
    min_last_s: float | None = None,
    sample_rate: int | None = None,
) -> Iterator[Segment]:
    """Yield the :func:`fixed_windows` segments of ``path`` with their ``audio`` filled in.

    A path is streamed through :func:`~funasr_clsr.audio.iter_blocks`, so memory stays about one
    window plus one block whatever the length of the file (the overlap is carried between
    windows). An array (at ``sample_rate``, default ``sr``) is loaded and sliced.
    """
    win, hop, min_last = window_params(sr, window_s, overlap_s, min_last_s)
    if isinstance(path, (str, os.PathLike)):
        blocks: Iterable[np.ndarray] = (b for _, b in iter_blocks(path, block_seconds, target_sr=sr))
    else:
        blocks = [load_audio(path, sample_rate=sample_rate, target_sr=sr)]
    for start, end, audio in windows_from_blocks(blocks, win, hop, min_last):
        yield Segment.from_samples(start, end, sr, audio=audio)


# --------------------------------------------------------------------------- VAD


class VADUnavailableError(RuntimeError):
    """No VAD model could be built (offline, model missing); use fixed windows instead."""


def merge_speech_regions(
    regions_ms: Sequence[Sequence[float]],
    max_segment_s: float = 40.0,
    merge_gap_s: float = 0.5,
    sr: int = 16000,
    total_samples: int | None = None,
    min_segment_s: float = 0.0,
) -> list[Segment]:
    """Turn VAD speech regions ``[[beg_ms, end_ms], ...]`` into retrieval segments.

    Regions are sorted, overlapping ones united, neighbours whose silence gap is at most
    ``merge_gap_s`` joined while the result stays within ``max_segment_s``, and any segment
    still longer than ``max_segment_s`` split into equal parts (no tiny tail). Segments shorter
    than ``min_segment_s`` are dropped. ``total_samples`` clips ends to the recording.
    Use ``merge_gap_s=math.inf`` to pack regions greedily up to ``max_segment_s``.
    """
    if not (max_segment_s > 0 and math.isfinite(max_segment_s)):
        raise ValueError(f"max_segment_s must be a positive number of seconds, got {max_segment_s!r}")
    if not merge_gap_s >= 0:
        raise ValueError(f"merge_gap_s must be >= 0, got {merge_gap_s!r}")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sr must be a positive integer, got {sr!r}")

    spans: list[tuple[int, int]] = []
    for i, r in enumerate(regions_ms):
        try:
            beg, end = float(r[0]), float(r[1])
            if len(r) != 2:
                raise ValueError
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"VAD region {i} is not a [beg_ms, end_ms] pair: {r!r}") from None
        if not (math.isfinite(beg) and math.isfinite(end)) or beg < 0 or end < 0:
            # FunASR's streaming mode emits -1 for "not yet known"; only offline output is valid.
            raise ValueError(f"VAD region {i} has a negative or unknown time: {r!r} "
                             "(use offline VAD output, not streaming)")
        if end < beg:
            raise ValueError(f"VAD region {i} ends before it starts: {r!r}")
        s, e = int(round(beg * sr / 1000)), int(round(end * sr / 1000))
        if total_samples is not None:
            s, e = min(s, total_samples), min(e, total_samples)
        if e > s:
            spans.append((s, e))
    spans.sort()

    max_len = int(round(max_segment_s * sr))
    gap = math.inf if math.isinf(merge_gap_s) else int(round(merge_gap_s * sr))
    merged: list[list[int]] = []
    for s, e in spans:
        if merged:
            cur = merged[-1]
            if s <= cur[1]:  # overlapping regions are the same speech
                cur[1] = max(cur[1], e)
                continue
            if s - cur[1] <= gap and max(e, cur[1]) - cur[0] <= max_len:
                cur[1] = max(cur[1], e)
                continue
        merged.append([s, e])

    out: list[Segment] = []
    min_len = int(round(min_segment_s * sr))
    for s, e in merged:
        n = max(1, math.ceil((e - s) / max_len))
        cuts = [s + ((e - s) * j) // n for j in range(n + 1)]
        for a, b in zip(cuts[:-1], cuts[1:]):
            if b - a >= max(min_len, 1):
                out.append(Segment.from_samples(a, b, sr))
    return out


_VAD_CACHE: dict[str, Any] = {}


def _build_vad(model: str, **kwargs) -> Any:
    """Build (once per name) a FunASR VAD AutoModel; funasr is imported only here."""
    if model in _VAD_CACHE:
        return _VAD_CACHE[model]
    try:
        import torch
        from funasr import AutoModel

        # One progress bar per generate() call would flood the log; vad_segments has its own.
        # ncpu: keep the caller's thread count (AutoModel would set 4).
        vad = AutoModel(model=model, disable_update=True, disable_pbar=True,
                        **{"ncpu": torch.get_num_threads(), **kwargs})
    except Exception as e:  # funasr raises many kinds when offline or the model is missing
        msg = " ".join(str(e).split())[:200]
        raise VADUnavailableError(
            f"could not load the VAD model '{model}' ({type(e).__name__}: {msg}); pass "
            "vad_model=<local model dir or AutoModel> or use fixed windows") from None
    _VAD_CACHE[model] = vad
    return vad


def _regions_from_result(res: Any, name: str) -> list[list[float]]:
    """Pull ``[[beg_ms, end_ms], ...]`` out of ``vad.generate()``'s ``[{"value": [...]}]``."""
    if isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], list):
        res = res[0]  # model.inference() returns (results, meta_data)
    if isinstance(res, dict):
        res = [res]
    if not isinstance(res, list) or (res and not isinstance(res[0], dict)) or \
            (res and "value" not in res[0]):
        raise ValueError(f"{name}: unexpected VAD output {str(res)[:120]!r}; "
                         "expected [{'value': [[beg_ms, end_ms], ...]}]")
    regions: list[list[float]] = []
    for item in res:
        regions.extend(item["value"])
    return regions


def vad_segments(
    path_or_array: AudioSource,
    vad_model: Any = None,
    max_segment_s: float = 40.0,
    merge_gap_s: float = 0.5,
    sr: int = 16000,
    sample_rate: int | None = None,
    block_seconds: float = 600.0,
    min_segment_s: float = 0.0,
    with_audio: bool = False,
    progress: bool = False,
    **generate_kwargs: Any,
) -> list[Segment]:
    """Speech segments of ``path_or_array`` from a VAD model, merged/split by :func:`merge_speech_regions`.

    ``vad_model`` is anything with FunASR's ``.generate(input=array) -> [{"value": [[beg_ms,
    end_ms], ...]}]`` (e.g. ``funasr.AutoModel(model="fsmn-vad")``), a model name/directory to
    build one from, or None for ``"fsmn-vad"`` (raises :class:`VADUnavailableError` when it
    cannot be loaded, e.g. offline). A path is fed to the VAD ``block_seconds`` at a time, so
    long recordings never sit in memory whole; speech cut at a block edge is re-joined by the
    merge step (gap 0). ``with_audio`` fills ``Segment.audio`` (a second streaming pass for paths);
    ``progress`` shows a tqdm bar over the blocks of a path.
    """
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds}")
    if vad_model is None or isinstance(vad_model, (str, os.PathLike)):
        vad_model = _build_vad(os.fspath(vad_model) if vad_model is not None else "fsmn-vad")
    if not hasattr(vad_model, "generate"):
        raise TypeError(f"vad_model must have a .generate() method, got {type(vad_model).__name__}")

    is_path = isinstance(path_or_array, (str, os.PathLike))
    name = os.fspath(path_or_array) if is_path else "<array>"
    regions: list[list[float]] = []
    total = 0
    if is_path:
        pieces: Iterable[tuple[int, np.ndarray]] = iter_blocks(path_or_array, block_seconds, target_sr=sr)
        whole = None
        if progress:
            from tqdm import tqdm

            n_blocks = math.ceil(audio_info(path_or_array).duration_s / block_seconds)
            pieces = tqdm(pieces, total=n_blocks, desc=f"VAD {os.path.basename(name)}", unit="block")
    else:
        whole = load_audio(path_or_array, sample_rate=sample_rate, target_sr=sr)
        pieces = [(0, whole)]
    for start, block in pieces:
        offset_ms = start * 1000.0 / sr
        res = vad_model.generate(input=block, **generate_kwargs)
        for beg, end in _regions_from_result(res, name):
            if beg < 0 or end < 0:
                raise ValueError(f"{name}: VAD returned a streaming-style region {[beg, end]}; "
                                 "use the offline VAD model")
            regions.append([beg + offset_ms, end + offset_ms])
        total = start + block.size
    segs = merge_speech_regions(regions, max_segment_s=max_segment_s, merge_gap_s=merge_gap_s,
                                sr=sr, total_samples=total, min_segment_s=min_segment_s)
    logger.info("%s: %d VAD regions -> %d segments", name, len(regions), len(segs))
    if with_audio and segs:
        if whole is not None:
            for s in segs:
                s.audio = whole[s.start_sample:s.end_sample].copy()
        else:
            _fill_audio(path_or_array, segs, sr, block_seconds)
    return segs


def stream_segment_audio(path: str | os.PathLike, segs: Sequence[Segment], sr: int = 16000,
                         block_seconds: float = 60.0) -> Iterator[Segment]:
    """Fill in and yield sorted, non-overlapping ``segs`` one by one in one streaming pass over ``path``
    (memory: about one segment plus one block)."""
    i = 0
    parts: list[np.ndarray] = []
    if not segs:
        return
    for start, block in iter_blocks(path, block_seconds, target_sr=sr):
        stop = start + block.size
        while i < len(segs):
            s = segs[i]
            a, b = max(s.start_sample, start), min(s.end_sample, stop)
            if b > a:
                parts.append(block[a - start:b - start])
            if s.end_sample <= stop:
                s.audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
                parts = []
                i += 1
                yield s
            else:
                break
        if i >= len(segs):
            return


def _fill_audio(path: str | os.PathLike, segs: list[Segment], sr: int, block_seconds: float) -> None:
    """Attach audio to sorted, non-overlapping ``segs`` in one streaming pass."""
    for _ in stream_segment_audio(path, segs, sr, block_seconds):
        pass


def segment_recording(path: str | os.PathLike, segmenter: str = "fixed", window_s: float = 40.0,
                      overlap_s: float = 0.0, sr: int = 16000, vad_model: Any = None,
                      ) -> tuple[Iterator[dict[str, Any]], int]:
    """The segments of a recording with their audio, streamed (one segment in memory at a time), and
    their count: ``fixed`` windows of ``window_s`` (``overlap_s``), or ``vad`` speech regions of at most
    ``window_s`` (:func:`vad_segments`). What the indexer encodes, in one process or on Ray."""
    if segmenter == "fixed":
        info = audio_info(path)
        total = int(round(info.frames * sr / info.sample_rate))
        n = len(window_bounds(max(total, 1), sr, window_s, overlap_s))
        return ({**s.to_dict(), "audio": s.audio} for s in iter_window_audio(path, window_s, overlap_s, sr=sr)), n
    if segmenter != "vad":
        raise ValueError(f"segmenter must be 'fixed' or 'vad', got {segmenter!r}")
    segs = vad_segments(path, vad_model, max_segment_s=window_s, sr=sr)
    return ({**s.to_dict(), "audio": s.audio} for s in stream_segment_audio(path, segs, sr)), len(segs)

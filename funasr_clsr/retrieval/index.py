"""FAISS segment index: in memory for small, one-off indexes (``LongFormRetriever.new_index()``,
``generate()``), and the on-disk format of funasr_clsr before the LanceDB store (store.py), which
is now the default for index directories. :class:`SegmentIndex` implements the
:class:`~funasr_clsr.retrieval.store.SegmentStore` interface, without ``where`` filters.
``funasr-clsr migrate --index DIR`` converts a saved one into a LanceDB store.

On disk a FAISS index is a directory::

    index.json    header (format_version, model_id, model_version, embedding_dim, kind, created,
                  checksum, ...), one metadata record per segment and (if any) the
                  recordings' metadata
    vectors.npy   (N, D) float32 unit vectors, row i <-> segments[i]; the source of truth
    index.faiss   the FAISS structure built from vectors.npy (rebuilt if missing or stale)

The checksum is sha256 over the vectors and the metadata (plus the model/format fields), so a
load refuses files that were edited, mixed up or half written. ``save`` writes a complete
sibling directory and swaps it in with renames, so a crash never leaves a corrupt index behind
(a crash between the two renames is repaired by the next load/save). One writer at a time.

Scores are inner products of unit vectors (cosine similarity). ``python -m
funasr_clsr.retrieval.index --bench`` times a search over 100k vectors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .store import (
    FilterError,
    Hit,
    IndexMismatchError,
    IndexNotFoundError,
    RecordingExistsError,
    RecordingNotFoundError,
    SegmentStore,
    check_meta,
    check_top_k,
    normalise_vectors,
    recording_summaries,
    segment_records,
)

__all__ = [
    "FORMAT_VERSION",
    "Hit",
    "IndexMismatchError",
    "IndexNotFoundError",
    "SegmentIndex",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the on-disk layout or checksum definition changes.
FORMAT_VERSION = 1

INDEX_JSON = "index.json"
VECTORS_NPY = "vectors.npy"
FAISS_FILE = "index.faiss"
KINDS = ("flat", "ivf", "hnsw")

#: IVF needs about 39 training points per list; below 39 * IVF_MIN_NLIST vectors it is flat.
IVF_MIN_NLIST = 16
IVF_MIN_VECTORS = 39 * IVF_MIN_NLIST


def _faiss():
    import faiss  # imported on first use: keeps `import funasr_clsr.retrieval` light

    return faiss


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SegmentIndex(SegmentStore):
    """Unit vectors + per-segment metadata + a FAISS index over them, in memory (``save``/``load``)."""

    def __init__(
        self,
        model_id: str,
        model_version: str,
        embedding_dim: int,
        kind: str = "flat",
        nprobe: int | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 64,
        ef_search: int = 64,
    ):
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        if not isinstance(model_version, str):
            raise ValueError(f"model_version must be a string, got {model_version!r}")
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, (int, np.integer)) \
                or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if nprobe is not None and nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.model_id = model_id
        self.model_version = model_version
        self.embedding_dim = int(embedding_dim)
        self.kind = kind
        self.params = {"nprobe": nprobe, "hnsw_m": int(hnsw_m),
                       "ef_construction": int(ef_construction), "ef_search": int(ef_search)}
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._vectors = np.zeros((0, self.embedding_dim), dtype=np.float32)
        self._meta: list[dict[str, Any]] = []
        self._rec_meta: dict[str, dict[str, Any]] = {}  # recording_id -> its metadata (non-empty only)
        self._faiss_index = None
        self._faiss_rows = 0  # rows of _vectors already in _faiss_index
        self._built_kind: str | None = None
        self._warned_topk = False

    # ------------------------------------------------------------------ contents

    def __len__(self) -> int:
        return len(self._meta)

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) float32 unit vectors (read-only view)."""
        v = self._vectors.view()
        v.flags.writeable = False
        return v

    @property
    def segments(self) -> list[dict[str, Any]]:
        """Per-segment metadata records (copies)."""
        return [dict(m) for m in self._meta]

    def recordings(self) -> dict[str, str]:
        """recording_id -> path, in insertion order."""
        out: dict[str, str] = {}
        for m in self._meta:
            out.setdefault(m["recording_id"], m["path"])
        return out

    def __contains__(self, recording_id: object) -> bool:
        return any(m["recording_id"] == recording_id for m in self._meta)

    @property
    def recording_meta(self) -> dict[str, dict[str, Any]]:
        """recording_id -> metadata, for the recordings that have any (copies)."""
        return {k: dict(v) for k, v in self._rec_meta.items()}

    def list_recordings(self) -> list[dict[str, Any]]:
        return recording_summaries(self._meta, self._rec_meta)

    def _normalise(self, vectors: Any, what: str) -> np.ndarray:
        return normalise_vectors(vectors, self.embedding_dim, what, self.model_id)

    def add(
        self,
        recording_id: str,
        source: str | os.PathLike,
        segments: Sequence[Any],
        vectors: Any,
        meta: Mapping[str, Any] | str | None = None,
        *,
        transcripts: Sequence[str | None] | None = None,
        replace: bool = False,
    ) -> int:
        """Add one recording's segments (Segment objects or dicts with start/end[/start_sample,
        end_sample, transcript]) with their vectors (normalised here), its metadata (a JSON
        object) and optional transcripts; returns the number of segments.

        Re-adding a ``recording_id`` already present is an error (RecordingExistsError) unless
        ``replace=True``. Everything is validated before the index changes.
        """
        v = self._normalise(vectors, f"recording {recording_id}: vectors")
        records = segment_records(recording_id, source, segments, v.shape[0], transcripts)
        meta = check_meta(meta, f"recording {recording_id}: metadata")
        if recording_id in self:
            if not replace:
                raise RecordingExistsError(f"recording {recording_id} is already in the index (pass "
                                           "replace=True to re-index it)")
            self.remove(recording_id)
        self._vectors = np.concatenate([self._vectors, v]) if len(self._meta) else v
        self._meta.extend(records)
        if meta:
            self._rec_meta[recording_id] = meta
        return len(records)

    def remove(self, recording_id: str) -> int:
        """Drop a recording's segments; returns how many were removed (RecordingNotFoundError if none)."""
        keep = [i for i, m in enumerate(self._meta) if m["recording_id"] != recording_id]
        removed = len(self._meta) - len(keep)
        if not removed:
            raise RecordingNotFoundError(f"recording {recording_id!r} is not in the index")
        self._vectors = np.ascontiguousarray(self._vectors[keep])
        self._meta = [self._meta[i] for i in keep]
        self._rec_meta.pop(recording_id, None)
        self._faiss_index, self._faiss_rows = None, 0  # rows shifted: rebuild
        return removed

    # ------------------------------------------------------------------ FAISS

    def _ivf_nlist(self, n: int) -> int:
        return max(IVF_MIN_NLIST, min(int(4 * math.sqrt(n)), n // 39))

    def _build(self, vectors: np.ndarray):
        """A fresh FAISS index over ``vectors`` for self.kind (IVF falls back to flat when small)."""
        faiss = _faiss()
        d, n = self.embedding_dim, vectors.shape[0]
        kind = self.kind
        if kind == "ivf" and n < IVF_MIN_VECTORS:
            logger.info("IVF needs >= %d vectors to train, the index has %d: using a flat index",
                        IVF_MIN_VECTORS, n)
            kind = "flat"
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.params["ef_construction"]
        else:
            nlist = self._ivf_nlist(n)
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
        if n:
            index.add(vectors)
        self._built_kind = kind
        self._apply_search_params(index)
        return index

    def _apply_search_params(self, index) -> None:
        faiss = _faiss()
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = self.params["ef_search"]
        elif isinstance(index, faiss.IndexIVF):
            nprobe = self.params["nprobe"] or max(8, index.nlist // 8)
            index.nprobe = min(index.nlist, nprobe)

    def _sync(self):
        """Bring the FAISS index up to date with the vectors (append when possible)."""
        n = len(self._meta)
        if self._faiss_index is not None and self._faiss_rows == n:
            return self._faiss_index
        stale = self._faiss_index is None or self._faiss_rows > n
        # A small IVF index that fell back to flat is rebuilt as IVF once it is big enough.
        if self.kind == "ivf" and self._built_kind == "flat" and n >= IVF_MIN_VECTORS:
            stale = True
        if stale:
            self._faiss_index = self._build(self._vectors)
        else:
            self._faiss_index.add(self._vectors[self._faiss_rows:])
        self._faiss_rows = n
        return self._faiss_index

    # ------------------------------------------------------------------ search

    def search(self, query_vectors: Any, top_k: int = 10, where: str | None = None) -> list[list[Hit]]:
        """Nearest segments for each query row (normalised here), best first.

        ``top_k`` above the number of segments returns all of them (with one warning per index).
        ``where`` filters need the LanceDB store: here they raise FilterError.
        """
        top_k = check_top_k(top_k)
        if where is not None:
            raise FilterError("where filters need the LanceDB store (LanceSegmentStore, the default for index "
                              "directories); this is an in-memory FAISS index")
        q = self._normalise(query_vectors, "query vectors")
        n = len(self._meta)
        if top_k > n and not self._warned_topk:
            warnings.warn(f"top_k={top_k} is larger than the {n} segments in the index; "
                          f"returning all {n}", stacklevel=2)
            self._warned_topk = True
        if n == 0:
            return [[] for _ in range(q.shape[0])]
        k = min(int(top_k), n)
        scores, ids = self._sync().search(q, k)
        out: list[list[Hit]] = []
        for srow, irow in zip(scores, ids):
            hits = []
            for s, i in zip(srow, irow):
                if i < 0:  # IVF/HNSW may find fewer than k
                    continue
                m = self._meta[i]
                hits.append(Hit(score=float(s), rank=len(hits) + 1, row=int(i),
                                recording_id=m["recording_id"], path=m["path"],
                                start=m["start"], end=m["end"], transcript=m["transcript"],
                                start_sample=m["start_sample"], end_sample=m["end_sample"],
                                meta=dict(self._rec_meta.get(m["recording_id"], {}))))
            out.append(hits)
        return out

    # ------------------------------------------------------------------ persistence

    def _checksum(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self._vectors, dtype="<f4").tobytes())
        doc = {"format_version": FORMAT_VERSION, "model_id": self.model_id, "model_version": self.model_version,
               "embedding_dim": self.embedding_dim, "segments": self._meta}
        if self._rec_meta:  # only when present, so indexes saved before metadata existed still verify
            doc["recordings_meta"] = self._rec_meta
        h.update(_canonical(doc))
        return h.hexdigest()

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index to ``directory`` atomically (complete new copy, then rename swap)."""
        d = Path(directory)
        if d.is_symlink():  # swap the real directory, keep the user's link
            d = d.resolve()
        if d.exists() and not d.is_dir():
            raise ValueError(f"{d}: exists and is not a directory")
        if d.is_dir() and any(d.iterdir()) and not (d / INDEX_JSON).exists():
            raise ValueError(f"{d}: directory is not empty and holds no {INDEX_JSON}; refusing to "
                             "replace it with an index")
        d.parent.mkdir(parents=True, exist_ok=True)
        _recover(d)
        index = self._sync()
        header = {
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "embedding_dim": self.embedding_dim,
            "kind": self.kind,
            "built_kind": self._built_kind,
            "params": self.params,
            "num_segments": len(self._meta),
            "num_recordings": len(self.recordings()),
            "created": self.created,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "checksum": self._checksum(),
        }
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.tmp-", dir=d.parent))
        old: Path | None = None
        try:
            with open(tmp / VECTORS_NPY, "wb") as f:
                np.save(f, np.ascontiguousarray(self._vectors, dtype="<f4"), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            _faiss().write_index(index, str(tmp / FAISS_FILE))
            header["faiss_sha256"] = _sha256_file(tmp / FAISS_FILE)
            part = tmp / (INDEX_JSON + ".part")
            with open(part, "w", encoding="utf-8") as f:
                doc = {"header": header, "segments": self._meta}
                if self._rec_meta:
                    doc["recordings_meta"] = self._rec_meta
                json.dump(doc, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, tmp / INDEX_JSON)  # index.json present == copy complete
            _fsync_dir(tmp)
            if d.exists():
                old = d.parent / f".{d.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(d, old)
            os.rename(tmp, d)
            _fsync_dir(d.parent)
        except BaseException:
            if old is not None and old.exists() and not d.exists():
                os.rename(old, d)  # put the previous index back
                old = None
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return d

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        expect_model_id: str | None = None,
        expect_model_version: str | None = None,
        expect_embedding_dim: int | None = None,
    ) -> "SegmentIndex":
        """Load and verify an index; refuse (IndexMismatchError) anything inconsistent."""
        d = Path(directory)
        _recover(d)
        if not (d / INDEX_JSON).is_file():
            if (d / "segments.lance").is_dir():
                raise IndexMismatchError(f"{d}: a LanceDB index (the default since the FAISS format 1); open it "
                                         "with LanceSegmentStore.load or LongFormRetriever.open_index")
            raise IndexNotFoundError(str(d))
        try:
            with open(d / INDEX_JSON, encoding="utf-8") as f:
                doc = json.load(f)
            header, meta = doc["header"], doc["segments"]
            rec_meta = doc.get("recordings_meta") or {}
            version = header["format_version"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise IndexMismatchError(f"{d}: {INDEX_JSON} is corrupt ({type(e).__name__})") from None
        if version != FORMAT_VERSION:
            raise IndexMismatchError(f"{d}: index format_version {version}, this code reads "
                                     f"{FORMAT_VERSION}; rebuild the index")
        if expect_model_id is not None and header.get("model_id") != expect_model_id:
            raise IndexMismatchError(f"{d}: index built with model {header.get('model_id')!r}, "
                                     f"expected {expect_model_id!r}; rebuild it with this model")
        if expect_model_version is not None and header.get("model_version") != expect_model_version:
            raise IndexMismatchError(f"{d}: index built with model version "
                                     f"{header.get('model_version')!r}, expected "
                                     f"{expect_model_version!r}; rebuild it")
        dim = header.get("embedding_dim")
        if expect_embedding_dim is not None and dim != expect_embedding_dim:
            raise IndexMismatchError(f"{d}: index holds {dim}-d vectors, expected "
                                     f"{expect_embedding_dim}-d")
        try:
            vectors = np.load(d / VECTORS_NPY, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IndexMismatchError(f"{d}: {VECTORS_NPY} is missing or corrupt "
                                     f"({type(e).__name__})") from None
        if vectors.ndim != 2 or vectors.dtype != np.float32:
            raise IndexMismatchError(f"{d}: {VECTORS_NPY} is {vectors.dtype} {vectors.shape}, "
                                     "expected float32 (N, D)")
        if vectors.shape[1] != dim:
            raise IndexMismatchError(f"{d}: vectors are {vectors.shape[1]}-d but the header says "
                                     f"embedding_dim {dim}")
        if vectors.shape[0] != len(meta):
            raise IndexMismatchError(f"{d}: {vectors.shape[0]} vectors but {len(meta)} segment records")
        params = header.get("params", {})
        try:
            idx = cls(header["model_id"], header["model_version"], int(dim),
                      kind=header.get("kind", "flat"), nprobe=params.get("nprobe"),
                      hnsw_m=params.get("hnsw_m", 32),
                      ef_construction=params.get("ef_construction", 64),
                      ef_search=params.get("ef_search", 64))
        except (KeyError, ValueError, TypeError) as e:
            raise IndexMismatchError(f"{d}: bad header ({' '.join(str(e).split())})") from None
        idx.created = header.get("created", idx.created)
        idx._vectors = np.ascontiguousarray(vectors)
        idx._meta = meta
        idx._rec_meta = rec_meta
        if idx._checksum() != header.get("checksum"):
            raise IndexMismatchError(f"{d}: checksum mismatch: vectors or metadata changed since "
                                     "the index was saved")
        idx._load_faiss(d, header)
        return idx

    def _load_faiss(self, d: Path, header: dict[str, Any]) -> None:
        """Use the saved FAISS structure if it matches; otherwise rebuild it from the vectors."""
        path = d / FAISS_FILE
        reason = None
        if not path.is_file():
            reason = "missing"
        elif header.get("faiss_sha256") != _sha256_file(path):
            reason = "checksum differs"
        else:
            try:
                index = _faiss().read_index(str(path))
            except RuntimeError:
                index, reason = None, "unreadable"
            if index is not None and (index.ntotal != len(self._meta) or index.d != self.embedding_dim):
                reason = "size differs"
        if reason is None:
            self._built_kind = header.get("built_kind") or self.kind
            self._apply_search_params(index)
            self._faiss_index, self._faiss_rows = index, len(self._meta)
        else:
            logger.warning("%s: %s %s; rebuilding it from %s", d, FAISS_FILE, reason, VECTORS_NPY)
            self._faiss_index, self._faiss_rows = None, 0

    @classmethod
    def open_or_create(
        cls,
        directory: str | os.PathLike,
        model_id: str,
        model_version: str,
        embedding_dim: int,
        kind: str = "flat",
        **kwargs: Any,
    ) -> "SegmentIndex":
        """Load the index in ``directory`` (it must match the model) or start an empty one."""
        d = Path(directory)
        _recover(d)
        if (d / INDEX_JSON).exists():
            return cls.load(d, expect_model_id=model_id, expect_model_version=model_version,
                            expect_embedding_dim=embedding_dim)
        return cls(model_id, model_version, embedding_dim, kind=kind, **kwargs)


def _recover(d: Path) -> None:
    """If a crash left no ``d`` but a complete sibling copy (new or old), move it into place."""
    if d.exists() or not d.parent.is_dir():
        return
    for pattern in (f".{d.name}.tmp-*", f".{d.name}.old-*"):  # prefer the newer complete copy
        cands = [p for p in d.parent.glob(pattern) if (p / INDEX_JSON).is_file()]
        if cands:
            best = max(cands, key=lambda p: (p / INDEX_JSON).stat().st_mtime)
            os.rename(best, d)
            logger.warning("%s: restored the index from %s left by an interrupted save", d, best.name)
            return


def _benchmark(n: int = 100_000, dim: int = 384, queries: int = 200, kinds: Iterable[str] = ("flat",),
               top_k: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Time single-query and batched search on random unit vectors (not a unit test)."""
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    qs = rng.standard_normal((queries, dim), dtype=np.float32)
    segs = [{"start": float(i), "end": float(i + 1)} for i in range(n)]
    results = []
    for kind in kinds:
        idx = SegmentIndex("bench", "0", dim, kind=kind)
        idx.add("bench", "bench.wav", segs, vecs)
        t0 = time.perf_counter()
        idx._sync()
        build = time.perf_counter() - t0
        idx.search(qs[:1], top_k)  # warm-up
        times = []
        for i in range(queries):
            t = time.perf_counter()
            idx.search(qs[i], top_k)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        idx.search(qs, top_k)
        batch = time.perf_counter() - t
        results.append({"kind": kind, "n": n, "dim": dim, "build_s": round(build, 3),
                        "single_query_ms_median": round(1000 * float(np.median(times)), 3),
                        "single_query_ms_p95": round(1000 * float(np.percentile(times, 95)), 3),
                        f"batch_{queries}_ms": round(1000 * batch, 3)})
    return results


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description="Benchmark SegmentIndex search.")
    ap.add_argument("--bench", action="store_true", help="run the search benchmark")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kinds", default="flat", help="comma list of flat,ivf,hnsw")
    args = ap.parse_args()
    if not args.bench:
        ap.error("nothing to do; pass --bench")
    print(json.dumps(_benchmark(args.n, args.dim, args.queries, args.kinds.split(",")), indent=1))

"""Segment stores: the interface the long-form retriever searches, and its LanceDB default.

* :class:`SegmentStore`: the interface (``add``, ``remove``, ``recordings``, ``list_recordings``,
  ``search``, ``in``, ``len``).
* :class:`LanceSegmentStore`: the default. An embedded LanceDB table; an index is a directory::

      segments.lance/   the table, one row per segment (columns: SEGMENT_COLUMNS); its schema
                        metadata holds the header (format, model_id, model_version,
                        embedding_dim, kind, ann_threshold, created)
      .writer.lock      taken (flock) for every write; a second writer waits for it

* :class:`~funasr_clsr.retrieval.index.SegmentIndex`: FAISS in memory, for small one-off
  indexes (``LongFormRetriever.new_index()``); same interface, without ``where`` filters.

What the LanceDB store guarantees:

* the model is recorded and checked: opening an index with another model id, version or
  embedding size is refused with the reason, and nothing is changed;
* every write (a recording added, replaced or deleted) is one LanceDB commit. A writer killed
  at any moment, or a write that fails (disk full), leaves the last committed version, and
  readers only ever see committed versions;
* writers take ``.writer.lock`` for each commit, so two writers at once wait for each other
  (up to ``lock_timeout`` seconds, then :class:`IndexLockedError`) instead of racing;
* a FAISS index directory from before the LanceDB store is refused with the command that
  converts it (``funasr-clsr migrate --index DIR``, :func:`migrate_faiss_index`).

Each recording carries metadata (a JSON object). ``title``, ``date`` (ISO 8601, so that string
comparison is date order), ``speaker`` and ``tags`` (a list of strings) are columns ``where``
filters can use, together with ``recording_id``, ``path``, ``segment``, ``start``, ``end`` and
``transcript`` (SQL as LanceDB/DataFusion reads it, e.g.
``date >= '2026-01-01' AND speaker = 'Ada'``, ``recording_id IN ('a', 'b')``,
``start >= 600 AND "end" <= 1200``, ``array_has(tags, 'physics')``). Other keys are kept and
returned but are not columns.

Once a table holds ``ann_threshold`` segments an ANN index is built (``kind="hnsw"``, the
default: IVF-HNSW-SQ; ``kind="ivf"``: IVF-PQ, smaller, lower recall; ``kind="flat"``: never),
searched with exact re-ranking, with scalar indexes on the filter columns; rows
added later are searched exactly until they are folded in (``optimize``), and the index is
retrained once the table has grown 4x. Scores are cosine similarities (dot products of unit
vectors), as in the FAISS index.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "DEFAULT_ANN_THRESHOLD",
    "FILTER_COLUMNS",
    "FilterError",
    "Hit",
    "IndexLockedError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "LANCE_FORMAT",
    "LanceSegmentStore",
    "RecordingExistsError",
    "RecordingNotFoundError",
    "SegmentStore",
    "StoreWriteError",
    "check_meta",
    "index_format",
    "migrate_faiss_index",
]

logger = logging.getLogger(__name__)

#: The header's ``format``; bumped whenever the table layout changes.
LANCE_FORMAT = "funasr_clsr.lance/1"
TABLE_NAME = "segments"
TABLE_DIR = TABLE_NAME + ".lance"
HEADER_KEY = b"funasr_clsr"
LOCK_NAME = ".writer.lock"
FAISS_JSON = "index.json"  # the FAISS index's header file (index.py)
LANCE_KINDS = ("flat", "ivf", "hnsw")

#: Segments at which an ANN index is built. Below it an exact search is fast enough
#: (see docs/benchmarks.md, "Archive scale").
DEFAULT_ANN_THRESHOLD = 100_000
#: Unindexed rows (as a fraction of the table) that trigger folding them into the ANN index.
UNINDEXED_FRACTION = 0.1
#: Small fragments (one per commit) that trigger a compaction.
COMPACT_FRAGMENTS = 64
#: The ANN index is retrained when the table has grown this much since training.
RETRAIN_GROWTH = 4

#: Metadata keys stored as their own (filterable) columns, with the JSON type they must have.
META_COLUMNS = {"title": str, "date": str, "speaker": str, "tags": list}
#: Columns a ``where`` filter may use.
FILTER_COLUMNS = ("recording_id", "path", "segment", "start", "end", "transcript", *META_COLUMNS, "added")
_HIT_COLUMNS = ["recording_id", "path", "start", "end", "start_sample", "end_sample", "transcript", "meta",
                "_distance"]
#: A filter that matches at most this many segments is searched exactly, in memory, over a copy of the
#: matching rows (found through the scalar indexes) instead of by a prefiltered ANN search: at 1M segments
#: HNSW with a prefilter of 25,900 rows took 50 ms p50, LanceDB's exact search of those rows 29 ms, and
#: it is exact; the copy, read once per (committed version, filter), makes a repeated filter (a server's
#: "this speaker", "this week") a product with those rows (docs/benchmarks.md, "Filtered queries").
FLAT_FILTER_ROWS = 50_000
#: What the in-memory copies (the small table's, the selective filters') may hold together; the least
#: recently used copy goes first. 50,000 x 768 float32 vectors are 154 MB.
MEMORY_COPY_BYTES = 512 << 20
#: HNSW search breadth. At 1M x 384 one build gave recall@10 0.968 at ef 100 and 0.994 at 200 and 400,
#: 7.5-7.6 ms p50 each (benchmarks/results/scale_1m_384_ef_sweep.json); LanceDB needs ef >= top_k x
#: refine_factor, which search() raises it to.
DEFAULT_EF = 200
# Below this many segments, with no ANN index and no filter, search compares in memory with a copy of the
# table read once per committed version: a LanceDB query costs milliseconds even on 90 rows (the server's
# `search` time, docs/serve.md), numpy's product with 20,000 x 384 vectors about 1 ms.
MEMORY_SEARCH_ROWS = 20_000
_SEGMENT_COLUMNS = ["recording_id", "path", "segment", "start", "end", "start_sample", "end_sample",
                    "transcript"]


# --------------------------------------------------------------------------- errors


class IndexMismatchError(ValueError):
    """An index on disk that must not be used (other format/model/dim, checksum mismatch, corrupt)."""


class IndexNotFoundError(FileNotFoundError):
    """No index at the given directory."""

    def __init__(self, path: str, missing: str = FAISS_JSON):
        self.message = f"{path}: no segment index here (missing {missing})"
        super().__init__(2, self.message)
        self.filename = path
        self.missing = missing

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.filename, self.missing))


class RecordingNotFoundError(KeyError):
    """A recording id that is not in the index (a KeyError with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "recording not found"


class RecordingExistsError(ValueError):
    """Adding a recording id that is already in the index (without replace)."""


class FilterError(ValueError):
    """A ``where`` filter that does not parse, names an unknown column, or cannot be applied."""


class IndexLockedError(TimeoutError):
    """Another writer kept the index's write lock for longer than ``lock_timeout``."""


class StoreWriteError(OSError):
    """A write to the index failed (disk full, I/O error); the last committed version is intact."""


# --------------------------------------------------------------------------- hits, shared checks


@dataclass(frozen=True)
class Hit:
    """One search result: cosine ``score`` and the segment it points at.

    ``row`` is the segment's row: its position in a FAISS index's ``segments``, LanceDB's
    ``_rowid`` in a LanceDB store. ``meta`` is the recording's metadata.
    """

    score: float
    rank: int
    row: int
    recording_id: str
    path: str
    start: float
    end: float
    transcript: str | None
    start_sample: int | None = None
    end_sample: int | None = None
    meta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seg_field(seg: Any, key: str, default: Any = None) -> Any:
    if isinstance(seg, Mapping):
        return seg.get(key, default)
    return getattr(seg, key, default)


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    return int(top_k)


def normalise_vectors(vectors: Any, dim: int, what: str, model_id: str) -> np.ndarray:
    """(n, dim) float32 unit rows; refuses other dimensions, NaN/inf and zero rows."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2:
        raise ValueError(f"{what} must be a (n, {dim}) array, got shape {v.shape}")
    if v.shape[1] != dim:
        raise ValueError(f"{what} have dimension {v.shape[1]}, the index holds {dim}-d vectors (model {model_id})")
    if not np.isfinite(v).all():
        raise ValueError(f"{what} contain NaN/inf")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what}: row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is a zero vector")
    return np.ascontiguousarray(v / norms, dtype=np.float32)


def segment_records(recording_id: str, source: str | os.PathLike, segments: Sequence[Any], n_vectors: int,
                    transcripts: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
    """Validated per-segment records (Segment objects or dicts with start/end[/start_sample,
    end_sample, transcript or text]); raises ValueError naming the recording and segment."""
    if not isinstance(recording_id, str) or not recording_id:
        raise ValueError(f"recording_id must be a non-empty string, got {recording_id!r}")
    n = len(segments)
    if n == 0:
        raise ValueError(f"recording {recording_id}: no segments to add")
    if n_vectors != n:
        raise ValueError(f"recording {recording_id}: {n} segments but {n_vectors} vectors")
    if transcripts is not None and len(transcripts) != n:
        raise ValueError(f"recording {recording_id}: {n} segments but {len(transcripts)} transcripts")
    records = []
    for i, seg in enumerate(segments):
        start, end = seg_field(seg, "start"), seg_field(seg, "end")
        try:
            start, end = float(start), float(end)
        except (TypeError, ValueError):
            raise ValueError(f"recording {recording_id}: segment {i} has no numeric start/end") from None
        if not (math.isfinite(start) and math.isfinite(end)) or end < start or start < 0:
            raise ValueError(f"recording {recording_id}: segment {i} has bad times {start}..{end}")
        ss, es = seg_field(seg, "start_sample"), seg_field(seg, "end_sample")
        if transcripts is not None:
            text = transcripts[i]
        else:
            text = seg_field(seg, "transcript")
            text = seg_field(seg, "text") if text is None else text
        if text is not None and not isinstance(text, str):
            raise ValueError(f"recording {recording_id}: transcript {i} is not a string")
        records.append({"recording_id": recording_id, "path": os.fspath(source), "start": start, "end": end,
                        "start_sample": None if ss is None else int(ss),
                        "end_sample": None if es is None else int(es), "transcript": text})
    return records


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ].*)?$")


def check_meta(meta: Any, what: str = "metadata") -> dict[str, Any]:
    """A recording's metadata as a JSON object (a dict, or a string holding one); ValueError otherwise.

    ``title``/``speaker`` must be strings, ``date`` an ISO 8601 date or date-time (YYYY-MM-DD...),
    ``tags`` a list of strings; other keys may hold any JSON value.
    """
    if meta is None:
        return {}
    if isinstance(meta, (str, bytes)):
        try:
            meta = json.loads(meta)
        except ValueError as exc:
            raise ValueError(f"{what} is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(meta, Mapping):
        raise ValueError(f"{what} must be a JSON object ({{\"title\": ..., \"date\": ...}}), got "
                         f"{type(meta).__name__}")
    try:
        meta = json.loads(json.dumps(dict(meta), allow_nan=False, ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable ({' '.join(str(exc).split())})") from None
    for key, typ in META_COLUMNS.items():
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, typ):
            raise ValueError(f"{what}: {key!r} must be a {'list of strings' if typ is list else 'string'}, "
                             f"got {type(value).__name__}")
    if meta.get("tags") is not None and not all(isinstance(t, str) for t in meta["tags"]):
        raise ValueError(f"{what}: 'tags' must be a list of strings")
    d = meta.get("date")
    if d is not None:
        ok = bool(_ISO_DATE.match(d))
        if ok:
            try:
                (datetime.fromisoformat(d) if len(d) > 10 else date.fromisoformat(d))
            except ValueError:
                ok = False
        if not ok:
            raise ValueError(f"{what}: 'date' must be an ISO 8601 date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS), "
                             f"got {d!r}")
    return meta


def sql_string(value: str) -> str:
    """A SQL string literal (quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def index_format(directory: str | os.PathLike) -> str:
    """What ``directory`` holds: ``lance``, ``faiss``, ``missing``, ``empty``, ``file`` or ``other``."""
    d = Path(directory)
    if not d.exists():
        return "missing"
    if not d.is_dir():
        return "file"
    if (d / TABLE_DIR).is_dir():
        return "lance"
    if (d / FAISS_JSON).is_file():
        return "faiss"
    if not any(p.name != LOCK_NAME for p in d.iterdir()):
        return "empty"
    return "other"


def faiss_migration_message(directory: str | os.PathLike) -> str:
    return (f"{directory}: this is a FAISS index (index.json + vectors.npy) from before the LanceDB store; "
            f"convert it with `funasr-clsr migrate --index {directory}` (keeps the vectors, no re-encoding), "
            f"or keep the FAISS format with --store faiss (store='faiss')")


# --------------------------------------------------------------------------- the interface


class SegmentStore(abc.ABC):
    """Segment vectors + per-segment metadata of one model, searched by cosine similarity."""

    model_id: str
    model_version: str
    embedding_dim: int
    kind: str

    @abc.abstractmethod
    def add(self, recording_id: str, source: str | os.PathLike, segments: Sequence[Any], vectors: Any,
            meta: Mapping[str, Any] | str | None = None, *, transcripts: Sequence[str | None] | None = None,
            replace: bool = False) -> int:
        """Add one recording's segments with their vectors (normalised here); returns the count.

        A ``recording_id`` already present raises :class:`RecordingExistsError` unless
        ``replace``. Everything is validated before the store changes.
        """

    @abc.abstractmethod
    def remove(self, recording_id: str) -> int:
        """Drop a recording; returns its number of segments (:class:`RecordingNotFoundError` if unknown)."""

    def remove_many(self, recording_ids: Iterable[str]) -> dict[str, int]:
        """Drop several recordings; all must exist (checked before anything is removed)."""
        ids = list(dict.fromkeys(recording_ids))
        self._check_known(ids)
        return {rid: self.remove(rid) for rid in ids}

    def _check_known(self, ids: Sequence[str]) -> None:
        if not ids:
            raise ValueError("no recording ids given")
        known = self.recordings()
        unknown = [r for r in ids if r not in known]
        if unknown:
            raise RecordingNotFoundError(f"not in the index: {', '.join(map(repr, unknown[:5]))}"
                                         + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
                                         + "; nothing was deleted")

    @abc.abstractmethod
    def recordings(self) -> dict[str, str]:
        """recording_id -> source path, in insertion order."""

    @abc.abstractmethod
    def list_recordings(self) -> list[dict[str, Any]]:
        """``[{"recording_id", "source", "segments", "seconds", "meta"}]`` (seconds: end of the last segment)."""

    @abc.abstractmethod
    def __contains__(self, recording_id: object) -> bool: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def search(self, query_vectors: Any, top_k: int = 10, where: str | None = None) -> list[list[Hit]]:
        """The ``top_k`` nearest segments for each query row (normalised here), best first."""

    def check_model(self, model_id: str, model_version: str, embedding_dim: int) -> None:
        """Refuse (IndexMismatchError) to mix another model's vectors into this store."""
        if (self.model_id, self.model_version, self.embedding_dim) != (model_id, model_version, embedding_dim):
            raise IndexMismatchError(
                f"index built with model {self.model_id!r} version {self.model_version!r} "
                f"({self.embedding_dim}-d), this model is {model_id!r} version {model_version!r} "
                f"({embedding_dim}-d); rebuild the index with this model")


def recording_summaries(records: Iterable[Mapping[str, Any]], metas: Mapping[str, dict]) -> list[dict[str, Any]]:
    """list_recordings() from per-segment records (insertion order)."""
    out: dict[str, dict[str, Any]] = {}
    for m in records:
        e = out.setdefault(m["recording_id"], {"recording_id": m["recording_id"], "source": m["path"],
                                               "segments": 0, "seconds": 0.0,
                                               "meta": dict(metas.get(m["recording_id"]) or {})})
        e["segments"] += 1
        e["seconds"] = max(e["seconds"], float(m["end"]))
    return list(out.values())


# --------------------------------------------------------------------------- LanceDB


def _lancedb():
    import lancedb  # imported on first use: it takes seconds, and most commands never need it

    return lancedb


def _lance_message(exc: BaseException) -> str:
    """A LanceDB error as one readable line (without Rust source locations)."""
    text = " ".join(str(exc).split())
    text = re.sub(r",? /\S+\.rs:\d+:\d+", "", text)
    text = re.sub(r"^(lance error: )?(LanceError\((\w+)\): )?", "", text)
    return text or type(exc).__name__


def _schema(dim: int, header: dict[str, Any]):
    import pyarrow as pa

    fields = [
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("segment", pa.int32()),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("start_sample", pa.int64()),
        pa.field("end_sample", pa.int64()),
        pa.field("transcript", pa.string()),
        pa.field("title", pa.string()),
        pa.field("date", pa.string()),
        pa.field("speaker", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("meta", pa.string()),  # the whole metadata object, as JSON
        pa.field("added", pa.timestamp("us", tz="UTC")),  # commit time: orders recordings as added
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ]
    return pa.schema(fields, metadata={HEADER_KEY: json.dumps(header, sort_keys=True).encode()})


def _ann_partitions(n: int, kind: str) -> int:
    if kind == "hnsw":  # each IVF partition holds an HNSW graph; few, large partitions
        return max(1, n // 250_000)
    return max(1, min(int(math.sqrt(n)), n // 256))  # ~256+ training rows per centroid


def _ann_sub_vectors(dim: int) -> int:
    # PQ sub-vectors of 8 dimensions from 128 dims up (384-d: 48 codes); below that, 4 dimensions: 8-dim
    # codes left a 32-d table 4 codes, too coarse to re-rank the refine candidates, and its recall@10
    # sat at the 0.9 bound of tests/retrieval/test_store.py (the flaky IVF case)
    for size in ((8, 4, 2, 1) if dim >= 128 else (4, 2, 1)):
        if dim % size == 0 and dim // size >= 1:
            return dim // size
    return dim  # pragma: no cover


_TRAINED_ROWS = re.compile(r"_n(\d+)$")


class LanceSegmentStore(SegmentStore):
    """The default segment store: one LanceDB table in ``directory`` (see the module docstring).

    Open one with :meth:`load` (existing), :meth:`create` (new) or :meth:`open_or_create`.
    Query-time options: ``nprobes`` (IVF partitions searched; default max(20, 1/8 of them);
    recall measured in docs/benchmarks.md), ``refine_factor`` (candidates re-ranked exactly, x top_k),
    ``ef`` (HNSW search breadth) and ``lock_timeout`` (seconds a writer waits for another).
    """

    def __init__(self, directory: Path, table: Any, header: dict[str, Any], *, lock_timeout: float = 600.0,
                 nprobes: int | None = None, refine_factor: int = 10, ef: int = DEFAULT_EF):
        self.directory = directory
        self._table = table
        self.header = header
        self.model_id = header["model_id"]
        self.model_version = header["model_version"]
        self.embedding_dim = int(header["embedding_dim"])
        self.kind = header.get("kind", "hnsw")
        self.ann_threshold = int(header.get("ann_threshold", DEFAULT_ANN_THRESHOLD))
        self.created = header.get("created")
        self.lock_timeout = float(lock_timeout)
        self.nprobes, self.refine_factor, self.ef = nprobes, int(refine_factor), int(ef)
        self._lock_depth = 0
        self._lock_owner: int | None = None  # thread holding the lock through this object
        self._warned_topk = False
        # (version, where or None) -> (vectors, hit columns): see _read_copy
        self._copies: OrderedDict[tuple[int, str | None], tuple[np.ndarray, Any]] = OrderedDict()
        self._copies_lock = threading.Lock()
        self._copy_readers: dict[tuple[int, str], threading.Thread] = {}  # filters' copies being read
        self._filter_counts: dict[tuple[int, str], int] = {}  # (version, where) -> matching rows

    # ------------------------------------------------------------------ opening

    @staticmethod
    def _connect(directory: Path):
        # read_consistency_interval=0: every read sees the latest commit (a reader beside a writer)
        return _lancedb().connect(str(directory), read_consistency_interval=timedelta(0))

    @classmethod
    def load(cls, directory: str | os.PathLike, expect_model_id: str | None = None,
             expect_model_version: str | None = None, expect_embedding_dim: int | None = None,
             **options: Any) -> "LanceSegmentStore":
        """Open the store in ``directory``; refuse (IndexMismatchError) another model's or format's."""
        d = Path(directory)
        fmt = index_format(d)
        if fmt == "faiss":
            raise IndexMismatchError(faiss_migration_message(d))
        if fmt != "lance":
            raise IndexNotFoundError(str(d), TABLE_DIR)
        try:
            table = cls._connect(d).open_table(TABLE_NAME)
            raw = (table.schema.metadata or {}).get(HEADER_KEY)
        except Exception as exc:  # noqa: BLE001 - any LanceDB failure to open is a corrupt index
            raise IndexMismatchError(f"{d}: {TABLE_DIR} is unreadable ({_lance_message(exc)})") from None
        try:
            header = json.loads(raw)
            fmt_version = header["format"]
        except (TypeError, ValueError, KeyError):
            raise IndexMismatchError(f"{d}: {TABLE_DIR} has no funasr_clsr header (not a segment index)") from None
        if fmt_version != LANCE_FORMAT:
            raise IndexMismatchError(f"{d}: index format {fmt_version!r}, this code reads {LANCE_FORMAT!r}; "
                                     "rebuild the index")
        if expect_model_id is not None and header.get("model_id") != expect_model_id:
            raise IndexMismatchError(f"{d}: index built with model {header.get('model_id')!r}, "
                                     f"expected {expect_model_id!r}; rebuild it with this model")
        if expect_model_version is not None and header.get("model_version") != expect_model_version:
            raise IndexMismatchError(f"{d}: index built with model version {header.get('model_version')!r}, "
                                     f"expected {expect_model_version!r}; rebuild it")
        dim = header.get("embedding_dim")
        if expect_embedding_dim is not None and dim != expect_embedding_dim:
            raise IndexMismatchError(f"{d}: index holds {dim}-d vectors, expected {expect_embedding_dim}-d")
        if table.schema.field("vector").type.list_size != dim:
            raise IndexMismatchError(f"{d}: vectors are {table.schema.field('vector').type.list_size}-d but "
                                     f"the header says embedding_dim {dim}")
        return cls(d, table, header, **options)

    @classmethod
    def create(cls, directory: str | os.PathLike, model_id: str, model_version: str, embedding_dim: int,
               kind: str = "hnsw", ann_threshold: int = DEFAULT_ANN_THRESHOLD, **options: Any
               ) -> "LanceSegmentStore":
        """A new, empty store in ``directory`` (which must be absent or empty).

        The table is created in a sibling folder and renamed into place, so a crash never
        leaves a half-created index.
        """
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        if not isinstance(model_version, str):
            raise ValueError(f"model_version must be a string, got {model_version!r}")
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, (int, np.integer)) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
        if kind not in LANCE_KINDS:
            raise ValueError(f"kind must be one of {LANCE_KINDS}, got {kind!r}")
        if isinstance(ann_threshold, bool) or not isinstance(ann_threshold, int) or ann_threshold < 1:
            raise ValueError(f"ann_threshold must be an integer >= 1, got {ann_threshold!r}")
        d = Path(directory)
        if d.is_symlink():
            d = d.resolve()
        fmt = index_format(d)
        if fmt == "faiss":
            raise IndexMismatchError(faiss_migration_message(d))
        if fmt == "file":
            raise ValueError(f"{d}: exists and is not a directory")
        if fmt == "other":
            raise ValueError(f"{d}: directory is not empty and holds no segment index; refusing to write "
                             "an index into it")
        if fmt == "lance":
            raise ValueError(f"{d}: already holds a segment index")
        from ..version import __version__

        header = {"format": LANCE_FORMAT, "model_id": model_id, "model_version": model_version,
                  "embedding_dim": int(embedding_dim), "kind": kind, "ann_threshold": int(ann_threshold),
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "funasr_clsr_version": __version__}
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.tmp-", dir=d.parent))
        try:
            try:
                cls._connect(tmp).create_table(TABLE_NAME, schema=_schema(int(embedding_dim), header))
            except Exception as exc:  # noqa: BLE001
                raise StoreWriteError(f"{d}: creating the index failed ({_lance_message(exc)})") from None
            if fmt == "empty":
                shutil.rmtree(d)
            os.rename(tmp, d)  # fails if another process created the index meanwhile
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.load(d, **options)

    @classmethod
    def open_or_create(cls, directory: str | os.PathLike, model_id: str, model_version: str, embedding_dim: int,
                       kind: str = "hnsw", ann_threshold: int = DEFAULT_ANN_THRESHOLD, **options: Any
                       ) -> "LanceSegmentStore":
        """Open the store in ``directory`` (it must match the model), or create an empty one."""
        if index_format(directory) in ("missing", "empty"):
            try:
                return cls.create(directory, model_id, model_version, embedding_dim, kind=kind,
                                  ann_threshold=ann_threshold, **options)
            except OSError:
                if index_format(directory) != "lance":  # not a concurrent create: a real failure
                    raise
        store = cls.load(directory, expect_model_id=model_id, expect_model_version=model_version,
                         expect_embedding_dim=embedding_dim, **options)
        if store.kind != kind:
            logger.info("%s: existing index is kind %r; keeping it (asked for %r)", directory, store.kind, kind)
        return store

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the write lock (re-entrant in the holding thread); waits up to ``lock_timeout`` s for
        another writer: another process, or another thread using this or another store object."""
        import fcntl

        if self._lock_depth and self._lock_owner == threading.get_ident():
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        waited = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _lock_holder(path)
                    if time.monotonic() >= deadline:
                        raise IndexLockedError(
                            f"{self.directory}: another writer ({holder}) is changing this index; gave up after "
                            f"{self.lock_timeout:g} s (run again when it has finished)") from None
                    if not waited:
                        logger.warning("%s: waiting for another writer (%s) to finish", self.directory, holder)
                        waited = True
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            self._lock_depth, self._lock_owner = 1, threading.get_ident()
            try:
                yield
            finally:
                self._lock_depth, self._lock_owner = 0, None
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _committing(self, what: str) -> Iterator[None]:
        """Turn a failed LanceDB write into one line that says the last version is intact."""
        before = self._table.version
        try:
            yield
        except StoreWriteError:
            raise
        except (OSError, RuntimeError) as exc:
            try:
                self._table.checkout_latest()
                now = self._table.version
            except Exception:  # noqa: BLE001
                now = None
            state = (f"the index is unchanged (version {before})" if now == before
                     else f"the last committed version is {now}")
            raise StoreWriteError(f"{self.directory}: {what} failed ({_lance_message(exc)}); {state}") from None

    def _rows(self, records: list[dict[str, Any]], vectors: np.ndarray, meta: dict[str, Any]):
        import pyarrow as pa

        n = len(records)
        col = lambda key: [r[key] for r in records]  # noqa: E731
        meta_json = json.dumps(meta, sort_keys=True, ensure_ascii=False)
        data = {
            "recording_id": col("recording_id"), "path": col("path"),
            "segment": np.arange(n, dtype=np.int32), "start": col("start"), "end": col("end"),
            "start_sample": col("start_sample"), "end_sample": col("end_sample"), "transcript": col("transcript"),
            **{k: [meta.get(k)] * n for k in META_COLUMNS},
            "meta": [meta_json] * n,
            "added": pa.array([self._now_us] * n, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                                        self.embedding_dim),
        }
        return pa.table(data, schema=self._table.schema)

    @property
    def _now_us(self) -> int:
        # strictly increasing within this process, so recordings added in one commit keep their order
        now = max(time.time_ns() // 1000, getattr(self, "_last_us", 0) + 1)
        self._last_us = now
        return now

    def _prepare(self, recording_id, source, segments, vectors, meta, transcripts):
        v = normalise_vectors(vectors, self.embedding_dim, f"recording {recording_id}: vectors", self.model_id)
        records = segment_records(recording_id, source, segments, v.shape[0], transcripts)
        return self._rows(records, v, check_meta(meta, f"recording {recording_id}: metadata"))

    def add(self, recording_id: str, source: str | os.PathLike, segments: Sequence[Any], vectors: Any,
            meta: Mapping[str, Any] | str | None = None, *, transcripts: Sequence[str | None] | None = None,
            replace: bool = False) -> int:
        rows = self._prepare(recording_id, source, segments, vectors, meta, transcripts)
        self._commit(rows, [recording_id], replace)
        return rows.num_rows

    def add_many(self, items: Iterable[Mapping[str, Any]], replace: bool = False) -> int:
        """Add several recordings in one commit: items are dicts with the arguments of :meth:`add`
        (``recording_id``, ``source``, ``segments``, ``vectors``, optional ``meta``/``transcripts``)."""
        import pyarrow as pa

        tables, ids = [], []
        for it in items:
            tables.append(self._prepare(it["recording_id"], it["source"], it["segments"], it["vectors"],
                                        it.get("meta"), it.get("transcripts")))
            ids.append(it["recording_id"])
        if not tables:
            return 0
        if len(set(ids)) != len(ids):
            raise ValueError("add_many: a recording id appears twice")
        rows = pa.concat_tables(tables)
        self._commit(rows, ids, replace)
        return rows.num_rows

    def _commit(self, rows, ids: list[str], replace: bool) -> None:
        with self.writing():
            present = self._present(ids)
            if present and not replace:
                raise RecordingExistsError(f"recording {present[0]} is already in the index (pass replace=True "
                                           "to re-index it)")
            with self._committing(f"adding {len(ids)} recording(s) ({ids[0]}{', ...' if len(ids) > 1 else ''})"):
                if present:  # one commit: the new rows in, the recording's other old rows out
                    (self._table.merge_insert(["recording_id", "segment"])
                     .when_matched_update_all().when_not_matched_insert_all()
                     .when_not_matched_by_source_delete(self._id_filter(present))
                     .execute(rows))
                else:
                    self._table.add(rows)
            self._maintain()

    @staticmethod
    def _id_filter(ids: Sequence[str]) -> str:
        if len(ids) == 1:
            return f"recording_id = {sql_string(ids[0])}"
        return f"recording_id IN ({', '.join(sql_string(i) for i in ids)})"

    def _present(self, ids: Sequence[str]) -> list[str]:
        if len(ids) == 1:
            return list(ids) if ids[0] in self else []
        found = set(self._scan(["recording_id"], self._id_filter(ids)).column("recording_id").to_pylist())
        return [i for i in ids if i in found]

    def remove(self, recording_id: str) -> int:
        return self.remove_many([recording_id])[recording_id]

    def remove_many(self, recording_ids: Iterable[str]) -> dict[str, int]:
        """Drop several recordings in one commit; all must exist (else nothing is deleted)."""
        ids = list(dict.fromkeys(recording_ids))
        if not ids:
            raise ValueError("no recording ids given")
        with self.writing():
            rows = self._scan(["recording_id"], self._id_filter(ids)).column("recording_id").to_pylist()
            counts = {i: 0 for i in ids}
            for r in rows:
                counts[r] += 1
            unknown = [i for i, c in counts.items() if c == 0]
            if unknown:
                raise RecordingNotFoundError(f"{self.directory}: not in the index: {', '.join(map(repr, unknown[:5]))}"
                                             + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
                                             + "; nothing was deleted")
            with self._committing(f"deleting {len(ids)} recording(s)"):
                self._table.delete(self._id_filter(ids))
            self._maintain()
        return counts

    # ------------------------------------------------------------------ ANN maintenance

    def vector_index(self):
        """The table's vector index (LanceDB IndexConfig) or None."""
        for idx in self._table.list_indices():
            if list(idx.columns) == ["vector"]:
                return idx
        return None

    def _maintain(self) -> None:
        """After a write (under the lock): build, extend or retrain the ANN index; compact.

        The write itself is committed by then: a failure here is logged, not raised (searches
        stay correct, exact over the rows the index does not cover; the next write retries).
        """
        try:
            with self._committing("updating the ANN index"):
                self._maintain_now()
        except StoreWriteError as exc:
            logger.warning("%s", exc)

    def _maintain_now(self) -> None:
        n = self._table.count_rows()
        idx = self.vector_index()
        if self.kind != "flat" and n >= self.ann_threshold:
            trained = _TRAINED_ROWS.search(idx.name) if idx is not None else None
            if idx is None or (trained and n >= RETRAIN_GROWTH * int(trained.group(1))):
                self.build_ann_index()
                return
            stats = self._table.index_stats(idx.name)
            if stats is not None and stats.num_unindexed_rows >= max(1, UNINDEXED_FRACTION * n):
                self._optimize()
                return
        frag = (self._table.stats() or {}).get("fragment_stats", {})
        if frag.get("num_small_fragments", 0) >= COMPACT_FRAGMENTS:
            self._optimize()

    def optimize(self, keep_versions: timedelta = timedelta(hours=1)) -> None:
        """Compact small fragments, fold new rows into the ANN index, and delete the files of
        versions older than ``keep_versions`` (readers move to the latest commit on every query,
        so an hour is ample; timedelta(0) frees the most disk)."""
        with self.writing(), self._committing("optimising the table"):
            self._optimize(keep_versions)

    def _optimize(self, keep_versions: timedelta = timedelta(hours=1)) -> None:
        t0 = time.perf_counter()
        self._table.optimize(cleanup_older_than=keep_versions)
        logger.info("%s: optimised (compaction, index update) in %.1f s", self.directory, time.perf_counter() - t0)

    def build_ann_index(self) -> None:
        """(Re)build the ANN index over the whole table now (normally done at ``ann_threshold``)."""
        from lancedb.index import IvfHnswSq, IvfPq

        with self.writing():
            n = self._table.count_rows()
            if n == 0 or self.kind == "flat":
                return
            t0 = time.perf_counter()
            parts = _ann_partitions(n, self.kind)
            if self.kind == "hnsw":
                config = IvfHnswSq(distance_type="dot", num_partitions=parts, m=20, ef_construction=150)
            else:
                config = IvfPq(distance_type="dot", num_partitions=parts,
                               num_sub_vectors=_ann_sub_vectors(self.embedding_dim))
            old = self.vector_index()
            with self._committing("building the ANN index"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # k-means warnings on small or duplicate-heavy tables
                self._table.create_index("vector", config=config, replace=True, name=f"vector_{self.kind}_n{n}")
                if old is not None and old.name != f"vector_{self.kind}_n{n}":
                    self._table.drop_index(old.name)
                self._scalar_indexes()
            logger.info("%s: built a %s index over %d segments (%d partitions) in %.1f s", self.directory,
                        "IVF-HNSW-SQ" if self.kind == "hnsw" else "IVF-PQ", n, parts, time.perf_counter() - t0)

    def _scalar_indexes(self) -> None:
        """Indexes on the filter columns. Without them a ``where`` prefilter reads the columns of
        every row: at 100k segments it doubled an ANN search (docs/benchmarks.md); with them it
        adds ~20 %. Also makes ``in``/delete by recording id fast. Rows added later are scanned
        until ``optimize`` folds them in."""
        from lancedb.index import Bitmap, BTree, LabelList

        have = {tuple(i.columns) for i in self._table.list_indices()}
        for column, config in (("recording_id", BTree()), ("speaker", Bitmap()), ("date", BTree()),
                               ("title", BTree()), ("tags", LabelList())):
            if (column,) not in have:
                self._table.create_index(column, config=config)

    # ------------------------------------------------------------------ reading

    def _scan(self, columns: list[str], where: str | None = None, ordered: bool = False):
        """Columns of the (matching) rows; ``ordered``: in the order recordings were added."""
        extra = [c for c in ("added", "segment") if ordered and c not in columns]
        q = self._table.search().select(columns + extra)
        if where:
            q = q.where(where)
        t = q.limit(None).to_arrow()
        if ordered and t.num_rows:
            t = t.sort_by([("added", "ascending"), ("segment", "ascending")]).select(columns)
        return t

    def __len__(self) -> int:
        return self._table.count_rows()

    def __contains__(self, recording_id: object) -> bool:
        if not isinstance(recording_id, str):
            return False
        return self._table.count_rows(f"recording_id = {sql_string(recording_id)}") > 0

    @property
    def version(self) -> int:
        """The LanceDB table version (one per commit)."""
        return self._table.version

    def recordings(self) -> dict[str, str]:
        t = self._scan(["recording_id", "path"], ordered=True)
        if t.num_rows == 0:
            return {}
        g = t.group_by("recording_id", use_threads=False).aggregate([("path", "first")])
        return dict(zip(g.column("recording_id").to_pylist(), g.column("path_first").to_pylist()))

    def list_recordings(self) -> list[dict[str, Any]]:
        t = self._scan(["recording_id", "path", "end", "meta"], ordered=True)
        if t.num_rows == 0:
            return []
        g = t.group_by("recording_id", use_threads=False).aggregate(
            [("path", "first"), ("end", "count"), ("end", "max"), ("meta", "first")])
        return [{"recording_id": rid, "source": src, "segments": int(n), "seconds": float(sec),
                 "meta": json.loads(meta) if meta else {}}
                for rid, src, n, sec, meta in zip(*(g.column(c).to_pylist() for c in
                                                    ("recording_id", "path_first", "end_count", "end_max",
                                                     "meta_first")))]

    @property
    def segments(self) -> list[dict[str, Any]]:
        """Per-segment records (as SegmentIndex.segments), in insertion order; the whole table is read."""
        return self._scan(_SEGMENT_COLUMNS, ordered=True).to_pylist()

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) float32 unit vectors in the order of :attr:`segments` (the whole column is read)."""
        col = self._scan(["vector"], ordered=True).column("vector").combine_chunks()
        return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.embedding_dim)

    def search(self, query_vectors: Any, top_k: int = 10, where: str | None = None,
               exact: bool = False) -> list[list[Hit]]:
        """Nearest segments for each query row, best first; ``where`` filters segments first (SQL).

        With an ANN index the search is approximate (``exact=True`` bypasses it); without one, or
        for ``exact``, it compares with every (matching) segment.
        """
        k = check_top_k(top_k)
        q = normalise_vectors(query_vectors, self.embedding_dim, "query vectors", self.model_id)
        if where is not None and (not isinstance(where, str) or not where.strip()):
            raise FilterError(f"where must be a non-empty SQL condition, got {where!r}")
        n = len(self)
        if k > n and not self._warned_topk and not where:
            warnings.warn(f"top_k={k} is larger than the {n} segments in the index; returning all {n}",
                          stacklevel=2)
            self._warned_topk = True
        if n == 0 and not where:
            return [[] for _ in range(q.shape[0])]
        idx = None if exact else self.vector_index()
        if where and self._matching_rows(where) <= FLAT_FILTER_ROWS:
            # exact over its rows beats HNSW walking a sparse mask; until its copy is in memory (read in
            # the background: at 1M rows it takes ~190 ms for 25,900 of them), LanceDB's exact search
            copy = self._filter_copy(where)
            if copy is not None:
                return self._search_in_memory(q, k, copy)
            idx = None
        if not where and (idx is None or exact) and n <= MEMORY_SEARCH_ROWS:
            return self._search_in_memory(q, k)
        builder = (self._table.search(q if q.shape[0] > 1 else q[0], vector_column_name="vector")
                   .distance_type("dot").select(_HIT_COLUMNS).with_row_id(True).limit(max(1, min(k, n))))
        if where:
            builder = builder.where(where, prefilter=True)
        if idx is None:
            builder = builder.bypass_vector_index()
        else:
            builder = builder.refine_factor(self.refine_factor)
            if self.kind == "hnsw":
                builder = builder.ef(max(self.ef, k * self.refine_factor))
            builder = builder.nprobes(self.nprobes or self._default_nprobes(idx))
        try:
            table = builder.to_arrow()
        except ValueError as exc:
            if where:
                raise FilterError(_filter_message(where, exc)) from None
            raise
        out: list[list[Hit]] = [[] for _ in range(q.shape[0])]
        qi = table.column("query_index").to_pylist() if "query_index" in table.column_names else [0] * table.num_rows
        for i, r in zip(qi, table.to_pylist()):
            hits = out[i]
            hits.append(_hit(r, 1.0 - float(r["_distance"]), len(hits) + 1, json.loads(r["meta"]) if r["meta"] else {}))
        return out

    def _matching_rows(self, where: str) -> int:
        """Segments ``where`` matches in the current version; cached per (version, filter), as the
        plan of a repeated filter (a server's "this speaker" or "this week") does not change until a write."""
        key = (self._table.version, where)
        count = self._filter_counts.get(key)
        if count is None:
            try:
                count = int(self._table.count_rows(where))
            except ValueError as exc:
                raise FilterError(_filter_message(where, exc)) from None
            if len(self._filter_counts) >= 256:
                self._filter_counts.clear()
            self._filter_counts[key] = count
        return count

    def _read_copy(self, version: int, where: str | None) -> tuple[np.ndarray, Any] | None:
        """(vectors, hit columns with row ids as an arrow table) of the rows of ``version`` (those ``where``
        matches), kept in the copies while they fit in MEMORY_COPY_BYTES (least recently used dropped
        first); None if a commit landed during the read (the next search reads again)."""
        query = self._table.search().select(["vector", *(c for c in _HIT_COLUMNS if c != "_distance")]).with_row_id(True)
        if where:
            query = query.where(where)
        try:
            t = query.limit(None).to_arrow()
        except ValueError as exc:
            if where:
                raise FilterError(_filter_message(where, exc)) from None
            raise
        if self._table.version != version:
            return None
        vectors = (t.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
                   .reshape(-1, self.embedding_dim).astype(np.float32, copy=False))
        copy = (vectors, t.drop_columns(["vector"]))
        with self._copies_lock:
            for old in [key for key in self._copies if key[0] != version]:  # an older version is never searched again
                del self._copies[old]
            self._copies[(version, where)] = copy
            while len(self._copies) > 1 and sum(v.nbytes + r.nbytes for v, r in self._copies.values()) > MEMORY_COPY_BYTES:
                self._copies.popitem(last=False)
        return copy

    def _cached_copy(self, key: tuple[int, str | None]) -> tuple[np.ndarray, Any] | None:
        with self._copies_lock:
            copy = self._copies.get(key)
            if copy is not None:
                self._copies.move_to_end(key)
            return copy

    def _memory_copy(self) -> tuple[np.ndarray, Any]:
        """The whole latest committed version in memory (small tables), read once per version: a write
        (this store's, another process's, a delete) makes a new version, and the next search reads again."""
        while True:
            version = self._table.version
            copy = self._cached_copy((version, None)) or self._read_copy(version, None)
            if copy is not None:
                return copy

    def _filter_copy(self, where: str) -> tuple[np.ndarray, Any] | None:
        """The in-memory copy of the rows ``where`` matches in the latest version, or None while a
        background thread reads it (started by the first search that asks)."""
        key = (self._table.version, where)
        copy = self._cached_copy(key)
        if copy is None:
            with self._copies_lock:
                for done in [key for key, reader in self._copy_readers.items() if not reader.is_alive()]:
                    del self._copy_readers[done]
                if key not in self._copy_readers:
                    reader = threading.Thread(target=self._read_copy_quietly, args=key, daemon=True,
                                              name="clsr-filter-copy")
                    self._copy_readers[key] = reader
                    reader.start()
        return copy

    def _read_copy_quietly(self, version: int, where: str) -> None:
        try:
            self._read_copy(version, where)
        except Exception as exc:  # the search that started it has its answer; the next one tries again
            logger.debug("reading the rows of %r into memory failed: %s", where, exc)

    def _search_in_memory(self, q: np.ndarray, k: int, copy: tuple[np.ndarray, Any] | None = None) -> list[list[Hit]]:
        vectors, rows = copy if copy is not None else self._memory_copy()
        n = rows.num_rows
        if not n:
            return [[] for _ in range(q.shape[0])]
        scores = q @ vectors.T
        k = min(k, n)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(np.arange(n), scores.shape)
        out = []
        for qi in range(q.shape[0]):
            order = top[qi][np.argsort(-scores[qi, top[qi]], kind="stable")]
            out.append([_hit(r, float(scores[qi, j]), rank, json.loads(r["meta"]) if r["meta"] else {})
                        for rank, (j, r) in enumerate(zip(order, rows.take(order).to_pylist()), 1)])
        return out

    def _default_nprobes(self, idx) -> int:
        trained = _TRAINED_ROWS.search(idx.name)
        parts = _ann_partitions(int(trained.group(1)), self.kind) if trained else 256
        return max(20, parts // 8)  # 1/8 of the partitions (all of IVF-HNSW's few); see docs/benchmarks.md


def _hit(r: dict[str, Any], score: float, rank: int, meta: dict[str, Any]) -> Hit:
    """A Hit from a row of the hit columns with its ``_rowid`` (a LanceDB answer or the in-memory copy)."""
    return Hit(score=score, rank=rank, row=int(r["_rowid"]), recording_id=r["recording_id"], path=r["path"],
               start=r["start"], end=r["end"], transcript=r["transcript"], start_sample=r["start_sample"],
               end_sample=r["end_sample"], meta=meta)


def _lock_holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown process"
    except OSError:
        return "unknown process"


def _filter_message(where: str, exc: BaseException) -> str:
    text = _lance_message(exc)
    text = re.sub(r"^Invalid input, ", "", text)
    m = re.search(r"No field named ([^.\s]+)", text)
    if m:
        name = m.group(1).strip('"`')
        return (f"where {where!r}: no column {name!r} (columns: {', '.join(FILTER_COLUMNS)}; other metadata keys "
                "are stored but not filterable; quote string values: speaker = 'Ada')")
    text = re.sub(r"SELECT 1 FROM t WHERE ", "", text)
    return f"where {where!r} does not parse as a SQL condition: {text}"


# --------------------------------------------------------------------------- migration


def migrate_faiss_index(directory: str | os.PathLike, out: str | os.PathLike | None = None,
                        kind: str = "hnsw", ann_threshold: int = DEFAULT_ANN_THRESHOLD) -> dict[str, Any]:
    """Convert a FAISS index directory (index.json + vectors.npy) into a LanceDB store.

    The FAISS index is verified (checksum) and its vectors, times, transcripts and model identity
    are copied; nothing is re-encoded. Without ``out`` the conversion is in place: the new store
    is written beside it and swapped in, and the old directory is kept as ``DIR.faiss-v1``.
    Returns ``{"index", "backup", "segments", "recordings", "model_id", "model_version"}``.
    """
    from .index import SegmentIndex

    src = Path(directory)
    fmt = index_format(src)
    if fmt == "lance":
        raise ValueError(f"{src}: already a LanceDB index; nothing to migrate")
    if fmt != "faiss":
        raise IndexNotFoundError(str(src), FAISS_JSON)
    old = SegmentIndex.load(src)  # refuses a corrupt or edited index
    target = Path(out) if out is not None else src
    if out is not None and index_format(target) not in ("missing", "empty"):
        raise ValueError(f"{target}: exists and is not empty; choose a new directory for the migrated index")
    staging = src.parent / f".{src.name}.migrate-{uuid.uuid4().hex[:8]}"
    try:
        store = LanceSegmentStore.create(staging, old.model_id, old.model_version, old.embedding_dim, kind=kind,
                                         ann_threshold=ann_threshold)
        segs, vecs = old.segments, old.vectors
        by_rec: dict[str, list[int]] = {}
        for i, s in enumerate(segs):
            by_rec.setdefault(s["recording_id"], []).append(i)
        metas = old.recording_meta
        items = [{"recording_id": rid, "source": segs[rows[0]]["path"], "segments": [segs[i] for i in rows],
                  "vectors": vecs[rows], "meta": metas.get(rid)} for rid, rows in by_rec.items()]
        if items:
            store.add_many(items)
        if len(store) != len(old):
            raise IndexMismatchError(f"{src}: migrated {len(store)} of {len(old)} segments; the FAISS index is "
                                     "left as it was")
        backup = None
        if out is None:
            backup = src.with_name(src.name + ".faiss-v1")
            n = 1
            while backup.exists():
                n += 1
                backup = src.with_name(f"{src.name}.faiss-v1.{n}")
            os.rename(src, backup)
            os.rename(staging, src)
        else:
            if target.is_dir():
                target.rmdir()
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("%s: migrated %d segments of %d recordings to LanceDB at %s", src, len(old),
                len(by_rec), target)
    return {"index": str(target), "backup": None if backup is None else str(backup), "segments": len(old),
            "recordings": len(by_rec), "model_id": old.model_id, "model_version": old.model_version}

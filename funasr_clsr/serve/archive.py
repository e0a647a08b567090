"""The server's view of its segment store: shared by request threads and the indexing worker.

The store is the LanceDB one (``LongFormRetriever.open_index``'s default for a directory): each
write is one commit and readers only ever see committed versions, so searches go on while a
recording is added or an ANN index is built. Writes from this process (the indexing worker's
adds, a request's delete) take one lock: the store's own writer lock (a file lock) is re-entrant
per store object, so it keeps other processes out but not a second thread of this one. Encoding,
the slow part of indexing, runs before the add, outside the lock.
"""
from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

from ..retrieval.store import LanceSegmentStore, RecordingNotFoundError, sql_string

logger = logging.getLogger(__name__)

__all__ = ["Archive", "UnknownRecordingError"]

_WRITES = ("add", "add_many", "remove", "remove_many", "build_ann_index")
#: An upload's folder: ``<recording id>-<8 hex digits>`` (see Archive.upload_path).
_UPLOAD_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}-[0-9a-f]{8}")


class UnknownRecordingError(KeyError):
    """A recording id that is not in the store (or no longer: another writer may have removed it)."""

    def __str__(self) -> str:
        return f"unknown recording id {self.args[0]!r}"


class _WriteLocked:
    """The store with its write methods holding ``lock``; everything else passes through."""

    def __init__(self, store: LanceSegmentStore, lock: threading.Lock):
        self._store, self._lock = store, lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if name not in _WRITES:
            return value

        def locked(*args, **kwargs):
            with self._lock:
                return value(*args, **kwargs)

        return locked

    def __contains__(self, recording_id: object) -> bool:
        return recording_id in self._store

    def __len__(self) -> int:
        return len(self._store)


class _CountingModel:
    """The model as the indexer sees it: reports each encoded batch to the running job.

    ``index_recording`` draws a tqdm bar only; counting the windows handed to ``encode_speech``
    gives the server a job progress without a second copy of the pipeline.
    """

    def __init__(self, model: Any):
        self._model = model
        self.on_batch: Callable[[int], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def encode_speech(self, inputs, *args, **kwargs):
        out = self._model.encode_speech(inputs, *args, **kwargs)
        if self.on_batch is not None:
            self.on_batch(len(inputs))
        return out


class Archive:
    """The store in ``index_dir`` (created when missing) plus the uploaded files it owns.

    ``uploads_dir`` holds recordings uploaded to the server; a recording whose source lies there
    is the server's own copy and is deleted with the recording.
    """

    def __init__(self, retriever: Any, index_dir: str | os.PathLike, uploads_dir: str | os.PathLike):
        self.retriever = retriever
        self.index_dir = Path(index_dir)
        self.uploads_dir = Path(uploads_dir).resolve()
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        store = retriever.open_index(self.index_dir, create=True)
        if not isinstance(store, LanceSegmentStore):
            raise TypeError(f"{index_dir}: the server needs the LanceDB store, got {type(store).__name__}")
        self._store = store
        self._write_lock = threading.Lock()
        self._writer = _WriteLocked(store, self._write_lock)
        self._discard_orphans()
        # The indexing worker's retriever: the same settings, the model counted.
        self._indexer = copy.copy(retriever)
        self._counting = _CountingModel(retriever.model)
        self._indexer.model = self._counting

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, recording_id: str) -> bool:
        return recording_id in self._store

    def recordings(self) -> list[dict[str, Any]]:
        """``[{"recording_id", "name", "segments", "seconds", "meta"}]`` (name: the source's file name)."""
        rows = [dict(r) for r in self._store.list_recordings()]
        for r in rows:
            r["name"] = os.path.basename(str(r.pop("source", "")))  # a server path is none of a client's business
        return rows

    def source(self, recording_id: str) -> str:
        """The audio file a recording was indexed from."""
        src = self._store.recordings().get(recording_id)
        if src is None:
            raise UnknownRecordingError(recording_id)
        return src

    def search(self, vectors: Any, top_k: int, where: str | None = None) -> list[list[dict[str, Any]]]:
        """Hit dicts per query row, best first (``where``: the store's SQL filter; a bad one raises
        :class:`~funasr_clsr.retrieval.store.FilterError`, a ValueError)."""
        return [[h.to_dict() for h in hits] for hits in self._store.search(vectors, top_k, where=where)]

    def recording_scores(self, recording_id: str, vector: Any) -> list[dict[str, Any]]:
        """Every segment of one recording with its score for ``vector``, in time order."""
        n = len(self._store)  # an upper bound: the filter keeps this recording's segments only
        hits = self._store.search(vector, max(n, 1), where=f"recording_id = {sql_string(recording_id)}",
                                  exact=True)[0]
        if not hits:
            raise UnknownRecordingError(recording_id)
        return sorted((h.to_dict() for h in hits), key=lambda h: h["start"])

    # ------------------------------------------------------------------ writing

    def add(self, path: str, recording_id: str, meta: dict | None = None, replace: bool = False,
            on_batch: Callable[[int], None] | None = None) -> int:
        """Index one recording (called from the one indexing worker); returns its segment count.

        The store changes only after the whole recording is encoded (``index_recording``), so a
        failure leaves it as it was.
        """
        old = self._owned_source(recording_id) if replace else None
        self._counting.on_batch = on_batch
        try:
            n = self._indexer.index_recording(path, self._writer, recording_id=recording_id, progress=False,
                                              replace=replace, meta=meta)
        finally:
            self._counting.on_batch = None
        if old is not None and old != Path(path).resolve():
            self.discard_upload(old)
        return n

    def remove(self, recording_id: str) -> int:
        """Drop a recording (and the server's copy of its audio); returns the segments removed."""
        owned = self._owned_source(recording_id)
        try:
            n = self._writer.remove(recording_id)
        except RecordingNotFoundError:
            raise UnknownRecordingError(recording_id) from None
        if owned is not None:
            self.discard_upload(owned)
        return int(n)

    def _owned_source(self, recording_id: str) -> Path | None:
        src = self._store.recordings().get(recording_id)
        if src is None:
            return None
        p = Path(src).resolve()
        return p if p.is_relative_to(self.uploads_dir) else None

    def _discard_orphans(self) -> None:
        """Uploads a stopped server left behind (a job that never committed, a spoken question)."""
        used = {Path(src).resolve().parent for src in self._store.recordings().values()}
        for p in self.uploads_dir.iterdir():
            if p.is_dir() and _UPLOAD_FOLDER.fullmatch(p.name) and p not in used:
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file() and p.name.startswith(".question-"):
                p.unlink(missing_ok=True)
            else:
                continue
            logger.info("%s: removed an upload no recording uses", p)

    def upload_path(self, recording_id: str, filename: str) -> Path:
        """Where an upload is kept: a folder of its own, so that the file keeps the client's name."""
        folder = self.uploads_dir / f"{recording_id}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder / filename

    def discard_upload(self, path: str | os.PathLike) -> None:
        """Delete an uploaded file and its folder (only ever inside ``uploads_dir``)."""
        p = Path(path).resolve()
        if not p.is_relative_to(self.uploads_dir) or p == self.uploads_dir:
            return
        try:
            p.unlink(missing_ok=True)
            if p.parent != self.uploads_dir:
                p.parent.rmdir()
        except OSError as exc:
            logger.warning("%s: could not delete the uploaded audio (%s)", p, exc)

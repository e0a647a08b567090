"""Indexing jobs: one background worker thread, so writes to the store never overlap.

A job is ``queued`` -> ``running`` -> ``done`` | ``failed``. Progress counts the windows
encoded so far against the recording's window count. A failed job leaves the store as it was
(``index_recording`` adds a recording only once it is fully encoded) and deletes the server's
copy of an uploaded file.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..audio import audio_info
from ..longform import window_bounds
from .archive import Archive

logger = logging.getLogger(__name__)

__all__ = ["IndexingJobs", "Job"]

#: Finished jobs remembered for GET /v1/jobs/{id}; the oldest are forgotten first.
KEEP_FINISHED = 1000


@dataclass
class Job:
    id: str
    recording_id: str
    name: str
    path: str
    meta: dict | None = None
    replace: bool = False
    owned: bool = False  # the file is the server's upload copy
    state: str = "queued"
    done: int = 0
    total: int | None = None
    segments: int | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        progress = None
        if self.state == "done":
            progress = 1.0
        elif self.total:
            progress = round(min(self.done / self.total, 1.0), 4)
        return {"job_id": self.id, "recording_id": self.recording_id, "name": self.name, "state": self.state,
                "progress": progress, "done": self.done, "total": self.total, "segments": self.segments,
                "error": self.error, "created": self.created, "started": self.started, "finished": self.finished}


class IndexingJobs:
    """A queue of indexing jobs worked off by one daemon thread."""

    def __init__(self, archive: Archive):
        self.archive = archive
        self._jobs: "OrderedDict[str, Job]" = OrderedDict()
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Job | None]" = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="clsr-indexer", daemon=True)
        self._worker.start()

    def submit(self, path: str, recording_id: str, name: str, meta: dict | None = None, replace: bool = False,
               owned: bool = False) -> Job:
        job = Job(id=uuid.uuid4().hex, recording_id=recording_id, name=name, path=path, meta=meta,
                  replace=replace, owned=owned)
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def pending(self) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.state in ("queued", "running")]

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop after the running job (queued ones are dropped, their uploads deleted)."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._fail(job, "the server stopped before this job ran")
        self._queue.put(None)
        self._worker.join(timeout)

    # ------------------------------------------------------------------ worker

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state in ("done", "failed")]
        for k in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[k]

    def _fail(self, job: Job, message: str) -> None:
        job.state, job.error, job.finished = "failed", message, time.time()
        if job.owned:
            self.archive.discard_upload(job.path)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        job.state, job.started = "running", time.time()
        retriever = self.archive.retriever
        try:
            if retriever.segmenter == "fixed":  # known up front; VAD segments are only known once cut
                info = audio_info(job.path)
                n = int(round(info.frames * retriever.sr / info.sample_rate))
                job.total = len(window_bounds(max(n, 1), retriever.sr, retriever.window_s, retriever.overlap_s))

            def on_batch(count: int) -> None:
                job.done += count

            segments = self.archive.add(job.path, job.recording_id, meta=job.meta, replace=job.replace,
                                        on_batch=on_batch)
        except Exception as exc:  # noqa: BLE001 - any failure is the job's one-line error; the worker goes on
            message = " ".join(str(exc).split()) or type(exc).__name__
            if job.owned:  # the client never saw the server's path: name the upload instead
                message = message.replace(job.path, job.name)
            logger.error("indexing job %s (%s) failed: %s", job.id, job.recording_id, message)
            self._fail(job, message)
            return
        if segments == 0 and job.recording_id not in self.archive:
            self._fail(job, f"{job.name}: nothing to index (the recording is silent)")
            return
        job.segments, job.done, job.state, job.finished = segments, job.total or segments, "done", time.time()
        logger.info("indexing job %s: %s indexed (%d segments)", job.id, job.recording_id, segments)

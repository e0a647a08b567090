"""Index recordings on a Ray cluster: Ray Data cuts the windows, an actor pool encodes them.

    retriever.index_recordings(items, "archive.idx", ray="local", num_workers=4)
    funasr-clsr index --index archive.idx --list all.scp --ray ray://head:10001 --num-workers 8 \\
        --num-gpus-per-worker 1

The pipeline (``ray.data``):

1. ``from_items``: one row per recording still to index (one block each);
2. ``flat_map(cut_recording)``: tasks stream each recording and cut it into the retriever's fixed
   windows (``segmentation.segment_recording``, as the single process does), one row per window;
   with ``segmenter="vad"`` an actor pool (``VADCutter``, the VAD model loaded once per actor) cuts
   at speech pauses instead. A read error ends the recording with an error row (it is reported and
   not indexed);
3. ``map_batches(WindowEncoder, compute=ActorPoolStrategy(size=num_workers))``: each actor loads
   the model once (from the model directory, or the object store for an in-memory model) and
   encodes ``batch_size`` windows per call with ``longform.encode_segments``, the single
   process's own encoding function (silent windows are left out the same way);
4. the driver collects the rows of each recording and, once all of its windows are back, adds
   the recording to the LanceDB store in one commit, so an interrupted run resumes like the
   single process.

The recordings and the model directory must be readable at the same paths on every node (a
shared file system); the index directory is written by the driver only. Windows of one batch may
come from different recordings, so the padding differs from the single process's batches: the
vectors agree to a cosine of at least 0.9999 (tests/retrieval/test_ray_indexing.py).
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..audio import AudioError
from .store import LanceSegmentStore, RecordingExistsError

__all__ = ["RayUnavailableError", "connect", "index_with_ray"]

logger = logging.getLogger(__name__)


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayUnavailableError(f"Ray is not installed ({exc.name or exc}): pip install 'funasr_clsr[ray]' "
                                  "(ray[data]), or index without --ray") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join (or start) a Ray cluster; returns True if this call started it (and should shut it down).

    ``address``: ``"local"`` (a running local cluster, else a new one on this machine with
    ``num_cpus`` CPUs), ``"auto"`` (a running cluster this machine belongs to: ``ray start``),
    or an address: ``ray://host:10001`` (Ray Client) or ``host:6379`` (the head's GCS).
    Already inside ``ray.init()``: used as it is.
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "configure_logging": False}
    try:
        if address in (None, "", "local"):
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            _check_reachable(address)
            ray.init(address=address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError, TimeoutError...
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        where = "a local Ray instance" if address in (None, "", "local") else f"the Ray cluster at {address!r}"
        raise RayUnavailableError(f"cannot reach {where} ({text}); start one with `ray start --head` or "
                                  "check the address") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``host:port`` / ``ray://host:port`` nothing listens on: ``ray.init`` retries such an
    address for minutes (measured: over 2 min for 127.0.0.1:1) before it gives up."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- the Ray Data stages


def cut_recording(row: dict[str, Any], segmenter: str, window_s: float, overlap_s: float, sr: int,
                  vad_model: Any = None) -> Iterator[dict[str, Any]]:
    """One recording -> its segments (rows with audio: fixed windows or VAD regions), streamed: one
    segment in memory.

    The last row carries ``count`` (the recording's number of rows; 0 before it), so the driver
    knows when a recording is complete. A read error ends the recording with an error row.
    """
    from .segmentation import segment_recording

    base = {"recording_id": row["recording_id"], "path": row["path"], "error": ""}
    prev, i = None, 0
    try:
        segments, _ = segment_recording(row["path"], segmenter, window_s, overlap_s, sr, vad_model)
        for s in segments:
            if prev is not None:
                yield prev
            prev = {**base, "index": i, "count": 0, "start": s["start"], "end": s["end"],
                    "start_sample": s["start_sample"], "end_sample": s["end_sample"],
                    "audio": np.asarray(s["audio"], np.float32)}
            i += 1
    except (AudioError, OSError, ValueError, RuntimeError) as exc:
        if prev is not None:
            yield prev
        yield {**base, "index": i, "count": i + 1, "start": 0.0, "end": 0.0, "start_sample": 0, "end_sample": 0,
               "audio": np.zeros(0, np.float32), "error": " ".join(str(exc).split()) or type(exc).__name__}
        return
    if prev is None:
        yield {**base, "index": 0, "count": 1, "start": 0.0, "end": 0.0, "start_sample": 0, "end_sample": 0,
               "audio": np.zeros(0, np.float32), "error": f"{row['path']}: no {segmenter} segments"}
        return
    yield {**prev, "count": i}


class VADCutter:
    """A Ray Data actor for ``segmenter="vad"``: holds the VAD model (built once per actor from a name or
    directory, or the driver's own object through the object store) and cuts recordings with it."""

    def __init__(self, vad: Any, vad_ref: Any, window_s: float, sr: int):
        if vad_ref is not None:
            import ray

            vad = ray.get(vad_ref)
        # a name or directory is built by vad_segments, once per actor process (segmentation's VAD cache)
        self.vad, self.window_s, self.sr = vad, window_s, sr

    def __call__(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return cut_recording(row, "vad", self.window_s, 0.0, self.sr, self.vad)


class WindowEncoder:
    """A Ray Data actor: loads the CLSR model once, then encodes batches of windows."""

    def __init__(self, model_dir: str | None, model_ref: Any, batch_size: int, threads: int, device: str):
        import torch

        torch.set_num_threads(max(1, threads))
        if model_dir is not None:
            from .pipeline import load_model

            self.model, _ = load_model(model_dir, device=device, ncpu=max(1, threads))
        else:
            import ray

            self.model = ray.get(model_ref)
            if hasattr(self.model, "to"):  # a torch module (ONNX models run where they are)
                self.model = self.model.to(device).eval()
        torch.set_num_threads(max(1, threads))  # FunASR's AutoModel sets its own
        self.batch_size = batch_size
        self.dim = int(self.model.text_encoder.hidden_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..longform import encode_segments, is_silent

        n = len(batch["recording_id"])
        vectors = np.zeros((n, self.dim), np.float32)
        texts = [""] * n
        silent = np.ones(n, bool)
        todo = [i for i in range(n) if not batch["error"][i] and not is_silent(batch["audio"][i])]
        if todo:
            segs = [{"row": i, "audio": np.asarray(batch["audio"][i], np.float32)} for i in todo]
            kept, vecs, got = encode_segments(self.model, segs, self.batch_size, name="ray batch")
            for seg, v, t in zip(kept, vecs, got):
                vectors[seg["row"]], texts[seg["row"]], silent[seg["row"]] = v, t, False
        out = {k: batch[k] for k in batch if k != "audio"}
        out.update(vector=vectors, transcript=np.asarray(texts, dtype=object), silent=silent)
        return out


# --------------------------------------------------------------------------- driver


def index_with_ray(retriever: Any, items: Sequence[tuple[str | None, str, dict[str, Any]]],
                   store: LanceSegmentStore, address: str | None = "local", num_workers: int = 2,
                   num_gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, replace: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Index ``(recording_id or None, path, meta)`` items into ``store`` with Ray (see the module doc).

    Returns the same report as ``LongFormRetriever.index_recordings`` plus ``ray``: the actor
    count and the cluster's resources.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    if num_gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise ValueError("num_gpus_per_worker must be >= 0 and cpus_per_worker > 0")
    report: dict[str, Any] = {"index": str(store.directory), "indexed": [], "skipped": [], "failed": []}
    known = store.recordings()
    todo: list[dict[str, Any]] = []
    for rid, path, meta in items:
        rid = rid or str(Path(path).resolve())
        entry = {"path": os.fspath(path), "recording_id": rid, "segments": 0}
        if rid in known and not replace:
            report["skipped"].append(entry)
            continue
        try:
            retriever.probe_recording(path)  # missing / undecodable / empty: one line, before Ray
        except (AudioError, OSError, ValueError) as exc:
            msg = " ".join(str(exc).split())
            report["failed"].append({"path": os.fspath(path), "error": msg if os.fspath(path) in msg else f"{path}: {msg}"})
            continue
        todo.append({"recording_id": rid, "path": str(Path(path).resolve()), "given_path": os.fspath(path),
                     "meta": meta})
    ray = _ray()
    started = False
    if todo:
        started = connect(address, num_cpus=None if address not in (None, "", "local")
                          else max(2, int(np.ceil(num_workers * cpus_per_worker))))
    try:
        if todo:
            _run(ray, retriever, todo, store, report, num_workers, num_gpus_per_worker, cpus_per_worker, replace,
                 progress)
            # recordings finish in any order across actors; the report lists them as the input did
            order = {t["recording_id"]: i for i, t in enumerate(todo)}
            report["indexed"].sort(key=lambda e: order[e["recording_id"]])
        report["ray"] = {"num_workers": num_workers, "num_gpus_per_worker": num_gpus_per_worker,
                         "cluster": ray.cluster_resources() if ray.is_initialized() else None}
    finally:
        if started:
            ray.shutdown()
    report["num_segments"] = len(store)
    report["num_recordings"] = len(store.recordings())
    return report


def _run(ray, retriever, todo, store, report, num_workers, num_gpus, cpus_per_worker, replace, progress) -> None:
    model_dir = retriever.model_dir if retriever.model_dir and Path(retriever.model_dir, "config.yaml").is_file() \
        else None
    model_ref = None if model_dir is not None else ray.put(retriever.model)
    by_id = {t["recording_id"]: t for t in todo}
    ds = ray.data.from_items([{"recording_id": t["recording_id"], "path": t["path"]} for t in todo],
                             override_num_blocks=len(todo))
    # Reading and cutting is light next to encoding: no CPU reserved, so the actors can hold all of them.
    if retriever.segmenter == "vad":
        vad = retriever.vad_model
        by_name = vad is None or isinstance(vad, (str, os.PathLike))
        ds = ds.flat_map(VADCutter, fn_constructor_kwargs={"vad": os.fspath(vad) if by_name and vad else None,
                                                           "vad_ref": None if by_name else ray.put(vad),
                                                           "window_s": retriever.window_s, "sr": retriever.sr},
                         num_cpus=0, compute=ray.data.ActorPoolStrategy(size=max(1, num_workers)))
    else:
        ds = ds.flat_map(cut_recording, fn_kwargs={"segmenter": "fixed", "window_s": retriever.window_s,
                                                   "overlap_s": retriever.overlap_s, "sr": retriever.sr},
                         num_cpus=0, compute=ray.data.TaskPoolStrategy(size=max(1, num_workers)))
    device = "cuda" if num_gpus > 0 else "cpu"
    ds = ds.map_batches(WindowEncoder, batch_size=retriever.batch_size, batch_format="numpy",
                        fn_constructor_kwargs={"model_dir": None if model_dir is None else str(model_dir),
                                               "model_ref": model_ref, "batch_size": retriever.batch_size,
                                               "threads": max(1, int(cpus_per_worker)), "device": device},
                        compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=cpus_per_worker,
                        num_gpus=num_gpus or None)
    pending: dict[str, list[dict[str, Any]]] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="recordings (ray)", unit="rec")
    expected: dict[str, int] = {}
    try:
        for row in ds.iter_rows():
            rid = row["recording_id"]
            rows = pending.setdefault(rid, [])
            rows.append(row)
            if int(row["count"]):
                expected[rid] = int(row["count"])
            if len(rows) != expected.get(rid):
                continue
            del pending[rid]
            _commit(by_id[rid], sorted(rows, key=lambda r: int(r["index"])), store, report, replace)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    for rid in pending:  # cannot happen unless a window went missing; never commit half a recording
        report["failed"].append({"path": by_id[rid]["given_path"], "error": f"{by_id[rid]['given_path']}: "
                                 "incomplete results from the Ray workers; not indexed"})


def _commit(item: dict[str, Any], rows: list[dict[str, Any]], store: LanceSegmentStore, report: dict[str, Any],
            replace: bool) -> None:
    path, rid = item["given_path"], item["recording_id"]
    errors = [r["error"] for r in rows if r["error"]]
    if errors:
        msg = str(errors[0])
        report["failed"].append({"path": path, "error": msg if path in msg else f"{path}: {msg}"})
        logger.error("%s", report["failed"][-1]["error"])
        return
    kept = [r for r in rows if not r["silent"]]
    silent = len(rows) - len(kept)
    if not kept:
        logger.warning("%s: the recording is silent (%d segments); nothing to search in it", path, len(rows))
        report["skipped"].append({"path": path, "recording_id": rid, "segments": 0})
        return
    if silent:
        logger.warning("%s: %d of %d segments are silent and were left out", path, silent, len(rows))
    segments = [{"start": float(r["start"]), "end": float(r["end"]), "start_sample": int(r["start_sample"]),
                 "end_sample": int(r["end_sample"])} for r in kept]
    vectors = np.stack([np.asarray(r["vector"], np.float32) for r in kept])
    try:
        n = store.add(rid, item["path"], segments, vectors, item["meta"],
                      transcripts=[str(r["transcript"]) for r in kept], replace=replace)
    except RecordingExistsError:
        report["skipped"].append({"path": path, "recording_id": rid, "segments": 0})
        return
    report["indexed"].append({"path": path, "recording_id": rid, "segments": n})

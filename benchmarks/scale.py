#!/usr/bin/env python
"""Archive scale: the LanceDB segment store at 10k-1M segments, and Ray indexing vs one process.

    python benchmarks/scale.py --sizes 10000,100000 --dims 384,768 --json benchmarks/results/scale.json
    python benchmarks/scale.py --sizes 1000000 --dims 384 --queries 100 ...      # the 1M target
    python benchmarks/scale.py --sizes 0 --model DIR --recordings 4 --minutes 2  # real model only
    python benchmarks/scale.py --tiny                                            # smoke run

Synthetic part, per (dimension, size): unit vectors, in recordings of ``--per-recording``
segments with metadata (speaker, date, tags), added with ``LanceSegmentStore.add_many``; then
the ANN index is built (``--kinds``: hnsw = IVF-HNSW-SQ, the store's default; ivf = IVF-PQ). Measured: build time
(rows added, ANN index), disk size against the raw float32 vectors, single-query latency p50/p99
of exact search and of ANN search, ANN recall@10 against exact, a filtered query
(``speaker = ... AND date >= ...``, about 5 % of the rows) exact and ANN (the same filter for every query:
the store keeps a selective filter's rows in memory after its first query) and the first query of each of
19 filters never asked before (its plan, LanceDB's search, and the background reads of the earlier new
filters' rows sharing the cores), and deleting one
recording. ``--distribution clustered`` (default) draws vectors around ``n/1000`` random
centres, as embeddings of an archive cluster by topic and speaker; ``uniform`` is the worst case
for any ANN index (isotropic noise, no structure), reported for reference.

Real-model part (``--model DIR``, ``--random-mini`` or ``--tiny``): ``--recordings`` recordings of
``--minutes`` of speech-like audio indexed by ``LongFormRetriever.index_recordings`` in one
process and with ``--ray local --num-workers N``; throughput and whether the two outputs agree
(same segments, min cosine of the vectors, same transcripts).

Targets (issue 13, 2 cores, at 1M): query p50 <= 20 ms, p99 <= 100 ms at ANN recall@10 >= 0.95;
a filtered query <= 2x an unfiltered one; deleting a recording <= 1 s; disk <= 2x raw vectors.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/README.md (libgomp spin-waiting)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

logger = logging.getLogger("scale")

TARGETS = {"query_p50_ms": 20.0, "query_p99_ms": 100.0, "recall_at_10": 0.95, "filtered_ratio": 2.0,
           "delete_s": 1.0, "disk_ratio": 2.0}
SPEAKERS = [f"speaker{i:02d}" for i in range(20)]


# --------------------------------------------------------------------------- synthetic vectors


class VectorSource:
    """Deterministic unit vectors in chunks (a 1M x 768 table is never held twice)."""

    def __init__(self, dim: int, n: int, distribution: str, seed: int):
        self.dim, self.n, self.distribution = dim, n, distribution
        rng = np.random.default_rng(seed)
        self.centres = _unit(rng.standard_normal((max(16, n // 1000), dim)).astype(np.float32))
        self.seed = seed
        # noise of the same norm as the centre: a point's cosine to its centre is ~0.7
        self.sigma = 1.0 / np.sqrt(dim)

    def chunk(self, start: int, count: int, stream: int = 0) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, start])
        noise = rng.standard_normal((count, self.dim), dtype=np.float32)
        if self.distribution == "uniform":
            return _unit(noise)
        which = rng.integers(0, len(self.centres), count)
        return _unit(self.centres[which] + self.sigma * noise)

    def queries(self, count: int) -> np.ndarray:
        return self.chunk(0, count, stream=1)  # new points of the same distribution


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(1000 * bc.percentile(values, 50), 2), "p99": round(1000 * bc.percentile(values, 99), 2),
            "mean": round(1000 * statistics.fmean(values), 2)}


def time_queries(store, qs: np.ndarray, k: int, **kw) -> tuple[list[float], list[list[int]]]:
    times, rows = [], []
    store.search(qs[:1], k, **kw)  # warm-up (caches, index load)
    for q in qs:
        t0 = time.perf_counter()
        hits = store.search(q, k, **kw)[0]
        times.append(time.perf_counter() - t0)
        rows.append([h.row for h in hits])
    return times, rows


def recall(approx: list[list[int]], exact: list[list[int]], k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / max(1, len(e[:k])) for a, e in zip(approx, exact)]))


def run_synthetic(dim: int, n: int, kind: str, args, work: Path, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from funasr_clsr.retrieval.store import LanceSegmentStore

    src = VectorSource(dim, n, args.distribution, args.seed)
    d = work / f"store_{dim}_{n}_{kind}"
    shutil.rmtree(d, ignore_errors=True)
    per = args.per_recording
    # ANN built once, explicitly, after the rows are in: its time is reported on its own
    store = LanceSegmentStore.create(d, "bench", "0", dim, kind=kind, ann_threshold=10 ** 12)
    t0 = time.perf_counter()
    n_rec = -(-n // per)
    batch: list[dict] = []
    bar = tqdm(total=n, desc=f"add {dim}-d x {n}", unit="seg", disable=not progress, leave=False)
    for r in range(n_rec):
        m = min(per, n - r * per)
        vecs = src.chunk(r * per, m)
        batch.append({"recording_id": f"rec{r:06d}", "source": f"/archive/rec{r:06d}.wav",
                      "segments": [{"start": 40.0 * i, "end": 40.0 * (i + 1)} for i in range(m)], "vectors": vecs,
                      "meta": {"speaker": SPEAKERS[r % len(SPEAKERS)], "date": f"{2000 + r % 27:04d}-{1 + r % 12:02d}-01",
                               "tags": ["lecture" if r % 2 else "meeting"], "title": f"recording {r}"}})
        if sum(len(b["segments"]) for b in batch) >= args.commit_rows or r == n_rec - 1:
            store.add_many(batch)
            bar.update(sum(len(b["segments"]) for b in batch))
            batch = []
    bar.close()
    add_s = time.perf_counter() - t0
    disk_table = dir_size(d)
    t0 = time.perf_counter()
    store.build_ann_index()
    ann_s = time.perf_counter() - t0
    disk_versions = dir_size(d)  # + the files of the versions before the index (kept an hour)
    store.optimize(keep_versions=timedelta(0))  # compaction, and the old versions' files deleted
    disk = dir_size(d)
    raw = n * dim * 4
    qs = src.queries(args.queries)
    k = 10
    exact_t, exact_rows = time_queries(store, qs, k, exact=True)
    ann_t, ann_rows = time_queries(store, qs, k)
    ef_sweep = []  # HNSW's search breadth is a query-time setting: the same build at other values
    default_ef = store.ef
    for ef in (args.ef_sweep if kind == "hnsw" else []):
        store.ef = ef
        t, rows = time_queries(store, qs, k)
        ef_sweep.append({"ef": ef, "query_ann_ms": _ms(t), "recall_at_10": round(recall(rows, exact_rows, k), 4)})
    store.ef = default_ef
    where = "speaker = 'speaker03' AND date >= '2013-01-01'"  # 1/20 speakers x about half the dates
    t0 = time.perf_counter()
    matching = store._table.count_rows(where)  # what the store's plan costs the first query with a new filter
    count_ms = 1000 * (time.perf_counter() - t0)
    filt_exact_t, fe_rows = time_queries(store, qs, k, where=where, exact=True)
    filt_ann_t, fa_rows = time_queries(store, qs, k, where=where)
    # the first query of each filter pays for its plan (the count) and LanceDB's search, and for a selective
    # one starts the background read of its rows: one query per speaker never asked for before
    new_filter_t = []
    for i, q in enumerate(qs[:len(SPEAKERS) - 1]):
        t0 = time.perf_counter()
        store.search(q, k, where=f"speaker = '{SPEAKERS[(4 + i) % len(SPEAKERS)]}' AND date >= '2013-01-01'")
        new_filter_t.append(time.perf_counter() - t0)
    deletes = []
    for r in range(args.deletes):
        rid = f"rec{(r * 7919) % n_rec:06d}"
        t0 = time.perf_counter()
        store.remove(rid)
        deletes.append(time.perf_counter() - t0)
    after_delete = store.search(qs[:1], k)[0]
    res = {
        "dim": dim, "n": n, "kind": kind, "distribution": args.distribution, "recordings": n_rec,
        "add_s": round(add_s, 2), "ann_build_s": round(ann_s, 2), "build_s": round(add_s + ann_s, 2),
        "rows_per_s": round(n / add_s), "disk_mb": round(disk / 2 ** 20, 1),
        "disk_before_ann_mb": round(disk_table / 2 ** 20, 1), "disk_with_old_versions_mb": round(disk_versions / 2 ** 20, 1),
        "raw_vectors_mb": round(raw / 2 ** 20, 1),
        "disk_ratio": round(disk / raw, 3), "nprobes": store.nprobes or store._default_nprobes(store.vector_index()),
        "refine_factor": store.refine_factor,
        "query_exact_ms": _ms(exact_t), "query_ann_ms": _ms(ann_t), "recall_at_10": round(recall(ann_rows, exact_rows, k), 4),
        "ef": default_ef, "ef_sweep": ef_sweep,
        "filter": where, "filter_rows": matching, "filter_count_ms": round(count_ms, 2),
        "filtered_exact_ms": _ms(filt_exact_t), "filtered_ann_ms": _ms(filt_ann_t),
        "filtered_new_filter_ms": _ms(new_filter_t),
        "filtered_recall_at_10": round(recall(fa_rows, fe_rows, k), 4),
        "delete_s": {"median": round(statistics.median(deletes), 4), "max": round(max(deletes), 4),
                     "segments_each": per},
        "search_after_delete_ok": bool(after_delete),
    }
    res["filtered_ratio"] = round(res["filtered_ann_ms"]["p50"] / max(res["query_ann_ms"]["p50"], 1e-6), 2)
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return res


# --------------------------------------------------------------------------- real model: one process vs Ray


def run_real(args, work: Path) -> dict[str, Any]:
    import soundfile as sf
    import torch

    from funasr_clsr.retrieval.pipeline import LongFormRetriever
    from funasr_clsr.retrieval.store import LanceSegmentStore

    if args.tiny or args.random_mini:
        model_dir, what = bc.random_model("tiny" if args.tiny else "mini", work, args.seed)
    else:
        model_dir = Path(args.model)
        what = f"model directory {model_dir}"
    rng = np.random.default_rng(args.seed)
    audio = work / "audio"
    audio.mkdir(exist_ok=True)
    paths = []
    for i in range(args.recordings):
        p = audio / f"rec{i}.wav"
        sf.write(p, bc.synthetic_speech(int(args.minutes * 60 * bc.SR), rng), bc.SR)
        paths.append((f"rec{i}", str(p)))
    seconds = args.recordings * args.minutes * 60
    torch.set_num_threads(args.threads)
    retriever = LongFormRetriever(str(model_dir), window_s=args.window, batch_size=args.batch)
    torch.set_num_threads(args.threads)  # AutoModel resets it
    single = work / "single.idx"
    t0 = time.perf_counter()
    rep1 = retriever.index_recordings(paths, single, progress=False)
    single_s = time.perf_counter() - t0
    ray_dir = work / "ray.idx"
    t0 = time.perf_counter()
    rep2 = retriever.index_recordings(paths, ray_dir, progress=False, ray="local", num_workers=args.ray_workers)
    ray_s = time.perf_counter() - t0
    a, b = LanceSegmentStore.load(single), LanceSegmentStore.load(ray_dir)
    sa, sb = a.segments, b.segments
    key = lambda s: (s["recording_id"], s["start"])  # noqa: E731
    order_a = sorted(range(len(sa)), key=lambda i: key(sa[i]))
    order_b = sorted(range(len(sb)), key=lambda i: key(sb[i]))
    same_segments = [key(sa[i]) + (sa[i]["end"],) for i in order_a] == [key(sb[i]) + (sb[i]["end"],) for i in order_b]
    va, vb = a.vectors[order_a], b.vectors[order_b]
    cos = (va * vb).sum(1) if same_segments else np.array([np.nan])
    same_text = same_segments and [sa[i]["transcript"] for i in order_a] == [sb[i]["transcript"] for i in order_b]
    return {"model": what, "recordings": args.recordings, "minutes_each": args.minutes, "audio_s": seconds,
            "segments": len(sa), "threads_single": args.threads, "ray_workers": args.ray_workers,
            "single_process_s": round(single_s, 2), "ray_s": round(ray_s, 2),
            "single_rtf": round(single_s / seconds, 4), "ray_rtf": round(ray_s / seconds, 4),
            "ray_over_single": round(ray_s / single_s, 3), "same_segments": bool(same_segments),
            "min_cosine": round(float(np.min(cos)), 6), "same_transcripts": bool(same_text),
            "failed": rep1["failed"] + rep2["failed"]}


# --------------------------------------------------------------------------- report


def _new_filter(r: dict[str, Any]) -> str:
    t = r.get("filtered_new_filter_ms")  # absent from results written before it was measured
    return f"{t['p50']:.1f} / {t['p99']:.1f}" if t else "-"


def markdown(report: dict[str, Any]) -> str:
    lines = ["| dim | segments | kind | build s (add + ANN) | disk MB (x raw) | exact p50/p99 ms | ANN p50/p99 ms | "
             "recall@10 | filtered ANN p50 ms (x) | filtered exact p50 ms | new filter p50 / p99 ms | delete s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["synthetic"]:
        lines.append(f"| {r['dim']} | {r['n']:,} | {r['kind']} | {r['add_s']:.1f} + {r['ann_build_s']:.1f} | "
                     f"{r['disk_mb']:.0f} ({r['disk_ratio']:.2f}) | {r['query_exact_ms']['p50']:.1f} / "
                     f"{r['query_exact_ms']['p99']:.1f} | {r['query_ann_ms']['p50']:.1f} / {r['query_ann_ms']['p99']:.1f} | "
                     f"{r['recall_at_10']:.3f} | {r['filtered_ann_ms']['p50']:.1f} ({r['filtered_ratio']:.2f}) | "
                     f"{r['filtered_exact_ms']['p50']:.1f} | {_new_filter(r)} | {r['delete_s']['median']:.3f} |")
    swept = [r for r in report["synthetic"] if r.get("ef_sweep")]
    if swept:
        lines += ["", "| dim | segments | ef | ANN p50/p99 ms | recall@10 |", "|---|---|---|---|---|"]
        for r in swept:  # each build's default, then the same build at the other values
            for ef, e in [(f"{r['ef']} (default)", r), *((e["ef"], e) for e in r["ef_sweep"])]:
                lines.append(f"| {r['dim']} | {r['n']:,} | {ef} | {e['query_ann_ms']['p50']:.1f} / "
                             f"{e['query_ann_ms']['p99']:.1f} | {e['recall_at_10']:.3f} |")
    real = report.get("real_model")
    if real:
        lines += ["", f"Real model ({real['model']}): {real['recordings']} x {real['minutes_each']:g} min, "
                      f"{real['segments']} segments. One process ({real['threads_single']} threads): "
                      f"{real['single_process_s']:.1f} s (RTF {real['single_rtf']:.4f}); Ray, "
                      f"{real['ray_workers']} actors: {real['ray_s']:.1f} s (RTF {real['ray_rtf']:.4f}, "
                      f"{real['ray_over_single']:.2f}x). Same segments: {real['same_segments']}, min cosine "
                      f"{real['min_cosine']}, same transcripts: {real['same_transcripts']}."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", default="10000,100000", help="segment counts (comma list; 0: skip the synthetic part)")
    p.add_argument("--dims", default="384,768", help="vector dimensions (comma list)")
    p.add_argument("--kinds", default="hnsw,ivf", help="ANN kinds (comma list of hnsw, ivf)")
    p.add_argument("--distribution", choices=("clustered", "uniform"), default="clustered")
    p.add_argument("--queries", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--ef-sweep", default="", help="HNSW: also time the same build's queries at these ef values "
                   "(comma list; the store's default is timed anyway)")
    p.add_argument("--per-recording", type=int, default=100, help="segments per synthetic recording (~1 h at 40 s)")
    p.add_argument("--commit-rows", type=int, default=20000, help="rows per add_many commit while building")
    p.add_argument("--deletes", type=int, default=5, help="recordings deleted (timed one by one)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, help="CLSR model directory for the one-process vs Ray comparison")
    src.add_argument("--random-mini", action="store_true", help="a random-speech-branch mini model for it")
    src.add_argument("--tiny", action="store_true", help="smoke run: tiny sizes and a tiny random model")
    p.add_argument("--recordings", type=int, default=4)
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--window", type=float, default=40.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the single process")
    p.add_argument("--ray-workers", type=int, default=2)
    p.add_argument("--work", type=Path, help="working directory (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic stores in --work")
    p.add_argument("--json", nargs="?", const="-", default=None,
                   help="write the JSON report to this file (no value: print it on stdout)")
    p.add_argument("--markdown", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        args.sizes = [int(x) for x in str(args.sizes).split(",") if x.strip() and int(x) > 0]
        args.dims = [int(x) for x in str(args.dims).split(",") if x.strip()]
        args.ef_sweep = [int(x) for x in str(args.ef_sweep).split(",") if x.strip()]
    except ValueError:
        p.error("--sizes, --dims and --ef-sweep are comma lists of integers")
    if any(ef < 100 for ef in args.ef_sweep):
        p.error("--ef-sweep values must be at least 100 (LanceDB needs ef >= top_k 10 x refine_factor 10)")
    args.kinds = [k for k in str(args.kinds).split(",") if k]
    if any(k not in ("ivf", "hnsw") for k in args.kinds):
        p.error("--kinds takes ivf and/or hnsw")
    if args.tiny:
        args.sizes, args.dims, args.queries, args.ef_sweep = [3000], [32], 20, args.ef_sweep or [150]
        args.per_recording, args.deletes, args.recordings, args.minutes, args.window = 100, 2, 2, 0.1, 2.0
    if args.queries < 2 or args.per_recording < 1 or args.deletes < 1:
        p.error("--queries >= 2, --per-recording >= 1, --deletes >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("funasr", "root", "transformers", "ray", "funasr_clsr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="clsr_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": bc.command_line(), "machine": bc.machine_info(args.threads),
                              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "targets": TARGETS, "synthetic": []}
    try:
        for dim in args.dims:
            for n in args.sizes:
                for kind in args.kinds:
                    logger.info("synthetic: %d-d x %d (%s, %s)", dim, n, kind, args.distribution)
                    r = run_synthetic(dim, n, kind, args, work, progress=not args.no_progress)
                    logger.info("%s", json.dumps(r))
                    report["synthetic"].append(r)
        if args.model or args.random_mini or args.tiny:
            report["real_model"] = run_real(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    md = markdown(report)
    if args.json == "-":
        print(json.dumps(report, indent=1, default=bc._json_default))
    else:
        bc.publish(report, md, args.markdown, Path(args.json) if args.json else None)
    return report


if __name__ == "__main__":
    main()

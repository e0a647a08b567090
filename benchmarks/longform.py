#!/usr/bin/env python
"""Long-form retrieval benchmark: index hour-long recordings, ask each context's question.

    python benchmarks/longform.py --model recipes/mini_spoken_squad/exp/quick/model \
        --json longform.json --markdown longform.md
    python benchmarks/longform.py --random-mini ...    # no trained model yet: random speech branch
    python benchmarks/longform.py --tiny --jsonl my.jsonl --minutes 0.3 --memory-hours 0.01  # smoke

Recordings of 10, 30 and 60 minutes are built by concatenating the contexts of a QA jsonl
(default: the mini recipe's qa_test; fields source, question, context_id) with short silences,
so every context's true span is known to the sample. Each recording is indexed with
:class:`funasr_clsr.retrieval.pipeline.LongFormRetriever` (40 s windows) and every question is
asked on its own; a hit is a returned window that overlaps the context's span. Reported per
recording: hit@1 / hit@3 (and the chance level), indexing real-time factor, per-question query
latency, and next to it the cascade on the same windows (the model's own ASR transcripts ->
the same text encoder, and BM25 over them). Finally the peak memory of indexing a synthetic
3-hour file, measured in a fresh process (``ru_maxrss``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# libgomp (torch's and CTranslate2's OpenMP) spin-waits by default; with threads == cores on a
# shared machine every parallel region then waits for a descheduled thread: measured here at
# 2 threads, 7.7 ms per elementwise op instead of 0.1 ms. Passive waiting, for every system alike,
# unless the caller chose a policy. Must be set before torch / ctranslate2 load libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

RECIPE_MODEL = bc.REPO / "recipes" / "mini_spoken_squad" / "exp" / "quick" / "model"
TARGETS = {"query_latency_ms_60min": 50.0, "peak_memory_mb_3h": 2048.0}

logger = logging.getLogger("longform")


# --------------------------------------------------------------------------- recordings


def context_rows(jsonl: Path, seen_voices: str | None = None, seen_rates: str | None = None) -> list[dict]:
    """One entry per context (first occurrence order) with all of its questions.

    ``seen_voices`` (and ``seen_rates``): keep only contexts read by another voice or at another
    rate (unseen in training), as ``evaluate --seen-voices`` splits them.
    """
    rows = bc.read_jsonl(jsonl)
    contexts: dict[str, dict] = {}
    voices, rates = set((seen_voices or "").split()), set(map(int, (seen_rates or "").split()))
    for n, row in enumerate(rows, start=1):
        for key in ("source", "question") + (("voice",) if voices else ()):
            if not row.get(key):
                raise bc.BenchmarkInputError(f"{jsonl}:{n}: no '{key}' field")
        if voices and row["voice"] in voices and (not rates or int(row.get("rate") or 0) in rates):
            continue  # a seen voice and rate
        cid = str(row.get("context_id") or row["source"])
        c = contexts.setdefault(cid, {"context_id": cid, "source": row["source"], "questions": []})
        c["questions"].append(row["question"])
    return list(contexts.values())


def build_recording(contexts: list[dict], minutes: float, out: Path, gap_s: float = 0.5,
                    start_index: int = 0) -> dict:
    """Write ``out`` (16 kHz PCM_16) from consecutive contexts until it lasts ``minutes``.

    Contexts are taken in order from ``start_index`` (wrapping around), each followed by
    ``gap_s`` of silence; streamed to disk one context at a time. Returns the layout: every
    context's [start, end) in samples and seconds, with its questions.
    """
    import soundfile as sf

    from funasr_clsr.audio import load_audio

    target = int(round(minutes * 60 * bc.SR))
    gap = np.zeros(int(round(gap_s * bc.SR)), np.float32)
    layout, pos, i = [], 0, start_index
    used: set[int] = set()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.wav")
    with sf.SoundFile(tmp, "w", samplerate=bc.SR, channels=1, subtype="PCM_16") as f:
        while pos < target:
            k = i % len(contexts)
            if k in used:  # wrapped around: every context is already in; questions would repeat
                break
            used.add(k)
            c = contexts[k]
            wav = load_audio(c["source"], target_sr=bc.SR)
            f.write(wav)
            layout.append({**c, "start_sample": pos, "end_sample": pos + len(wav),
                           "start": pos / bc.SR, "end": (pos + len(wav)) / bc.SR})
            pos += len(wav)
            f.write(gap)
            pos += len(gap)
            i += 1
    os.replace(tmp, out)
    return {"path": str(out), "seconds": pos / bc.SR, "contexts": layout}


def write_long_file(contexts: list[dict], hours: float, out: Path, gap_s: float = 0.5) -> float:
    """A ``hours``-long file that cycles through the contexts (streamed; memory = one context)."""
    import soundfile as sf

    from funasr_clsr.audio import load_audio

    target = int(round(hours * 3600 * bc.SR))
    gap = np.zeros(int(round(gap_s * bc.SR)), np.float32)
    cache: dict[int, np.ndarray] = {}
    pos, i = 0, 0
    tmp = out.with_name(out.name + ".partial.wav")
    with sf.SoundFile(tmp, "w", samplerate=bc.SR, channels=1, subtype="PCM_16") as f:
        while pos < target:
            k = i % len(contexts)
            if k not in cache and len(cache) < 64:  # keep a few contexts decoded, not the whole set
                cache[k] = load_audio(contexts[k]["source"], target_sr=bc.SR)
            wav = cache.get(k)
            if wav is None:
                wav = load_audio(contexts[k]["source"], target_sr=bc.SR)
            wav = wav[: target - pos]
            f.write(wav)
            pos += len(wav)
            if pos < target:
                g = gap[: target - pos]
                f.write(g)
                pos += len(g)
            i += 1
    os.replace(tmp, out)
    return pos / bc.SR


# --------------------------------------------------------------------------- scoring


def overlaps(seg: dict, ctx: dict) -> bool:
    return seg["start"] < ctx["end"] and seg["end"] > ctx["start"]


def hits_at(ranked: list[list[int]], segments: list[dict], targets: list[dict], ks=(1, 3)) -> dict[str, float]:
    """hit@k: fraction of questions whose top-k windows include one overlapping their context."""
    out = {}
    for k in ks:
        ok = [any(overlaps(segments[j], t) for j in r[:k]) for r, t in zip(ranked, targets)]
        out[f"hit@{k}"] = float(np.mean(ok)) if ok else math.nan
    return out


def chance_hit1(segments: list[dict], targets: list[dict]) -> float:
    """hit@1 of a random window: mean share of windows overlapping each question's context."""
    if not segments:
        return math.nan
    return float(np.mean([sum(overlaps(s, t) for s in segments) / len(segments) for t in targets]))


def top_k_rows(scores: np.ndarray, k: int) -> list[list[int]]:
    k = min(k, scores.shape[1])
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return idx.tolist()


# --------------------------------------------------------------------------- one recording


def run_recording(retriever, rec: dict, top_k: int, cascade_asr=None, progress: bool = True) -> dict:
    """Index one recording, query every question, score CLSR and the cascades."""
    import torch

    from funasr_clsr.evaluation.bm25 import BM25Retriever

    model = retriever.model
    index = retriever.new_index()
    t0 = time.perf_counter()
    n_seg = retriever.index_recording(rec["path"], index, recording_id=Path(rec["path"]).stem, progress=progress)
    t_index = time.perf_counter() - t0
    segments = index.segments
    targets, questions = [], []
    for c in rec["contexts"]:
        for q in c["questions"]:
            targets.append(c)
            questions.append(q)

    # CLSR: one query() call per question, as a user would ask them
    ranked, latencies = [], []
    for q in questions:
        t0 = time.perf_counter()
        hits = retriever.query(index, [q], top_k=top_k)[0]
        latencies.append(time.perf_counter() - t0)
        ranked.append([int(h["row"]) for h in hits])  # rows of index.segments
    t0 = time.perf_counter()
    retriever.query(index, questions, top_k=top_k)
    batch_query_s = time.perf_counter() - t0

    result = {
        "minutes": round(rec["seconds"] / 60, 2), "audio_s": round(rec["seconds"], 1), "segments": n_seg,
        "contexts": len(rec["contexts"]), "questions": len(questions),
        "index_s": round(t_index, 2), "index_rtf": round(t_index / rec["seconds"], 5),
        "clsr": hits_at(ranked, segments, targets), "chance@1": round(chance_hit1(segments, targets), 4),
        "query_ms": {"median": round(1000 * float(np.median(latencies)), 2),
                     "p95": round(1000 * bc.percentile(latencies, 95), 2),
                     "max": round(1000 * max(latencies), 2)} if latencies else {},
        "query_ms_batched_per_question": round(1000 * batch_query_s / max(len(questions), 1), 3),
    }

    # Cascade on the same windows: transcripts -> the same text encoder (dense) and BM25
    transcripts = [s.get("transcript") or "" for s in segments]
    asr_name = "own ASR (transcripts stored in the index by encode_speech)"
    t_asr = 0.0
    if cascade_asr is not None:
        from funasr_clsr.retrieval.segmentation import iter_window_audio

        t0 = time.perf_counter()
        wins = [w for w in iter_window_audio(rec["path"], retriever.window_s, retriever.overlap_s, sr=retriever.sr)]
        by_time = {(round(w.start, 3), round(w.end, 3)): w.audio for w in wins}
        audio = [by_time[(round(s["start"], 3), round(s["end"], 3))] for s in segments]
        transcripts = []
        for b in range(0, len(audio), retriever.batch_size):
            transcripts += cascade_asr.transcribe(audio[b:b + retriever.batch_size], batch_size=retriever.batch_size)
        t_asr = time.perf_counter() - t0
        asr_name = f"separate ASR model ({getattr(cascade_asr, 'model_dir_name', 'cascade_asr')})"
    with torch.inference_mode():
        t0 = time.perf_counter()
        doc = model.encode_text(transcripts, is_query=False, batch_size=32).float().numpy()
        t_text = time.perf_counter() - t0
        qv = model.encode_text(questions, is_query=True, batch_size=64).float().numpy()
    dense = qv @ doc.T
    result["cascade_dense"] = hits_at(top_k_rows(dense, top_k), segments, targets)
    if any(t.strip() for t in transcripts):
        bm = BM25Retriever(transcripts)
        result["cascade_bm25"] = hits_at(top_k_rows(bm.similarity(questions), top_k), segments, targets)
    else:
        result["cascade_bm25"] = {"hit@1": 0.0, "hit@3": 0.0, "note": "all transcripts empty"}
    result["cascade"] = {"asr": asr_name, "asr_s": round(t_asr, 2), "text_encode_s": round(t_text, 2),
                         "index_rtf": round((t_text + (t_asr if cascade_asr is not None else t_index)) / rec["seconds"], 5),
                         "mean_transcript_words": round(float(np.mean([len(t.split()) for t in transcripts])), 1)}
    return result


# --------------------------------------------------------------------------- memory child


def memory_child(args) -> None:
    """In a fresh process: load the model, index ``args.memory_file``, print peak RSS as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    rss0 = bc.current_rss_mb()
    model, model_dir = bc.load_model_keep_threads(args.model)
    rss_model = bc.current_rss_mb()
    peak_model = bc.peak_rss_mb()
    r = LongFormRetriever(model, window_s=args.window, batch_size=args.batch,
                          model_id="bench", model_version="bench")
    index = r.new_index()
    t0 = time.perf_counter()
    n = r.index_recording(args.memory_file, index, recording_id="long", progress=False)
    t = time.perf_counter() - t0
    index.save(Path(args.memory_file).with_suffix(".idx"))
    print(json.dumps({"segments": n, "index_s": round(t, 1), "rss_start_mb": round(rss0, 1),
                      "rss_after_model_load_mb": round(rss_model, 1), "peak_after_model_load_mb": round(peak_model, 1),
                      "peak_rss_mb": round(bc.peak_rss_mb(), 1), "rss_end_mb": round(bc.current_rss_mb(), 1)}))


def measure_memory(args, model_dir: Path, contexts: list[dict], work: Path) -> dict:
    hours = args.memory_hours
    path = work / f"synthetic_{hours:g}h.wav"
    t0 = time.perf_counter()
    seconds = write_long_file(contexts, hours, path)
    logger.info("wrote %s (%.0f s of audio) in %.0f s", path, seconds, time.perf_counter() - t0)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--memory-file", str(path),
           "--model", str(model_dir), "--threads", str(args.threads), "--window", str(args.window),
           "--batch", str(args.batch)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"memory run failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
        out = json.loads(line)
    finally:
        path.unlink(missing_ok=True)
        shutil.rmtree(path.with_suffix(".idx"), ignore_errors=True)
    out.update(hours=hours, audio_s=round(seconds, 1), index_rtf=round(out["index_s"] / seconds, 5),
               target_mb=TARGETS["peak_memory_mb_3h"], met=bool(out["peak_rss_mb"] <= TARGETS["peak_memory_mb_3h"]),
               measured_with="ru_maxrss of a fresh process (model load + indexing + saving the index)")
    return out


# --------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = ["| recording | windows | questions | index RTF | CLSR hit@1 | CLSR hit@3 | chance@1 | "
             "cascade dense hit@1 / @3 | BM25 hit@1 / @3 | query ms (median / p95) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["recordings"]:
        c, d, b, q = r["clsr"], r["cascade_dense"], r["cascade_bm25"], r["query_ms"]
        lines.append(f"| {r['minutes']:.1f} min | {r['segments']} | {r['questions']} | {r['index_rtf']:.4f} | "
                     f"{c['hit@1']:.3f} | {c['hit@3']:.3f} | {r['chance@1']:.3f} | {d['hit@1']:.3f} / {d['hit@3']:.3f} | "
                     f"{b['hit@1']:.3f} / {b['hit@3']:.3f} | {q.get('median', math.nan):.1f} / {q.get('p95', math.nan):.1f} |")
    m = report.get("memory")
    if m:
        lines += ["", f"Peak memory indexing a synthetic {m['hours']:g}-hour file: {m['peak_rss_mb']:.0f} MiB "
                      f"(after model load {m['rss_after_model_load_mb']:.0f} MiB; target <= {m['target_mb']:.0f}: "
                      f"{'met' if m['met'] else 'missed'}); indexing RTF {m['index_rtf']:.4f}."]
    for name, t in report.get("targets", {}).items():
        lines.append(f"- {name}: {t['value']} (target {t['op']} {t['target']}: {'met' if t['met'] else 'missed'})")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, help=f"CLSR model directory (default: {RECIPE_MODEL} when it exists)")
    src.add_argument("--random-mini", action="store_true",
                     help="export conf/clsr_mini_en.yaml + all-MiniLM-L6-v2 with a random speech branch and use it "
                          "(timings and memory of the small config; retrieval at chance)")
    src.add_argument("--tiny", action="store_true", help="export a tiny random model (conf/clsr_tiny.yaml): smoke run")
    p.add_argument("--jsonl", type=Path, default=bc.RECIPE_TEST_JSONL, help="QA jsonl with source/question/context_id")
    p.add_argument("--seen-voices", help="training voices: build recordings from the other contexts only "
                   "(unseen voice or rate)")
    p.add_argument("--seen-rates", help="with --seen-voices: training speaking rates")
    p.add_argument("--minutes", default="10,30,60", help="recording lengths in minutes (comma list)")
    p.add_argument("--window", type=float, default=40.0, help="window length in seconds (default 40)")
    p.add_argument("--batch", type=int, default=8, help="windows per encode_speech batch")
    p.add_argument("--gap", type=float, default=0.5, help="silence between contexts, seconds")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cascade-asr", type=Path,
                   help="transcribe windows with this (ASR) model directory for the cascade; default: the "
                        "transcripts the CLSR model's own ASR stored in the index")
    p.add_argument("--memory-hours", type=float, default=3.0, help="synthetic file for the memory test (0: skip)")
    p.add_argument("--memory-model", type=Path, help="model for the memory test (default: the small config, i.e. "
                                                     "--model when it is one, else a random mini model)")
    p.add_argument("--work", type=Path, help="keep recordings and models here (default: temp dir, removed)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.minutes = [float(x) for x in str(args.minutes).split(",") if x.strip()]
    except ValueError:
        p.error(f"--minutes must be a comma list of numbers, got {args.minutes!r}")
    if not args.minutes or any(m <= 0 for m in args.minutes):
        p.error("--minutes needs positive lengths")
    if args.window <= 0 or args.batch < 1 or args.top_k < 1 or args.threads < 1:
        p.error("--window, --batch, --top-k and --threads must be positive")
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("funasr", "root", "transformers", "funasr_clsr"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.memory_child:
        memory_child(args)
        return None
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="clsr_longform_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _resolve_model(args, work: Path) -> tuple[Path, str]:
    if args.tiny or args.random_mini:
        return bc.random_model("tiny" if args.tiny else "mini", work, args.seed)
    model = args.model or (RECIPE_MODEL if (RECIPE_MODEL / "model.pt").is_file() else None)
    if model is None:
        raise bc.BenchmarkInputError(f"no model: {RECIPE_MODEL} does not exist yet (run the mini recipe), pass "
                                     "--model DIR, or --random-mini for timings with a random speech branch")
    if not (Path(model) / "config.yaml").is_file():
        raise FileNotFoundError(f"{model}: not a CLSR model directory (no config.yaml)")
    return Path(model), f"model directory {model}"


def _run(args, work: Path) -> dict:
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    report: dict[str, Any] = {"command": bc.command_line(), "machine": bc.machine_info(args.threads),
                              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                           if not k.startswith("memory_child")}}
    contexts = context_rows(args.jsonl, args.seen_voices, args.seen_rates)
    if not contexts:
        raise bc.BenchmarkInputError(f"{args.jsonl}: no context left after the seen-voice filter")
    model_dir, model_desc = _resolve_model(args, work)
    report["model"] = {"dir": str(model_dir), "what": model_desc}
    try:
        from funasr_clsr.hub import model_identity

        report["model"]["identity"] = list(model_identity(model_dir))  # which exact weights were measured
    except (ImportError, ValueError, OSError) as exc:
        report["model"]["identity"] = f"unavailable: {exc}"
    logger.info("model: %s", model_desc)
    model, _ = bc.load_model_keep_threads(model_dir)
    report["model"]["speech_params"] = sum(p.numel() for n, p in model.named_parameters()
                                           if not n.startswith("text_encoder."))
    report["model"]["text_encoder_params"] = bc.param_count(model.text_encoder)
    retriever = LongFormRetriever(model, window_s=args.window, batch_size=args.batch,
                                  model_id=f"bench-{model_dir.name}", model_version="bench")
    cascade_asr = None
    if args.cascade_asr:
        cascade_asr, _ = bc.load_model_keep_threads(args.cascade_asr)
        cascade_asr.model_dir_name = str(args.cascade_asr)
    report["recordings"] = []
    for minutes in args.minutes:
        rec = build_recording(contexts, minutes, work / f"recording_{minutes:g}min.wav", gap_s=args.gap)
        if rec["seconds"] < minutes * 60 * 0.98:
            logger.warning("%s has only %.1f min of contexts; the %g-min recording is %.1f min",
                           args.jsonl, rec["seconds"] / 60, minutes, rec["seconds"] / 60)
        logger.info("recording %g min: %d contexts", minutes, len(rec["contexts"]))
        res = run_recording(retriever, rec, args.top_k, cascade_asr, progress=not args.tiny)
        res["requested_minutes"] = minutes
        report["recordings"].append(res)
        logger.info("%g min: index RTF %.4f, CLSR hit@1 %.3f hit@3 %.3f, query %.1f ms", minutes, res["index_rtf"],
                    res["clsr"]["hit@1"], res["clsr"]["hit@3"], res["query_ms"].get("median", math.nan))
        Path(rec["path"]).unlink(missing_ok=True)
        bc.write_json(args.json, report)  # finished recordings survive a later failure

    if args.memory_hours > 0:
        mem_model = args.memory_model
        if mem_model is None:
            small = args.tiny or args.random_mini or _is_small(model)
            mem_model = model_dir if small else bc.random_model("mini", work, args.seed)[0]
        logger.info("memory: indexing a synthetic %g-hour file with %s", args.memory_hours, mem_model)
        report["memory"] = measure_memory(args, Path(mem_model), contexts, work)
        report["memory"]["model"] = str(mem_model)

    targets = {}
    longest = max(report["recordings"], key=lambda r: r["audio_s"])
    lat = longest["query_ms"].get("median")
    if lat is not None:
        t = TARGETS["query_latency_ms_60min"]
        targets[f"query_latency_ms_median_{longest['minutes']:.0f}min"] = {
            "value": lat, "target": t, "op": "<=", "met": bool(lat <= t)}
    if report.get("memory"):
        t = TARGETS["peak_memory_mb_3h"]
        targets[f"peak_memory_mb_{args.memory_hours:g}h"] = {"value": report["memory"]["peak_rss_mb"], "target": t,
                                                             "op": "<=", "met": report["memory"]["met"]}
    report["targets"] = targets
    report["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    bc.publish(report, markdown(report), args.markdown, args.json)
    return report


def _is_small(model) -> bool:
    """The small config (clsr_mini_en-sized): under 60M parameters all told."""
    return bc.param_count(model) < 60e6


if __name__ == "__main__":
    try:
        main()
    except (bc.BenchmarkInputError, FileNotFoundError) as exc:
        print(f"longform.py: error: {exc}", file=sys.stderr)
        sys.exit(2)

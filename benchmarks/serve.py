#!/usr/bin/env python
"""Load test of ``funasr-clsr serve`` on loopback: N concurrent clients x M searches, bounded.

    python benchmarks/serve.py --tiny --minutes 60 --clients 8 --queries 250 --json benchmarks/results/serve.json
    python benchmarks/serve.py --random-mini --clients 16 --queries 625 --with-indexing 10   # issue 12 load
    python benchmarks/serve.py --model recipes/mini_spoken_squad/exp/quick/model ...

A synthetic recording of ``--minutes`` (speech-like tones, benchmarks/bench_common.synthetic_speech)
is written, the server is started in its own process (``python -m funasr_clsr.bin.cli serve``,
with an API key, as deployed), the recording is indexed through the API (``{"path": ...}``) and
then every client sends its ``--queries`` text questions one after the other on a keep-alive
connection (POST /v1/search, top_k 3). ``--with-indexing MINUTES`` submits a second recording of
that length just before the load starts, so searches run beside an indexing job. The server's
resident memory is sampled throughout. Everything stops by itself: a fixed number of requests,
each with a timeout, and ``--max-seconds`` for the whole run.

Reported: search latency p50/p90/p99/max (client side, whole HTTP round trip), throughput,
errors (non-200 answers, timeouts, broken connections), resident memory over time, and the
indexing times; ``--json`` writes it all.
"""
from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/longform.py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TARGETS = {"search_p50_ms": 30.0, "search_p99_ms": 100.0, "errors": 0}
logger = logging.getLogger("serve-bench")

QUESTION_TEMPLATES = [
    "who founded the city on the {} river", "what did the king say about the {}", "when was the {} built",
    "why did the school change its {} law", "which team won the {} game this year", "how many people live in {}",
    "what music was played at the {} church", "where did the war over the {} start",
]
TOPICS = ["northern", "old stone", "harbour", "music", "railway", "university", "market", "castle", "bridge",
          "river", "mountain", "island", "library", "theatre", "museum", "factory"]


# --------------------------------------------------------------------------- inputs


def questions(n: int = 128) -> list[str]:
    """Distinct, deterministic questions (templates x topics)."""
    out = [t.format(topic) for topic in TOPICS for t in QUESTION_TEMPLATES]
    return out[:n]


def write_recording(path: Path, minutes: float, seed: int) -> float:
    """A ``minutes``-long 16 kHz recording of synthetic speech, written one minute at a time."""
    import soundfile as sf

    if path.is_file() and abs(sf.info(str(path)).duration - 60 * minutes) < 0.01:
        return sf.info(str(path)).duration
    rng = np.random.default_rng(seed)
    total = int(round(minutes * 60 * bc.SR))
    tmp = path.with_name(path.name + ".partial.wav")
    with sf.SoundFile(tmp, "w", samplerate=bc.SR, channels=1, subtype="PCM_16") as f:
        written = 0
        while written < total:
            n = min(60 * bc.SR, total - written)
            f.write(bc.synthetic_speech(n, rng))
            written += n
    os.replace(tmp, path)
    return total / bc.SR


def resolve_model(args, work: Path) -> tuple[Path, str]:
    if args.tiny or args.random_mini:
        return bc.random_model("tiny" if args.tiny else "mini", work, args.seed)
    if not (args.model / "config.yaml").is_file():
        raise bc.BenchmarkInputError(f"{args.model}: not a CLSR model directory (no config.yaml)")
    return args.model, f"model directory {args.model}"


# --------------------------------------------------------------------------- the server


class Server:
    """``funasr-clsr serve`` in a child process on a free loopback port."""

    def __init__(self, model_dir: Path, index_dir: Path, allowed: Path, threads: int, key: str, window: float,
                 search_workers: int = 1, backend: tuple[str, ...] = ()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FUNASR_CLSR_API_KEY": key}
        cmd = [sys.executable, "-m", "funasr_clsr.bin.cli", "serve", "--model", str(model_dir), "--index",
               str(index_dir), "--port", str(self.port), "--allowed-dir", str(allowed), "--window", str(window),
               "--search-workers", str(search_workers), *backend]
        self.log = open(index_dir.parent / "server.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(bc.REPO))
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def wait_ready(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}; see {self.log.name}")
            try:
                if self.request("GET", "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"the server did not answer /health within {limit_s:g} s; see {self.log.name}")

    def index(self, path: Path, recording_id: str) -> str:
        status, body = self.request("POST", "/v1/recordings", {"path": str(path), "recording_id": recording_id})
        if status != 202:
            raise RuntimeError(f"indexing {path} was refused: {status} {body}")
        return body["job_id"]

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}")[1]

    def wait_job(self, job_id: str, limit_s: float) -> dict:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] in ("done", "failed"):
                if job["state"] == "failed":
                    raise RuntimeError(f"indexing job failed: {job['error']}")
                return job
            time.sleep(0.2)
        raise TimeoutError(f"indexing job {job_id} did not finish within {limit_s:g} s")

    def rss_mb(self) -> float:
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------- load


def run_clients(server: Server, qs: list[str], clients: int, per_client: int, top_k: int, deadline: float
                ) -> tuple[list[tuple[float, float, dict]], list[str]]:
    """Every client sends ``per_client`` searches back to back on one keep-alive connection.

    Returns ([(time sent, latency s, the server's own ms: took / encode / search)] of the answered
    searches, [error messages]).
    """
    results: list[tuple[float, float, dict]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(cid: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        mine, bad = [], []
        try:
            for i in range(per_client):
                if time.monotonic() > deadline:
                    bad.append("stopped: --max-seconds reached")
                    break
                body = json.dumps({"question": qs[(cid * per_client + i) % len(qs)], "top_k": top_k})
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/v1/search", body=body, headers=server.headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    bad.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                    continue
                dt = time.perf_counter() - t0
                answer = json.loads(payload) if resp.status == 200 else {}
                if resp.status != 200 or len(answer["hits"]) != top_k:
                    bad.append(f"HTTP {resp.status}: {payload[:200]!r}")
                else:
                    mine.append((t0, dt, {"took": answer["took_ms"], **answer.get("timing_ms", {})}))
        finally:
            conn.close()
            with lock:
                results.extend(mine)
                errors.extend(bad)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def server_summary(answered: list[tuple[float, float, dict]]) -> dict[str, Any]:
    """The server's own milliseconds per answered search: all of it, the question encoding, the store."""
    keys = sorted({k for _, _, t in answered for k in t})
    return {k: latency_summary([t[k] / 1000 for _, _, t in answered if k in t]) for k in keys}


def latency_summary(latencies: list[float]) -> dict[str, Any]:
    if not latencies:
        return {"count": 0}
    ms = [1000 * x for x in latencies]
    return {"count": len(ms), "p50": round(bc.percentile(ms, 50), 2), "p90": round(bc.percentile(ms, 90), 2),
            "p99": round(bc.percentile(ms, 99), 2), "max": round(max(ms), 2), "mean": round(float(np.mean(ms)), 2)}


def run(args) -> dict:
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    audio_dir = work / "audio"
    audio_dir.mkdir(exist_ok=True)
    index_dir = work / "index"
    if index_dir.exists():  # every run indexes from scratch, through the server
        shutil.rmtree(index_dir)
    shutil.rmtree(work / "index.uploads", ignore_errors=True)
    report: dict[str, Any] = {"command": bc.command_line(), "machine": bc.machine_info(args.threads),
                              "targets": TARGETS}
    model_dir, what = resolve_model(args, work)
    report["model"] = {"dir": str(model_dir), "what": what}
    main_wav = audio_dir / f"synthetic_{args.minutes:g}min.wav"
    seconds = write_recording(main_wav, args.minutes, args.seed)
    side_wav = None
    if args.with_indexing:
        side_wav = audio_dir / f"synthetic_{args.with_indexing:g}min_b.wav"
        write_recording(side_wav, args.with_indexing, args.seed + 1)

    quantize = {"none": (), "all": ("--quantize",), "text": ("--quantize-text",)}[args.quantize]
    backend = ("--backend", "onnx", *quantize) if args.backend == "onnx" else ()
    if backend:
        report["onnx_export"] = bc.ensure_onnx(model_dir)
    server = Server(model_dir, index_dir, audio_dir, args.threads, secrets.token_hex(16), args.window,
                    args.search_workers, backend)
    rss: list[tuple[float, float, str]] = []
    phase = ["start"]
    stop_sampling = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop_sampling.is_set():
            rss.append((round(time.monotonic() - t0, 2), round(server.rss_mb(), 1), phase[0]))
            stop_sampling.wait(args.sample_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        t0 = time.perf_counter()
        server.wait_ready(300)
        report["server_start_s"] = round(time.perf_counter() - t0, 2)
        report["server_backend"] = server.request("GET", "/health")[1].get("backend")
        phase[0] = "indexing"
        t0 = time.perf_counter()
        job = server.wait_job(server.index(main_wav, "main"), args.max_seconds)
        index_s = time.perf_counter() - t0
        report["recording"] = {"minutes": round(seconds / 60, 2), "segments": job["segments"],
                               "index_s": round(index_s, 2), "index_rtf": round(index_s / seconds, 5)}
        phase[0] = "warm-up"
        qs = questions()
        run_clients(server, qs, 1, args.warmup, args.top_k, time.monotonic() + 120)
        if args.single_client:  # no queueing: what one search costs, beside the load's figures
            alone, _ = run_clients(server, qs, 1, args.single_client, args.top_k, time.monotonic() + 300)
            report["single_client"] = {"queries": args.single_client,
                                       "latency_ms": latency_summary([dt for _, dt, _ in alone]),
                                       "server_ms": server_summary(alone)}
        side = None
        if side_wav is not None:
            side = {"id": server.index(side_wav, "side"), "submitted": time.perf_counter()}
        phase[0] = "load"
        rss_before = server.rss_mb()
        t_load = time.perf_counter()
        answered, errors = run_clients(server, qs, args.clients, args.queries, args.top_k,
                                       time.monotonic() + args.max_seconds)
        load_s = time.perf_counter() - t_load
        phase[0] = "after"
        latencies = [dt for _, dt, _ in answered]
        total = args.clients * args.queries
        report["load"] = {"clients": args.clients, "queries_per_client": args.queries, "requests": total,
                          "answered": len(answered), "errors": total - len(answered),
                          "error_examples": sorted(set(errors))[:5], "seconds": round(load_s, 2),
                          "searches_per_s": round(len(answered) / load_s, 1), "top_k": args.top_k,
                          "latency_ms": latency_summary(latencies), "server_ms": server_summary(answered)}
        if side is not None:
            sjob = server.wait_job(side["id"], args.max_seconds)
            side_end = side["submitted"] + (sjob["finished"] - sjob["created"])
            during = [dt for t, dt, _ in answered if t < side_end]
            report["load"]["indexing_beside"] = {
                "minutes": args.with_indexing, "segments": sjob["segments"],
                "job_s": round(sjob["finished"] - sjob["created"], 2),
                "searches_while_indexing": len(during),
                "latency_ms_while_indexing": latency_summary(during),
                "latency_ms_after": latency_summary([dt for t, dt, _ in answered if t >= side_end])}
        load_rss = [r for _, r, p in rss if p == "load"]
        report["memory_mb"] = {"before_load": round(rss_before, 1), "after_load": round(server.rss_mb(), 1),
                               "max_during_load": round(max(load_rss), 1) if load_rss else None,
                               "samples": rss}
    finally:
        stop_sampling.set()
        sampler.join(5)
        server.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    lat = report["load"]["latency_ms"]
    report["meets_targets"] = {"search_p50_ms": lat.get("p50", 1e9) <= TARGETS["search_p50_ms"],
                               "search_p99_ms": lat.get("p99", 1e9) <= TARGETS["search_p99_ms"],
                               "errors": report["load"]["errors"] == 0}
    return report


def markdown(r: dict) -> str:
    load, lat, mem = r["load"], r["load"]["latency_ms"], r["memory_mb"]
    lines = [f"Model: {r['model']['what']}; recording: {r['recording']['minutes']:g} min, "
             f"{r['recording']['segments']} segments (indexed through the API in {r['recording']['index_s']:g} s).",
             "",
             "| clients x queries | p50 ms | p90 ms | p99 ms | max ms | searches/s | errors | RSS before -> after load (max) MiB |",
             "|---|---|---|---|---|---|---|---|",
             f"| {load['clients']} x {load['queries_per_client']} | {lat.get('p50')} | {lat.get('p90')} | "
             f"{lat.get('p99')} | {lat.get('max')} | {load['searches_per_s']} | {load['errors']} | "
             f"{mem['before_load']} -> {mem['after_load']} ({mem['max_during_load']}) |"]
    alone = r.get("single_client")
    if alone:
        a_lat = alone["latency_ms"]
        lines += ["", f"One client alone ({alone['queries']} searches): p50 {a_lat.get('p50')} ms, p99 {a_lat.get('p99')} ms."]
    for name, srv in (("under the load", load.get("server_ms")), ("one client alone", (alone or {}).get("server_ms"))):
        if srv:
            lines.append(f"Server-side p50 / p99 ms {name}: " + ", ".join(
                f"{k} {v.get('p50')} / {v.get('p99')}" for k, v in srv.items()) + ".")
    side = load.get("indexing_beside")
    if side:
        w = side["latency_ms_while_indexing"]
        lines += ["", f"Beside an indexing job ({side['minutes']:g} min recording, {side['segments']} segments, "
                      f"{side['job_s']:g} s): {side['searches_while_indexing']} searches while it ran, p50 "
                      f"{w.get('p50')} ms, p99 {w.get('p99')} ms."]
    lines += ["", "Targets (issue 14): p50 <= 30 ms, p99 <= 100 ms, 0 errors: "
                  + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in r["meets_targets"].items())]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="a CLSR model directory")
    src.add_argument("--tiny", action="store_true", help="a tiny random CLSR (conf/clsr_tiny.yaml)")
    src.add_argument("--random-mini", action="store_true",
                     help="the mini config with a random speech branch and the real all-MiniLM-L6-v2 text encoder")
    p.add_argument("--minutes", type=float, default=60.0, help="length of the indexed recording")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--queries", type=int, default=250, help="searches per client")
    p.add_argument("--warmup", type=int, default=20, help="searches before the load (not counted)")
    p.add_argument("--single-client", type=int, default=100, metavar="N",
                   help="N searches from one client before the load (latency without queueing; 0: skip)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--with-indexing", type=float, default=0.0, metavar="MINUTES",
                   help="index a second recording of this length while the load runs (0: none)")
    p.add_argument("--window", type=float, default=40.0)
    p.add_argument("--search-workers", type=int, default=1, help="the server's --search-workers")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="the server's --backend (onnx: the model dir must hold the exported model.onnx/model_eb.onnx)")
    p.add_argument("--quantize", action="store_const", const="all", default="none",
                   help="with --backend onnx: the server's --quantize (int8 graphs of both branches)")
    p.add_argument("--quantize-text", action="store_const", const="text", dest="quantize",
                   help="with --backend onnx: the server's --quantize-text (int8 text encoder only)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
                   help="torch threads of the server (OMP_NUM_THREADS)")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="upper bound on every phase")
    p.add_argument("--sample-s", type=float, default=0.5, help="interval of the resident-memory samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", help="keep the model, audio, index and server.log here (default: a temp dir)")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--markdown", type=Path, help="write the summary table here")
    args = p.parse_args(argv)
    for name in ("clients", "queries", "top_k"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.minutes > 0:
        p.error("--minutes must be > 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args)
    bc.publish(report, markdown(report), args.markdown, args.json)
    return report


if __name__ == "__main__":
    try:
        main()
    except (bc.BenchmarkInputError, RuntimeError, TimeoutError, OSError) as exc:
        print(f"serve.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)

#!/usr/bin/env python3
"""espeak-ng synthesis of a job list into 16 kHz mono 16-bit wav files.

Job list (JSONL, written by prepare_text.py): ``key``, ``wav`` (output path), ``segments``
(list of normalised sentences, spoken as one utterance), ``voice``, ``rate`` (words/min),
``pitch`` (0-99), ``max_sec`` (null, or a length limit: the utterance is re-synthesised from a
shorter contiguous run of sentences until it fits; the run always contains sentence ``anchor``,
e.g. the one holding the answer, and at least one sentence is kept).  The kept run is recorded
as ``seg_start``/``seg_end`` in the results.

Resumable: every finished wav is recorded in ``--results`` (JSONL, appended and flushed per
file) together with a hash of its job; a re-run skips jobs whose wav is still valid (header
readable, 16 kHz mono, same frame count, same job hash).  Wavs are written to a temporary name
and renamed, so an interrupted run never leaves a truncated wav behind.

espeak-ng writes 22.05 kHz audio; it is resampled to 16 kHz with soxr (python) or, if that
module is missing, with the sox command line tool.
Failures are retried once, then listed in ``<results>.failures.jsonl`` and counted; the exit
status is 1 if any job failed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf

try:
    import soxr  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    soxr = None

sys.path.insert(0, str(Path(__file__).resolve().parent))
from textnorm import ESPEAK_CHARS_PER_WORD as CHARS_PER_WORD  # noqa: E402

SR = 16000
JOB_FIELDS = ("key", "wav", "segments", "voice", "rate", "pitch")


class SynthesisError(RuntimeError):
    """espeak-ng or the resampler failed for one job."""


def job_hash(job: dict, sr: int = SR) -> str:
    """Hash of everything that determines the audio (so changed jobs are redone)."""
    blob = json.dumps([job["segments"], job["voice"], int(job["rate"]), int(job["pitch"]),
                       job.get("max_sec"), job.get("anchor", 0), sr], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def espeak_wave(text: str, voice: str, rate: int, pitch: int, espeak: str = "espeak-ng") -> tuple[np.ndarray, int]:
    """Run espeak-ng on text (via stdin, so text is never parsed as options); int16 samples + rate."""
    cmd = [espeak, "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "--stdout"]
    try:
        res = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise SynthesisError(f"espeak-ng timed out (voice {voice})") from None
    if res.returncode != 0:
        msg = res.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SynthesisError(f"espeak-ng exit {res.returncode}: {msg[-1] if msg else 'no message'}")
    try:
        x, sr = sf.read(io.BytesIO(res.stdout), dtype="int16")
    except Exception as e:  # soundfile raises several types
        raise SynthesisError(f"cannot parse espeak-ng output as wav ({e})") from None
    if x.ndim > 1:
        x = x[:, 0]
    if x.size == 0:
        raise SynthesisError("espeak-ng produced no audio")
    return x, sr


def resample(x: np.ndarray, sr_in: int, sr_out: int = SR) -> np.ndarray:
    if sr_in == sr_out:
        return x
    if soxr is not None:
        return soxr.resample(x, sr_in, sr_out)
    sox = shutil.which("sox")
    if sox is None:
        raise SynthesisError("neither the python module soxr nor the sox program is available to resample")
    buf = io.BytesIO()
    sf.write(buf, x, sr_in, format="WAV", subtype="PCM_16")
    res = subprocess.run([sox, "-t", "wav", "-", "-t", "wav", "-r", str(sr_out), "-b", "16", "-"],
                         input=buf.getvalue(), capture_output=True)
    if res.returncode != 0:
        raise SynthesisError(f"sox failed: {res.stderr.decode('utf-8', 'replace').strip()}")
    y, _ = sf.read(io.BytesIO(res.stdout), dtype="int16")
    return y


def choose_window(lens: list[int], s: int, e: int, anchor: int, budget: float) -> tuple[int, int]:
    """Contiguous run [s', e') inside [s, e) that contains anchor and whose summed lengths fit budget,
    starting as early as possible (sentence order and the opening of the paragraph are kept)."""
    def total(a: int, b: int) -> int:
        return sum(lens[a:b])
    e2 = s
    while e2 < e and total(s, e2 + 1) <= budget:
        e2 += 1
    if e2 > anchor:
        return s, e2
    s2 = anchor
    while s2 > s and total(s2 - 1, anchor + 1) <= budget:
        s2 -= 1
    e2 = anchor + 1
    while e2 < e and total(s2, e2 + 1) <= budget:
        e2 += 1
    return s2, e2


def synth_job(job: dict, espeak: str = "espeak-ng", sr: int = SR) -> dict:
    """Synthesise one job; returns the results record (raises SynthesisError)."""
    segs = job["segments"]
    if not segs or not all(isinstance(t, str) and t.strip() for t in segs):
        raise SynthesisError("empty text")
    n = len(segs)
    s, e = 0, n
    anchor = min(max(int(job.get("anchor") or 0), 0), n - 1)
    max_sec = job.get("max_sec")
    lens = [len(t) + 1 for t in segs]

    def chars(a: int, b: int) -> int:
        return sum(lens[a:b])

    if max_sec:
        # first guess from espeak-ng's typical speed, so over-long contexts are not synthesised whole
        budget = max_sec * float(job["rate"]) / 60.0 * CHARS_PER_WORD
        if chars(0, n) > budget:
            s, e = choose_window(lens, 0, n, anchor, budget)
    best = None  # (chars, s, e, samples, sr) of the longest window that fitted
    tried: set[tuple[int, int]] = set()
    while True:
        x, sr_in = espeak_wave(" ".join(segs[s:e]), job["voice"], job["rate"], job["pitch"], espeak)
        tried.add((s, e))
        dur = len(x) / sr_in
        if not max_sec or (dur <= max_sec and (s, e) == (0, n)):
            break
        speed = chars(s, e) / dur  # this voice's real characters per second
        fits = dur <= max_sec
        if fits and (best is None or chars(s, e) > best[0]):
            best = (chars(s, e), s, e, x, sr_in)
        ns, ne = choose_window(lens, 0, n, anchor, max_sec * speed * 0.99)
        if fits:
            if (ns, ne) in tried or chars(ns, ne) <= chars(s, e):
                break  # the measured speed says nothing longer fits
            s, e = ns, ne  # there is room: try a longer run
            continue
        if best is not None:  # a longer try overshot: keep the best window that fitted
            _, s, e, x, sr_in = best
            break
        if e - s == 1:
            break  # a single over-long sentence is kept whole
        if (ns, ne) in tried or chars(ns, ne) >= chars(s, e):
            ns, ne = (s, e - 1) if e - 1 > anchor else (s + 1, e)
        s, e = ns, ne
    y = resample(x, sr_in, sr)
    out = Path(job["wav"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}.wav")
    sf.write(str(tmp), y, sr, subtype="PCM_16")
    os.replace(tmp, out)
    return {"key": job["key"], "wav": str(out), "hash": job_hash(job, sr), "seg_start": s, "seg_end": e,
            "n_segments_total": len(segs), "frames": int(len(y)), "sample_rate": sr,
            "duration": round(len(y) / sr, 3)}


def _worker(args: tuple[dict, str, int, int]) -> dict:
    job, espeak, sr, retries = args
    err = ""
    for _ in range(retries + 1):
        try:
            return synth_job(job, espeak, sr)
        except SynthesisError as e:
            err = str(e)
        except Exception as e:  # noqa: BLE001 - report, never crash the pool or stay silent
            err = f"{type(e).__name__}: {e}"
    return {"key": job["key"], "wav": job["wav"], "error": err}


def wav_ok(path: str, frames: int | None = None, sr: int = SR) -> bool:
    """Header-only validity check (no audio is decoded)."""
    try:
        info = sf.info(path)
    except Exception:
        return False
    if info.samplerate != sr or info.channels != 1 or info.frames <= 0:
        return False
    if frames is not None and info.frames != frames:
        return False
    # a truncated file would have fewer data bytes than the header promises
    return os.path.getsize(path) >= 44 + 2 * info.frames


def load_results(path: Path) -> dict[str, dict]:
    """Read the results log; a torn last line (crash while writing) is ignored."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and "key" in r and "hash" in r:
                done[r["key"]] = r
    return done


def load_jobs(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: job list not found")
    jobs = []
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                j = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{ln}: invalid JSON ({e.msg})") from None
            miss = [k for k in JOB_FIELDS if k not in j]
            if miss:
                raise ValueError(f"{path}:{ln}: job lacks field(s) {miss}")
            jobs.append(j)
    keys = [j["key"] for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicate job keys")
    return jobs


def prune_orphans(jobs: list[dict]) -> int:
    """Delete *.wav files (and leftovers of interrupted writes) in the jobs' output folders that
    no job refers to any more, e.g. after a profile's sizes were reduced.  Returns the count."""
    keep = {str(Path(j["wav"]).resolve()) for j in jobs}
    n = 0
    for d in {Path(j["wav"]).resolve().parent for j in jobs}:
        if not d.is_dir():
            continue
        for f in d.glob("*.wav"):
            if str(f) not in keep:
                f.unlink()
                n += 1
    return n


def run(jobs_path: Path, results_path: Path, nj: int = 2, espeak: str = "espeak-ng", sr: int = SR,
        retries: int = 1, progress: bool = True, prune: bool = False) -> dict:
    """Synthesise all jobs not yet done; returns statistics (also written to <results>.stats.json)."""
    if shutil.which(espeak) is None:
        raise FileNotFoundError(f"{espeak}: program not found (install it: apt-get install espeak-ng)")
    jobs = load_jobs(jobs_path)
    prev = load_results(results_path)
    todo, kept = [], {}
    for j in jobs:
        r = prev.get(j["key"])
        if r and r.get("hash") == job_hash(j, sr) and r.get("wav") == j["wav"] and wav_ok(j["wav"], r.get("frames"), sr):
            kept[j["key"]] = r
        else:
            todo.append(j)
    # rewrite the log with only the still-valid records, then append new ones as they finish
    results_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = results_path.with_suffix(results_path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in kept.values():
            f.write(json.dumps(r) + "\n")
    tmp.replace(results_path)

    pruned = prune_orphans(jobs) if prune else 0
    failures: list[dict] = []
    new_audio = 0.0
    t0 = time.time()
    if todo:
        from tqdm import tqdm
        # longest first: better load balance between workers
        todo.sort(key=lambda j: -sum(len(s) for s in j["segments"]))
        args = [(j, espeak, sr, retries) for j in todo]
        with open(results_path, "a", encoding="utf-8") as log, Pool(max(1, nj)) as pool:
            bar = tqdm(pool.imap_unordered(_worker, args, chunksize=4), total=len(todo), disable=not progress,
                       desc="synthesize", unit="utt", mininterval=2.0, dynamic_ncols=True)
            for r in bar:
                if "error" in r:
                    failures.append(r)
                    bar.set_postfix(failed=len(failures))
                    continue
                log.write(json.dumps(r) + "\n")
                log.flush()
                new_audio += r["duration"]
    wall = time.time() - t0
    fail_path = results_path.with_name(results_path.name + ".failures.jsonl")
    if failures:
        with open(fail_path, "w", encoding="utf-8") as f:
            for r in failures:
                f.write(json.dumps(r) + "\n")
    elif fail_path.exists():
        fail_path.unlink()
    total = load_results(results_path)
    stats = {
        "jobs": len(jobs), "skipped_valid": len(kept), "synthesized": len(todo) - len(failures),
        "failed": len(failures), "workers": nj, "wall_sec": round(wall, 2),
        "new_audio_sec": round(new_audio, 2),
        "audio_sec_per_wall_sec": round(new_audio / wall, 1) if wall > 0 and new_audio else None,
        "total_audio_hours": round(sum(r["duration"] for r in total.values()) / 3600, 3),
        "truncated": sum(1 for r in total.values() if r["seg_end"] - r["seg_start"] < r["n_segments_total"]),
        "resampler": "soxr" if soxr is not None else "sox", "pruned_orphan_wavs": pruned,
    }
    results_path.with_name(results_path.name + ".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats | {"failures": failures}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", required=True, help="synth_jobs.jsonl from prepare_text.py")
    ap.add_argument("--results", required=True, help="results log (JSONL), appended per finished wav")
    ap.add_argument("--nj", type=int, default=2, help="parallel espeak-ng workers")
    ap.add_argument("--espeak", default="espeak-ng")
    ap.add_argument("--sample-rate", type=int, default=SR)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--prune", action="store_true",
                    help="delete wavs in the output folders that no job refers to (stale sizes, crashed writes)")
    a = ap.parse_args(argv)
    try:
        stats = run(Path(a.jobs), Path(a.results), a.nj, a.espeak, a.sample_rate, a.retries,
                    not a.no_progress, a.prune)
    except (ValueError, FileNotFoundError) as e:
        print(f"synthesize.py: error: {e}", file=sys.stderr)
        return 1
    failures = stats.pop("failures")
    print(json.dumps(stats, indent=2))
    if failures:
        print(f"synthesize.py: {len(failures)} of {stats['jobs']} jobs FAILED (listed in "
              f"{a.results}.failures.jsonl); first ones:", file=sys.stderr)
        for r in failures[:20]:
            print(f"  {r['key']}: {r['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

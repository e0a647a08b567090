"""Fuzzing in figures: generated bad audio files and questions through the loaders, counted.

    python benchmarks/robustness.py [--audio 2000] [--questions 2000] [--seed 0] [--json]
        [--through loaders,cli,query,server,kills,train_kills] [--kills 20] [--train-kills 20] [--work DIR]

Audio: random bytes; valid files cut at many offsets; RIFF/data sizes that lie; 0-, 1- and few-sample
files; NaN/inf samples; declared rates from 1 Hz to 384 kHz; 1 to 32 channels; 8/16/24/32-bit int,
float32/64; FLAC and Ogg with damaged frames. Each goes through ``funasr_clsr.audio.load_audio``.
Questions (empty, whitespace, 100k characters, control characters, RTL/emoji/CJK, lone surrogates,
non-strings) go through ``longform.check_questions``, the check every query path runs first.

Every input ends in one of: ``ok`` (float32 mono, finite, non-empty, no longer than the file's bytes
can hold at 4 kHz 8-bit mono), ``clear_error`` (AudioError / FileNotFoundError / ValueError with a
one-line message) or ``crash`` (any other exception, a multi-line message, an implausible output, or
a call over ``--time-limit`` seconds). The target is 0 crashes.

Past the loaders (a tiny random CLSR, exported once into ``--work``; robustness needs no trained one):
- ``cli``: the same audio files, plus good ones, through one ``funasr-clsr index --list`` run; every
  failed file must be one ``error:`` line, no traceback, no file indexed that ``load_audio`` refuses,
  and the index must then hold exactly the recordings the report says were indexed;
- ``query``: the questions through ``LongFormRetriever.query`` on that index, and one ``funasr-clsr
  query`` process per kind of question argv can carry (argv holds no NUL or lone surrogate);
- ``server``: the questions as ``POST /v1/search`` (plus bodies that are not UTF-8 or not JSON), the
  audio files as spoken questions (``POST /v1/search``, multipart ``audio``) and as uploads
  (``POST /v1/recordings``, each job waited for), in-process through
  FastAPI's TestClient: a 2xx, or a 4xx with a one-line JSON ``error``; anything else is a crash, and
  ``GET /v1/recordings`` must list exactly the uploads whose jobs finished;
- ``kills``: ``funasr-clsr index`` over 12 recordings SIGKILLed at ``--kills`` random moments (uniform
  over its indexing phase: from its first write to 1.2x the span between an uninterrupted run's first
  and last writes); each time the index must open, hold only whole recordings
  whose segments and vectors equal an uninterrupted run's, and a rerun must end equal to that run.
- ``train_kills``: ``python -m funasr_clsr.bin.train`` (conf/clsr_tiny.yaml, 8 synthetic pairs,
  ``--train-epochs`` epochs) SIGKILLed at ``--train-kills`` random moments inside training (an epoch
  drawn, then a moment within it, timed by a warm uninterrupted run); each time the same command is rerun:
  it must exit 0, resume from the last complete epoch (no "epoch: 0/" in its log once a checkpoint
  existed), finish every epoch, and the result must load with ``AutoModel`` and embed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402,F401  (puts the repo on sys.path)

sys.path.insert(0, str(bench_common.REPO / "tests"))  # clsr_testing: the tests' tiny text encoder and pairs

RATES = [1, 3, 100, 1000, 3999, 4000, 8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000, 384000]
SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]


def _wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def _speechlike(rng: np.random.Generator, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    n = max(int(seconds * rate), 0)
    t = np.arange(n) / max(rate, 1)
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2 + 0.02 * rng.standard_normal(n)
    x = x.astype(np.float32)
    return np.repeat(x[:, None], channels, 1) if channels > 1 else x


def audio_inputs(n: int, seed: int = 0):
    """``n`` (kind, suffix, bytes) damaged or unusual audio files, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    good = _wav_bytes(_speechlike(rng, 1.0, 16000), 16000)
    kinds = ["random_bytes", "cut", "lying_sizes", "few_samples", "non_finite", "rate", "channels",
             "subtype", "damaged_compressed"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "random_bytes":
            yield kind, pick.choice([".wav", ".flac", ".mp3", ".bin"]), rng.bytes(int(rng.integers(0, 4096)))
        elif kind == "cut":
            yield kind, ".wav", good[: int(rng.integers(0, len(good)))]
        elif kind == "lying_sizes":
            data = bytearray(good)
            riff, data_size = int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32))
            data[4:8] = struct.pack("<I", riff)
            at = data.find(b"data")
            data[at + 4: at + 8] = struct.pack("<I", data_size)
            yield kind, ".wav", bytes(data)
        elif kind == "few_samples":
            yield kind, ".wav", _wav_bytes(np.full(int(rng.integers(0, 8)), 0.1, np.float32), 16000)
        elif kind == "non_finite":
            x = _speechlike(rng, 0.3, 16000)
            x[rng.integers(0, x.size, 3)] = pick.choice([np.nan, np.inf, -np.inf])
            yield kind, ".wav", _wav_bytes(x, 16000, "FLOAT")
        elif kind == "rate":
            rate = pick.choice(RATES)
            yield kind, ".wav", _wav_bytes(_speechlike(rng, min(0.3, 4000 / rate), rate), rate)
        elif kind == "channels":
            ch = int(rng.integers(1, 33))
            yield kind, ".wav", _wav_bytes(_speechlike(rng, 0.2, 16000, ch), 16000)
        elif kind == "subtype":
            yield kind, ".wav", _wav_bytes(_speechlike(rng, 0.2, 16000), 16000, pick.choice(SUBTYPES))
        else:
            fmt, suffix, subtype = pick.choice([("FLAC", ".flac", "PCM_16"), ("OGG", ".ogg", "VORBIS")])
            data = bytearray(_wav_bytes(_speechlike(rng, 0.5, 16000), 16000, subtype, fmt))
            for _ in range(int(rng.integers(1, 20))):  # flip bytes past the stream header
                at = int(rng.integers(min(64, len(data) - 1), len(data)))
                data[at] = int(rng.integers(0, 256))
            yield kind, suffix, bytes(data)


def question_inputs(n: int, seed: int = 0):
    pick = random.Random(seed)
    makers = [
        lambda: "", lambda: " \t\n ", lambda: "x" * 100_000, lambda: "who\x00was\x07the\x1bking",
        lambda: "من كان الملك", lambda: "誰是國王？", lambda: "who 👑 was king 🏰", lambda: "\u202ekcab\u202c",
        lambda: "bad \ud800 surrogate", lambda: None, lambda: 42, lambda: [], lambda: ["ok", ""],
        lambda: "".join(chr(pick.randint(1, 0x2FFF)) for _ in range(pick.randint(1, 5000))),
        lambda: "what " * pick.randint(1, 2000),
    ]
    for i in range(n):
        yield f"q{i % len(makers)}", makers[i % len(makers)]()


def _one_line(exc: BaseException) -> bool:
    msg = str(exc)
    return bool(msg.strip()) and "\n" not in msg.strip()


def run_audio(n: int, seed: int, time_limit: float) -> dict:
    from funasr_clsr.audio import AudioError, load_audio

    counts = {"ok": 0, "clear_error": 0, "crash": 0}
    by_kind: dict[str, dict[str, int]] = {}
    crashes = []
    slowest = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kind, suffix, data) in enumerate(audio_inputs(n, seed)):
            path = Path(tmp) / f"in{i}{suffix}"
            path.write_bytes(data)
            t0 = time.perf_counter()
            try:
                y = load_audio(path)
                # a file cannot hold more audio than its bytes at the lowest accepted rate, 8-bit mono
                plausible = (y.dtype == np.float32 and y.ndim == 1 and y.size > 0 and np.isfinite(y).all()
                             and y.size / 16000 <= max(len(data), 1) / 4000)
                result = "ok" if plausible else "crash"
                why = "" if plausible else f"implausible output: {y.dtype} {y.shape}"
            except (AudioError, FileNotFoundError, ValueError) as e:
                result, why = ("clear_error", "") if _one_line(e) else ("crash", f"multi-line: {e!r}")
            except Exception as e:  # noqa: BLE001  (counting them is the point)
                result, why = "crash", f"{type(e).__name__}: {e}"
            took = time.perf_counter() - t0
            slowest = max(slowest, took)
            if took > time_limit:
                result, why = "crash", f"took {took:.1f} s"
            counts[result] += 1
            by_kind.setdefault(kind, {"ok": 0, "clear_error": 0, "crash": 0})[result] += 1
            if result == "crash" and len(crashes) < 20:
                crashes.append({"input": i, "kind": kind, "why": why[:300]})
    return {"tried": n, **counts, "by_kind": by_kind, "crashes": crashes, "slowest_s": round(slowest, 3)}


def run_questions(n: int, seed: int) -> dict:
    from funasr_clsr.longform import check_questions

    def check(q) -> bool:
        check_questions(q)
        return True

    return _count_questions(n, seed, check)


def _count_questions(n: int, seed: int, call) -> dict:
    """Each generated question through ``call`` (True: a plausible result): ok, clear_error or crash."""
    counts = {"ok": 0, "clear_error": 0, "crash": 0}
    crashes = []
    for name, q in question_inputs(n, seed):
        try:
            counts["ok" if call(q) else "crash"] += 1
        except ValueError as e:
            counts["clear_error" if _one_line(e) else "crash"] += 1
        except Exception as e:  # noqa: BLE001  (counting them is the point)
            counts["crash"] += 1
            if len(crashes) < 20:
                crashes.append({"input": name, "why": f"{type(e).__name__}: {e}"[:300]})
    return {"tried": n, **counts, "crashes": crashes}


# ------------------------------------------------------------------ past the loaders

STAGES = ("loaders", "cli", "query", "server", "kills", "train_kills")
ERROR_LINE = "funasr-clsr index: error: "


def _cli_command(*args: str) -> dict:
    """``funasr-clsr ARGS`` as subprocess keywords: this checkout's package, one torch thread."""
    return {"args": [sys.executable, "-m", "funasr_clsr.bin.cli", *args], "cwd": bench_common.REPO,
            "env": {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(bench_common.REPO)}}


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(**_cli_command(*args), capture_output=True, text=True, timeout=timeout)


def _write_fuzz_audio(n: int, seed: int, folder: Path) -> list[tuple[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (kind, suffix, data) in enumerate(audio_inputs(n, seed)):
        path = folder / f"in{i:05d}{suffix}"
        path.write_bytes(data)
        files.append((kind, path))
    return files


def _good_recordings(folder: Path, n: int, seconds: float, seed: int) -> list[Path]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"good{i:02d}.wav"
        if not p.is_file():
            sf.write(p, _speechlike(rng, seconds, 16000), 16000)
        paths.append(p)
    return paths


def _list_file(path: Path, recordings) -> Path:
    path.write_text("".join(f"{p.stem} {p}\n" for p in recordings))
    return path


def _index_contents(index: Path) -> dict[str, list[tuple[float, float, np.ndarray]]]:
    """recording_id -> [(start, end, vector)] of a LanceDB index directory ({} when nothing was committed)."""
    from funasr_clsr.retrieval.store import LanceSegmentStore

    store = LanceSegmentStore.load(index, lock_timeout=30)
    out: dict[str, list] = {}
    for seg, vec in zip(store.segments, store.vectors):
        out.setdefault(seg["recording_id"], []).append((float(seg["start"]), float(seg["end"]), vec))
    return out


def run_cli_index(n: int, seed: int, work: Path, model_dir: Path) -> dict:
    """The fuzz files and 3 good recordings through one ``funasr-clsr index --list`` process."""
    tmp = Path(tempfile.mkdtemp(dir=work))
    files = _write_fuzz_audio(n, seed, tmp / "audio")
    good = _good_recordings(tmp / "good", 3, 50.0, seed)
    index = tmp / "index"
    t0 = time.perf_counter()
    proc = _cli("index", "--model", str(model_dir), "--index", str(index), "--no-progress", "--json",
                "--list", str(_list_file(tmp / "all.list", [p for _, p in files] + good)))
    seconds = time.perf_counter() - t0
    crashes = []
    if "Traceback" in proc.stderr:
        crashes.append("a traceback: " + proc.stderr[proc.stderr.index("Traceback"):][:500])
    if proc.returncode not in (0, 2):
        crashes.append(f"exit code {proc.returncode}: {proc.stderr[-500:]}")
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = {"indexed": [], "skipped": [], "failed": []}
        crashes.append(f"no JSON report on stdout: {proc.stdout[-300:]}")
    error_lines = [x for x in proc.stderr.splitlines() if x.startswith(ERROR_LINE)]
    if len(error_lines) != len(report["failed"]):
        crashes.append(f"{len(report['failed'])} failed recordings but {len(error_lines)} error lines")
    multi = [f["error"] for f in report["failed"] if "\n" in f["error"] or not f["error"].strip()]
    crashes += [f"an error that is not one line: {m[:200]!r}" for m in multi[:5]]
    indexed = {e["recording_id"] for e in report["indexed"]}
    held = set(_index_contents(index)) if index.exists() else set()
    if held != indexed:
        crashes.append(f"the index holds {len(held)} recordings, the report says {len(indexed)} were indexed "
                       f"(only in the index: {sorted(held - indexed)[:5]}, only in the report: "
                       f"{sorted(indexed - held)[:5]})")
    good_ids = {p.stem for p in good}
    if not good_ids <= indexed:
        crashes.append(f"good recordings not indexed: {sorted(good_ids - indexed)}")
    from funasr_clsr.audio import AudioError, load_audio

    for kind, p in files:  # the streaming indexer must accept no file that load_audio refuses
        if p.stem in indexed:
            try:
                load_audio(p)
            except (AudioError, ValueError) as e:
                crashes.append(f"indexed {p.name} ({kind}), which load_audio refuses: {e}"[:300])
    by_id = {p.stem: kind for kind, p in files}
    by_kind: dict[str, dict[str, int]] = {}
    examples: dict[str, str] = {}
    for key, rows in (("indexed", report["indexed"]), ("skipped", report["skipped"]), ("clear_error", report["failed"])):
        for row in rows:
            kind = by_id.get(Path(row["path"]).stem)
            if kind is not None:
                by_kind.setdefault(kind, {"indexed": 0, "skipped": 0, "clear_error": 0})[key] += 1
                if key == "clear_error":
                    examples.setdefault(kind, row["error"].replace(str(tmp), "…")[:200])
    return {"tried": n, "good_recordings": len(good), "indexed": len(indexed - good_ids),
            "skipped_silent": len(report["skipped"]), "clear_error": len(report["failed"]),
            "crash": len(crashes), "crashes": crashes, "exit_code": proc.returncode,
            "index_holds_exactly_the_indexed": held == indexed, "by_kind": by_kind, "error_examples": examples,
            "seconds": round(seconds, 1),
            "_index": str(index)}


CLI_QUESTION_KINDS = {  # what argv can carry of question_inputs' kinds
    "empty": "", "whitespace": " \t\n ", "100k_chars": "x" * 100_000, "control_chars": "who\x07was\x1bthe king",
    "rtl": "من كان الملك", "cjk": "誰是國王？", "emoji": "who 👑 was king 🏰", "bidi_override": "\u202ekcab\u202c",
    "2000_words": "what " * 2000,
}


def run_query(n: int, seed: int, retriever, model_dir: Path, index: Path, cli_runs: bool = True) -> dict:
    """The questions through ``LongFormRetriever.query`` in-process, and a few through the CLI."""
    store = retriever.open_index(index)

    def query(q) -> bool:
        hits = retriever.query(store, q, top_k=3)
        return isinstance(hits, list) and all(len(h) <= 3 for h in hits)

    result = _count_questions(n, seed, query)
    cli = {"tried": 0, "ok": 0, "clear_error": 0, "crash": 0, "crashes": []}
    for kind, q in (CLI_QUESTION_KINDS.items() if cli_runs else ()):
        proc = _cli("query", "--model", str(model_dir), "--index", str(index), "--json", "--", q)
        cli["tried"] += 1
        lines = [x for x in proc.stderr.splitlines() if x.startswith("funasr-clsr query: error: ")]
        if proc.returncode == 0 and "Traceback" not in proc.stderr:
            cli["ok"] += 1
        elif proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr:
            cli["clear_error"] += 1
        else:
            cli["crash"] += 1
            cli["crashes"].append({"input": kind, "exit": proc.returncode, "stderr": proc.stderr[-400:]})
    return {**result, "cli": cli}


def _http_result(resp) -> tuple[str, str]:
    """ok (2xx), clear_error (4xx with a one-line JSON error) or crash (anything else)."""
    if resp.status_code < 300:
        return "ok", ""
    try:
        body = resp.json()
    except ValueError:
        return "crash", f"HTTP {resp.status_code} with a body that is not JSON: {resp.text[:200]!r}"
    err = body.get("error") if isinstance(body, dict) else None
    if resp.status_code < 500 and isinstance(err, str) and err.strip() and "\n" not in err:
        return "clear_error", ""
    return "crash", f"HTTP {resp.status_code}: {str(body)[:300]}"


def run_server(n_audio: int, n_questions: int, seed: int, work: Path, retriever, index: Path,
               job_timeout: float = 60.0) -> dict:
    """Questions and uploads through the HTTP API (in-process TestClient, the app as ``serve`` builds it)."""
    import shutil

    from fastapi.testclient import TestClient

    from funasr_clsr.serve.app import create_app

    tmp = Path(tempfile.mkdtemp(dir=work))
    server_index = tmp / "index"
    shutil.copytree(index, server_index)  # starts with the CLI run's recordings, so searches have hits
    before = set(_index_contents(server_index))
    app = create_app(retriever, server_index, uploads_dir=tmp / "uploads",
                     max_upload_bytes=1 << 20, api_key="")
    q_counts = {"ok": 0, "clear_error": 0, "crash": 0}
    a_counts = {"ok": 0, "clear_error": 0, "crash": 0}
    s_counts = {"ok": 0, "clear_error": 0, "crash": 0}  # the same damaged audio as spoken questions
    crashes = []
    with TestClient(app, raise_server_exceptions=False) as client:
        def count(counts, what, result, why=""):
            counts[result] += 1
            if why and len(crashes) < 20:
                crashes.append({"input": what, "why": why})

        raw_bodies = [b"\xff\xfe\xfd", b'{"question": "\xc3\x28"}', b"{not json", b"", b"[]", b"null",
                      b'{"question": "ok", "top_k": "3"}', b'{"question": "ok", "top_k": 1e9}',
                      b'{"question": "ok", "where": "date >>> 1"}', b'{"question": "ok", "recording_id": "../x"}']
        for i, (name, q) in enumerate(question_inputs(n_questions, seed)):
            if i % 10 == 9:  # every tenth: a raw body (not UTF-8, not JSON, wrong types, bad filters)
                resp = client.post("/v1/search", content=raw_bodies[(i // 10) % len(raw_bodies)],
                                   headers={"content-type": "application/json"})
                count(q_counts, f"raw body {(i // 10) % len(raw_bodies)}", *_http_result(resp))
                continue
            try:
                body = json.dumps({"question": q, "top_k": 3})
            except (TypeError, ValueError):  # not JSON-serialisable (a lone surrogate goes as its escape)
                body = json.dumps({"question": str(q)})
            resp = client.post("/v1/search", content=body.encode("utf-8", "surrogatepass"),
                               headers={"content-type": "application/json"})
            count(q_counts, name, *_http_result(resp))
        jobs = {}
        for i, (kind, suffix, data) in enumerate(audio_inputs(n_audio, seed)):
            resp = client.post("/v1/search", files={"audio": (f"q{i:05d}{suffix}", data)}, data={"top_k": "3"})
            count(s_counts, f"spoken question {i} ({kind})", *_http_result(resp))
            rid = f"up{i:05d}"
            resp = client.post("/v1/recordings", files={"file": (f"{rid}{suffix}", data)},
                               data={"recording_id": rid})
            result, why = _http_result(resp)
            if result == "ok":  # counted when its job ends
                jobs[rid] = resp.json()["job_id"]
            else:
                count(a_counts, f"upload {rid} ({kind})", result, why)
        finished = set()
        for rid, job_id in jobs.items():
            deadline = time.monotonic() + job_timeout
            while True:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["state"] in ("done", "failed") or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            if job["state"] == "done":
                count(a_counts, f"job {rid}", "ok")
                if job.get("segments"):
                    finished.add(rid)
            elif job["state"] == "failed" and isinstance(job.get("error"), str) and "\n" not in job["error"].strip():
                count(a_counts, f"job {rid}", "clear_error")
            else:
                count(a_counts, f"job {rid}", "crash", f"{job['state']}: {job.get('error')}"[:300])
        listed = {r["recording_id"] for r in client.get("/v1/recordings").json()["recordings"]}
        alive = client.get("/health").status_code == 200
    exact = listed == before | finished
    return {"questions": {"tried": n_questions, **q_counts}, "uploads": {"tried": n_audio, **a_counts},
            "spoken_questions": {"tried": n_audio, **s_counts}, "crashes": crashes,
            "recordings_listed_exactly_the_finished_uploads": exact, "serving_after": alive}


def _same_segments(rows: list, ref: list | None) -> bool:
    """One recording's [(start, end, vector)] equal to the reference's: same windows, vectors within 1e-5."""
    return ref is not None and len(rows) == len(ref) and all(
        (a[0], a[1]) == (b[0], b[1]) and float(np.abs(a[2] - b[2]).max()) <= 1e-5 for a, b in zip(rows, ref))


def _kill_check(index: Path, reference: dict) -> dict:
    """What a killed run left (opening the index raises if it cannot be opened): whole recordings equal
    to the reference's, nothing else."""
    if not index.exists() or not any(index.iterdir()):
        return {"recordings": 0, "partial_or_wrong": 0}
    held = _index_contents(index)
    return {"recordings": len(held),
            "partial_or_wrong": sum(not _same_segments(rows, reference.get(rid)) for rid, rows in held.items())}


def _same_index(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(_same_segments(a[r], b[r]) for r in a)


def run_kills(n_kills: int, seed: int, work: Path, model_dir: Path, recordings: int = 12) -> dict:
    """SIGKILL ``funasr-clsr index`` at random moments; check what it left and that a rerun completes it."""
    tmp = Path(tempfile.mkdtemp(dir=work))
    lst = _list_file(tmp / "recs.list", _good_recordings(work / "kill_recordings", recordings, 90.0, seed))
    args = ["--model", str(model_dir), "--no-progress", "--json", "--list", str(lst)]

    def start(index: Path) -> subprocess.Popen:
        return subprocess.Popen(**_cli_command("index", "--index", str(index), *args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    ref_dir = tmp / "reference"
    t0 = time.perf_counter()
    proc = start(ref_dir)
    first_write = last_write = None
    seen = 0
    while proc.poll() is None:
        files = sum(1 for _ in ref_dir.rglob("*")) if ref_dir.exists() else 0
        if files != seen:  # a commit adds data, manifest and version files
            seen, last_write = files, time.perf_counter() - t0
            first_write = first_write if first_write is not None else last_write
        time.sleep(0.005)
    total = time.perf_counter() - t0
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed: {err.decode()[-800:]}")
    reference = _index_contents(ref_dir)
    first_write = first_write or 0.0
    last_write = last_write or total
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n_kills):
        index = tmp / f"killed{i:02d}"
        # start-up (imports, model load) varies by seconds between runs: the moment is drawn within
        # this run's own indexing phase, from its first write to 1.2x the uninterrupted run's last
        # (the exit after it takes longer than the commits and tells nothing)
        after = float(rng.uniform(0.0, 1.2 * (last_write - first_write)))
        proc = start(index)
        t_start = time.perf_counter()
        while proc.poll() is None and not (index.exists() and any(index.iterdir())):
            time.sleep(0.005)
        time.sleep(after)
        at = time.perf_counter() - t_start
        exited_first = proc.poll() is not None
        if not exited_first:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
        proc.stdout.close()
        proc.stderr.close()
        row = {"kill_at_s": round(at, 2), "after_first_write_s": round(after, 2), "exited_before_the_kill": exited_first,
               **_kill_check(index, reference)}
        rerun = _cli("index", "--index", str(index), *args)
        try:
            report = json.loads(rerun.stdout)
        except json.JSONDecodeError:
            report = {}
        row.update(rerun_exit=rerun.returncode, rerun_skipped=len(report.get("skipped", [])),
                   rerun_equals_uninterrupted=rerun.returncode == 0 and _same_index(_index_contents(index), reference))
        runs.append(row)
    held = [r["recordings"] for r in runs]
    return {"kills": n_kills, "recordings": recordings, "segments": sum(len(v) for v in reference.values()),
            "uninterrupted_s": round(total, 1), "first_write_s": round(first_write, 2),
            "last_write_s": round(last_write, 2),
            "killed_mid_run": sum(not r["exited_before_the_kill"] for r in runs),
            "index_opened": len(runs),  # _kill_check opened each one (it raises otherwise)
            "partial_or_wrong_recordings": sum(r["partial_or_wrong"] for r in runs),
            "recordings_held_at_kill": {"min": min(held, default=0), "median": float(np.median(held)) if held else 0,
                                        "max": max(held, default=0)},
            "reruns_skipping_what_was_held": sum(r["rerun_skipped"] == r["recordings"] for r in runs),
            "reruns_equal_to_uninterrupted": sum(r["rerun_equals_uninterrupted"] for r in runs), "runs": runs}


def _train_command(data: Path, out: Path, epochs: int) -> list[str]:
    from clsr_testing import TINY_TE

    return [sys.executable, "-m", "funasr_clsr.bin.train", "--config-path", str(bench_common.REPO / "conf"),
            "--config-name", "clsr_tiny.yaml", f"++model_conf.text_encoder_conf.path={TINY_TE}",
            f"++tokenizer_conf.token_list={TINY_TE / 'vocab.txt'}", f"++frontend_conf.cmvn_file={data / 'am.mvn'}",
            f"++train_data_set_list={data / 'pairs.jsonl'}", f"++valid_data_set_list={data / 'pairs.jsonl'}",
            f"++output_dir={out}", f"++train_conf.max_epoch={epochs}"]


def _train_pairs(folder: Path) -> Path:
    """The tests' eight tone-coded pairs (clsr_testing) as a jsonl, with their am.mvn."""
    import soundfile as sf
    from clsr_testing import CONTEXTS, QUESTIONS, tone_speech, tiny_cmvn

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (ctx, q) in enumerate(zip(CONTEXTS, QUESTIONS)):
        sf.write(folder / f"ctx{i}.wav", tone_speech(ctx, seed=i), 16000)
        lines.append(json.dumps({"key": f"pair{i}", "source": str(folder / f"ctx{i}.wav"), "source_len": 100,
                                 "target": ctx, "target_len": len(ctx.split()), "question": q}) + "\n")
    (folder / "pairs.jsonl").write_text("".join(lines))
    tiny_cmvn(folder / "am.mvn")
    return folder


def _epochs_done(out: Path) -> int:
    return max((int(p.name.split(".ep")[1]) for p in out.glob("model.pt.ep*") if p.name.split(".ep")[1].isdigit()),
               default=0)


def run_train_kills(n_kills: int, seed: int, work: Path, epochs: int = 6) -> dict:
    """SIGKILL training at random moments; each rerun of the same command must resume, finish and load."""
    from funasr import AutoModel
    from clsr_testing import QUESTIONS

    tmp = Path(tempfile.mkdtemp(dir=work))
    data = _train_pairs(tmp / "pairs")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run_until(out: Path, kill_at: tuple[int, float] | None):
        """Run training; with ``kill_at=(epoch, seconds)``, SIGKILL it ``seconds`` after ``epoch``
        checkpoints exist (0: after its first file). Returns exit code, seconds to the first file and
        the moments each epoch's checkpoint appeared."""
        proc = subprocess.Popen(_train_command(data, out, epochs), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        t0 = time.perf_counter()
        while proc.poll() is None and not (out.exists() and any(out.iterdir())):
            time.sleep(0.01)
        started, seen = time.perf_counter() - t0, []
        while proc.poll() is None and (kill_at is None or len(seen) < kill_at[0]):
            seen += [time.perf_counter() - t0] * (_epochs_done(out) - len(seen))
            time.sleep(0.01)
        seen += [time.perf_counter() - t0] * (_epochs_done(out) - len(seen))
        if kill_at is not None and proc.poll() is None:
            time.sleep(kill_at[1])
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(600)
        return proc.returncode, started, seen

    # the first run pays cold caches (imports, files) and is run once more; the kill moments come from the
    # second: an epoch is drawn, then a moment within it, so every kill lands inside training (in a step, an
    # evaluation or a checkpoint write), whatever start-up costs on the day
    run_until(tmp / "warm-up", None)
    rc, started, seen = run_until(tmp / "reference", None)
    if rc != 0 or _epochs_done(tmp / "reference") != epochs or len(seen) != epochs:
        raise RuntimeError(f"the uninterrupted training run failed (exit {rc})")
    epoch_s = float(np.median(np.diff([started] + seen)))
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n_kills):
        out = tmp / f"killed{i:02d}"
        kill_epoch, after = int(rng.integers(0, epochs)), float(rng.uniform(0.0, epoch_s))
        rc, _, _ = run_until(out, (kill_epoch, after))
        held = _epochs_done(out)
        rerun = subprocess.run(_train_command(data, out, epochs), capture_output=True, text=True, env=env, timeout=900)
        log = rerun.stdout + rerun.stderr
        resumed = held == 0 or f"epoch: 0/{epochs}" not in log
        repaired = any(m in log for m in (": resuming from model.pt.ep", "training starts from its initialisation"))
        row = {"kill_in_epoch": kill_epoch + 1, "kill_after_s": round(after, 2), "exited_before_the_kill": rc == 0,
               "epochs_held": held, "rerun_exit": rerun.returncode, "resumed": resumed,
               "rerun_repaired_checkpoint": repaired, "finished": _epochs_done(out) == epochs}
        try:
            m = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").model
            row["loads"] = bool(np.isfinite(m.encode_text(QUESTIONS[:2]).numpy()).all())
        except Exception as exc:  # counted, not raised: a figure for the report
            row["loads"], row["load_error"] = False, str(exc).splitlines()[0][:200]
        runs.append(row)
    held = [r["epochs_held"] for r in runs]
    return {"kills": n_kills, "epochs": epochs, "last_checkpoint_s": round(seen[-1], 1), "epoch_s": round(epoch_s, 2),
            "killed_mid_run": sum(not r["exited_before_the_kill"] for r in runs),
            "epochs_held_at_kill": {"min": min(held, default=0), "median": float(np.median(held)) if held else 0,
                                    "max": max(held, default=0)},
            "reruns_exit_0": sum(r["rerun_exit"] == 0 for r in runs),
            "reruns_that_repaired_a_torn_or_missing_checkpoint": sum(r["rerun_repaired_checkpoint"] for r in runs),
            "reruns_resumed": sum(r["resumed"] for r in runs),
            "reruns_finished": sum(r["finished"] for r in runs),
            "results_load": sum(r["loads"] for r in runs), "runs": runs}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", type=int, default=2000)
    ap.add_argument("--questions", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=10.0, help="seconds one input may take")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--through", default="loaders",
                    help=f"comma-separated stages of {','.join(STAGES)} (query and server need cli's index)")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs of the indexer (--through kills)")
    ap.add_argument("--train-kills", type=int, default=20, help="SIGKILLs of training (--through train_kills)")
    ap.add_argument("--train-epochs", type=int, default=6, help="epochs of each training run (train_kills)")
    ap.add_argument("--cli-queries", action=argparse.BooleanOptionalAction, default=True,
                    help="with query: one funasr-clsr query process per kind of question")
    ap.add_argument("--work", type=Path, default=None, help="work dir (default: a temporary one)")
    a = ap.parse_args(argv)
    stages = [x for x in a.through.split(",") if x]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from {','.join(STAGES)}")
    if {"query", "server"} & set(stages) and "cli" not in stages:
        ap.error("query and server search the index the cli stage builds: add cli")
    t0 = time.perf_counter()
    out: dict = {"seed": a.seed, "command": "python benchmarks/robustness.py " + " ".join(argv or sys.argv[1:])}
    if "loaders" in stages:
        out["audio"] = run_audio(a.audio, a.seed, a.time_limit)
        out["questions"] = run_questions(a.questions, a.seed)
    if set(stages) - {"loaders"}:
        with contextlib.redirect_stdout(sys.stderr):  # FunASR prints its banner on stdout: keep --json clean
            _run_stages(out, stages, a)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        _print_summary(out)
    return out


def _run_stages(out: dict, stages: list[str], a) -> None:
    work = a.work or Path(tempfile.mkdtemp(prefix="robustness-"))
    work.mkdir(parents=True, exist_ok=True)
    if "train_kills" in stages:
        out["train_kills"] = run_train_kills(a.train_kills, a.seed, work, a.train_epochs)
    if not set(stages) - {"loaders", "train_kills"}:
        return
    model_dir, what = bench_common.random_model("tiny", work)
    out["model"] = what
    if "cli" in stages:
        out["cli_index"] = run_cli_index(a.audio, a.seed, work, model_dir)
        index = Path(out["cli_index"].pop("_index"))
    if {"query", "server"} & set(stages):
        from funasr_clsr.retrieval.pipeline import LongFormRetriever

        retriever = LongFormRetriever(str(model_dir))  # the model id the CLI's index recorded
    if "query" in stages:
        out["query"] = run_query(a.questions, a.seed, retriever, model_dir, index, cli_runs=a.cli_queries)
    if "server" in stages:
        out["server"] = run_server(a.audio, a.questions, a.seed, work, retriever, index)
    if "kills" in stages:
        out["kills"] = run_kills(a.kills, a.seed, work, model_dir)


def _print_summary(out: dict) -> None:
    rows = [("audio (load_audio)", out.get("audio")), ("questions (check_questions)", out.get("questions")),
            ("audio (funasr-clsr index)", out.get("cli_index")), ("questions (retriever.query)", out.get("query")),
            ("questions (funasr-clsr query)", (out.get("query") or {}).get("cli")),
            ("questions (POST /v1/search)", (out.get("server") or {}).get("questions")),
            ("audio (POST /v1/recordings)", (out.get("server") or {}).get("uploads")),
            ("audio as spoken questions (POST /v1/search)", (out.get("server") or {}).get("spoken_questions"))]
    for name, r in rows:
        if r:
            ok = r.get("ok", r.get("indexed", 0))
            print(f"{name}: tried {r['tried']}, ok {ok}, clear errors {r['clear_error']}, crashes {r.get('crash', 0)}")
    for key in ("audio", "questions", "query", "server", "cli_index"):
        for c in (out.get(key) or {}).get("crashes", []):
            print("  crash:", c)
    if "kills" in out:
        k = out["kills"]
        print(f"kills: {k['kills']} ({k['killed_mid_run']} mid-run), index opened {k['index_opened']}, partial or "
              f"wrong recordings {k['partial_or_wrong_recordings']}, reruns equal to an uninterrupted run "
              f"{k['reruns_equal_to_uninterrupted']}")
    if "train_kills" in out:
        k = out["train_kills"]
        print(f"training kills: {k['kills']} ({k['killed_mid_run']} mid-run), reruns exit 0 {k['reruns_exit_0']}, "
              f"resumed {k['reruns_resumed']} (repairing a checkpoint the kill tore "
              f"{k['reruns_that_repaired_a_torn_or_missing_checkpoint']}), finished {k['reruns_finished']}, results load {k['results_load']}")


if __name__ == "__main__":
    main()

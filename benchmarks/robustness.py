"""Fuzzing in figures: generated bad audio files and questions through the loaders, counted.

    python benchmarks/robustness.py [--audio 2000] [--questions 2000] [--seed 0] [--json]

Audio: random bytes; valid files cut at many offsets; RIFF/data sizes that lie; 0-, 1- and few-sample
files; NaN/inf samples; declared rates from 1 Hz to 384 kHz; 1 to 32 channels; 8/16/24/32-bit int,
float32/64; FLAC and Ogg with damaged frames. Each goes through ``funasr_clsr.audio.load_audio``.
Questions (empty, whitespace, 100k characters, control characters, RTL/emoji/CJK, lone surrogates,
non-strings) go through ``longform.check_questions``, the check every query path runs first.

Every input ends in one of: ``ok`` (float32 mono, finite, non-empty, no longer than the file's bytes
can hold at 4 kHz 8-bit mono), ``clear_error`` (AudioError / FileNotFoundError / ValueError with a
one-line message) or ``crash`` (any other exception, a multi-line message, an implausible output, or
a call over ``--time-limit`` seconds). The target is 0 crashes.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402,F401  (puts the repo on sys.path)

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

    counts = {"ok": 0, "clear_error": 0, "crash": 0}
    crashes = []
    for name, q in question_inputs(n, seed):
        try:
            check_questions(q)
            counts["ok"] += 1
        except ValueError as e:
            counts["clear_error" if _one_line(e) else "crash"] += 1
        except Exception as e:  # noqa: BLE001
            counts["crash"] += 1
            if len(crashes) < 20:
                crashes.append({"input": name, "why": f"{type(e).__name__}: {e}"[:300]})
    return {"tried": n, **counts, "crashes": crashes}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", type=int, default=2000)
    ap.add_argument("--questions", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=10.0, help="seconds one input may take")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = {"seed": a.seed, "audio": run_audio(a.audio, a.seed, a.time_limit),
           "questions": run_questions(a.questions, a.seed)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for side in ("audio", "questions"):
            r = out[side]
            print(f"{side}: tried {r['tried']}, ok {r['ok']}, clear errors {r['clear_error']}, crashes {r['crash']}")
        for c in out["audio"]["crashes"] + out["questions"]["crashes"]:
            print("  crash:", c)
    return out


if __name__ == "__main__":
    main()

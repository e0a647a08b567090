#!/usr/bin/env python3
"""Stage 1 data checks: every wav referenced by the recipe's JSONL files exists, has a readable
16 kHz mono header and as many data bytes as the header promises; ``source_len`` and
``target_len`` agree with the wav header and the transcript; keys are unique.  Prints counts per
split and writes ``summary.json`` (counts, hours, duration/word statistics, synthesis throughput).
Exit status 1 (with the first problems listed) if anything is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import soundfile as sf

SPLITS = ("asr_train", "asr_dev", "qa_train", "qa_dev", "qa_test")
REQUIRED = ("key", "source", "source_len", "target", "target_len")
QA_REQUIRED = ("question", "question_source", "question_source_len", "question_target",
               "question_target_len", "context_id")


def check_wav(path: str, expect_len: int | None, where: str, errors: list[str], sr: int = 16000) -> float:
    """Return duration in seconds (0 if broken); append problems to errors."""
    if not isinstance(path, str) or not os.path.isabs(path):
        errors.append(f"{where}: source is not an absolute path: {path!r}")
        return 0.0
    if not os.path.isfile(path):
        errors.append(f"{where}: wav missing: {path}")
        return 0.0
    try:
        info = sf.info(path)
    except Exception as e:  # noqa: BLE001 - any decoder error means unreadable
        errors.append(f"{where}: unreadable wav {path} ({e})")
        return 0.0
    if info.samplerate != sr or info.channels != 1:
        errors.append(f"{where}: {path} is {info.samplerate} Hz x {info.channels} ch, expected {sr} Hz mono")
    if info.frames <= 0 or os.path.getsize(path) < 44 + 2 * info.frames:
        errors.append(f"{where}: {path} is empty or truncated")
    n10 = int(info.frames * 100 / info.samplerate)
    if expect_len is not None and abs(int(expect_len) - n10) > 1:
        errors.append(f"{where}: source_len {expect_len} != {n10} frames of 10 ms in {path}")
    return info.frames / info.samplerate


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    return {"n": len(s), "min": round(s[0], 2), "mean": round(sum(s) / len(s), 2),
            "p50": round(s[len(s) // 2], 2), "p95": round(s[min(len(s) - 1, int(len(s) * 0.95))], 2),
            "max": round(s[-1], 2)}


def check_split(path: Path, errors: list[str]) -> dict:
    qa = path.stem.startswith("qa_")
    keys: set[str] = set()
    durs, qdurs, words = [], [], []
    truncated = 0
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            where = f"{path.name}:{ln}"
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: invalid JSON ({e.msg})")
                continue
            miss = [k for k in REQUIRED + (QA_REQUIRED if qa else ()) if k not in r]
            if miss:
                errors.append(f"{where}: missing field(s) {miss}")
                continue
            if r["key"] in keys:
                errors.append(f"{where}: duplicate key {r['key']}")
            keys.add(r["key"])
            if not r["target"].strip() or r["target_len"] != len(r["target"].split()):
                errors.append(f"{where}: empty target or target_len != #words")
            durs.append(check_wav(r["source"], r["source_len"], where, errors))
            words.append(len(r["target"].split()))
            if qa:
                if r["question_target_len"] != len(r["question_target"].split()) or not r["question"].strip():
                    errors.append(f"{where}: bad question fields")
                qdurs.append(check_wav(r["question_source"], r["question_source_len"], where + " (question)", errors))
                truncated += int(r.get("n_sentences", 0) < r.get("n_sentences_total", 0))
    out = {"utterances": len(keys), "hours": round(sum(durs) / 3600, 3), "duration_sec": _stats(durs),
           "words": _stats([float(w) for w in words])}
    if qa:
        out |= {"question_hours": round(sum(qdurs) / 3600, 3), "question_duration_sec": _stats(qdurs),
                "truncated_contexts": truncated}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", required=True, help="data/<profile>")
    ap.add_argument("--profile", default="")
    ap.add_argument("--out", default="", help="default: <data-dir>/summary.json")
    a = ap.parse_args(argv)
    d = Path(a.data_dir)
    errors: list[str] = []
    splits = {}
    for s in SPLITS:
        p = d / f"{s}.jsonl"
        if not p.is_file():
            errors.append(f"{p}: file not found")
            continue
        splits[s] = check_split(p, errors)
        extra = f", questions {splits[s]['question_hours']:.2f} h" if "question_hours" in splits[s] else ""
        print(f"{s:10s} {splits[s]['utterances']:6d} utterances {splits[s]['hours']:7.2f} h{extra}")
    clean = d / "qa_test_clean.json"
    n_clean = None
    if clean.is_file():
        try:
            n_clean = len(json.loads(clean.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            errors.append(f"{clean}: invalid JSON ({e.msg})")
        if n_clean is not None and "qa_test" in splits and n_clean != splits["qa_test"]["utterances"]:
            errors.append(f"{clean}: {n_clean} entries but qa_test.jsonl has {splits['qa_test']['utterances']}")
    else:
        errors.append(f"{clean}: file not found")
    summary = {"profile": a.profile, "data_dir": str(d.resolve()), "ok": not errors, "n_errors": len(errors),
               "errors": errors[:50], "splits": splits, "qa_test_clean": n_clean,
               "total_hours": round(sum(v["hours"] + v.get("question_hours", 0) for v in splits.values()), 3)}
    for name, key in (("synthesis", "synth_results.jsonl.stats.json"), ("text", "text/text_summary.json")):
        p = d / key
        if p.is_file():
            summary[name] = json.loads(p.read_text())
    out = Path(a.out) if a.out else d / "summary.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"total {summary['total_hours']:.2f} h of audio; summary -> {out}")
    if errors:
        print(f"check_data.py: {len(errors)} problem(s); first ones:", file=sys.stderr)
        for e in errors[:20]:
            print("  " + e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Text manifests + synthesis results -> FunASR-style JSONL (one JSON object per line).

Every line has ``key``, ``source`` (absolute wav path), ``source_len`` (number of 10 ms frames,
from the wav header via soundfile.info - no audio is decoded), ``target`` and ``target_len``
(number of words).  Written to ``--out-dir``:

* ``asr_train.jsonl`` / ``asr_dev.jsonl``: short utterances for ASR training.
* ``qa_train.jsonl`` / ``qa_dev.jsonl`` / ``qa_test.jsonl``: one line per context: the spoken
  context (source/target) plus ``question`` (clean text), ``question_source``,
  ``question_source_len``, ``question_target``, ``question_target_len``, ``context_id``,
  ``qid``, ``title``, ``answer``, ``context`` (clean text of the whole paragraph) and
  ``n_sentences`` / ``n_sentences_total`` / ``first_sentence`` (a train/dev context longer than
  ``max_sec`` is cut to a run of whole sentences that contains the answer sentence; test contexts
  are never cut).
* ``qa_test_clean.json``: list of {context_id, qid, title, context, question, answer} for the
  clean-text upper-bound evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_text import DataError, read_jsonl, write_jsonl  # noqa: E402
from synthesize import load_results  # noqa: E402

ASR_SPLITS = ("asr_train", "asr_dev")
QA_SPLITS = ("qa_train", "qa_dev", "qa_test")


def frames_10ms(wav: str) -> int:
    """FunASR's source_len: int(samples * 1000 / sample_rate / 10), from the header only."""
    info = sf.info(wav)
    return int(info.frames * 100 / info.samplerate)


def asr_line(item: dict, res: dict) -> dict:
    tgt = item["target"]
    return {"key": item["key"], "source": res["wav"], "source_len": frames_10ms(res["wav"]),
            "target": tgt, "target_len": len(tgt.split())}


def qa_line(item: dict, res: dict, qres: dict) -> dict:
    a, b = int(res["seg_start"]), int(res["seg_end"])
    tgt = " ".join(s["target"] for s in item["segments"][a:b])
    qt = item["question_target"]
    return {
        "key": item["key"], "source": res["wav"], "source_len": frames_10ms(res["wav"]),
        "target": tgt, "target_len": len(tgt.split()),
        "question": item["question"], "question_source": qres["wav"],
        "question_source_len": frames_10ms(qres["wav"]), "question_target": qt,
        "question_target_len": len(qt.split()),
        "context_id": item["context_id"], "qid": item["qid"], "title": item["title"],
        "answer": item["answer"], "context": item["context"],
        "n_sentences": b - a, "n_sentences_total": len(item["segments"]), "first_sentence": a,
        # the speaker and rate, so the evaluation can split seen from unseen voices
        "voice": item.get("voice"), "rate": item.get("rate"),
        "question_voice": item.get("question_voice"), "question_rate": item.get("question_rate"),
    }


def build(text_dir: Path, results_path: Path, out_dir: Path, allow_missing: bool = False) -> dict:
    results = load_results(results_path)
    if not results:
        raise FileNotFoundError(f"{results_path}: no synthesis results (run synthesize.py first)")
    counts: dict[str, int] = {}
    missing: list[str] = []
    for split in ASR_SPLITS + QA_SPLITS:
        path = text_dir / f"{split}.jsonl"
        if not path.is_file():
            continue
        items = read_jsonl(path, ("key", "wav"))
        rows, kept = [], []
        for it in items:
            res = results.get(it["key"])
            qres = results.get(it.get("question_key", "")) if split in QA_SPLITS else res
            if res is None or qres is None:
                missing.append(it["key"] if res is None else it["question_key"])
                continue
            if res["wav"] != it["wav"]:
                raise DataError(f"{results_path}: wav for {it['key']} is {res['wav']}, manifest says {it['wav']}")
            rows.append(asr_line(it, res) if split in ASR_SPLITS else qa_line(it, res, qres))
            kept.append(it)
        write_jsonl(out_dir / f"{split}.jsonl", rows)
        counts[split] = len(rows)
        if split == "qa_test":
            clean = [{k: it[k] for k in ("context_id", "qid", "title", "context", "question", "answer")}
                     for it in kept]
            tmp = out_dir / "qa_test_clean.json.tmp"
            tmp.write_text(json.dumps(clean, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            tmp.replace(out_dir / "qa_test_clean.json")
    if missing and not allow_missing:
        raise DataError(f"{len(missing)} utterance(s) have no synthesised wav (first: {missing[:5]}); "
                        f"re-run synthesize.py or pass --allow-missing")
    return {"counts": counts, "missing": len(missing)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text-dir", required=True, help="data/<profile>/text from prepare_text.py")
    ap.add_argument("--results", required=True, help="results log from synthesize.py")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--allow-missing", action="store_true", help="drop utterances without wav instead of failing")
    a = ap.parse_args(argv)
    try:
        info = build(Path(a.text_dir), Path(a.results), Path(a.out_dir), a.allow_missing)
    except (DataError, FileNotFoundError, KeyError) as e:
        print(f"make_jsonl.py: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())

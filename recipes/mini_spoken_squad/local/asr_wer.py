"""WER of a model directory's speech branch on a FunASR jsonl (source/target), as JSON.

    python local/asr_wer.py --model exp/quick/asr/model --jsonl data/quick/asr_dev.jsonl [--limit 100]
"""
from __future__ import annotations

import argparse
import json
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--jsonl", required=True)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--show", type=int, default=3, help="print this many reference/hypothesis pairs to stderr")
    args = ap.parse_args()
    from funasr_clsr.bin.evaluate import load_model, transcribe
    from funasr_clsr.evaluation import word_error_rate

    rows = [json.loads(line) for line in open(args.jsonl, encoding="utf-8") if line.strip()]
    rows = rows[: args.limit] if args.limit else rows
    hyps = transcribe(None, args.model, [r["source"] for r in rows], batch_size=8)
    for r, h in list(zip(rows, hyps))[: args.show]:
        print(f"REF {r['target']}\nHYP {h}", file=sys.stderr)
    print(json.dumps({"model": args.model, "jsonl": args.jsonl, "n": len(rows),
                      **word_error_rate([r["target"] for r in rows], hyps)}))


if __name__ == "__main__":
    main()

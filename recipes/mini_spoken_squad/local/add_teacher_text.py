"""Give each line of a FunASR QA jsonl a ``teacher_text``: an ASR transcript of its context.

    python local/add_teacher_text.py --jsonl data/full/qa_train.jsonl \
        --transcripts exp/full/whisper_qa_train_hyp.jsonl --out exp/full/speechdpr/qa_train.jsonl

The SpeechDPR-style baseline (ParaBGE with ``distill_weight``) learns to put each spoken context
where the text encoder puts its teacher transcript; the recipe's teacher is the Whisper-base
cascade (``local/whisper_transcripts.py``), so the student is distilled from that cascade.
Every line must have a transcript: a missing one stops here with the key, not mid-training.
Written to a temporary file and renamed, so an interrupted run leaves no half-written list.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsonl", required=True, help="FunASR QA jsonl (key, source, ...)")
    ap.add_argument("--transcripts", required=True, help="jsonl {key, text} (local/whisper_transcripts.py)")
    ap.add_argument("--out", required=True, help="the QA jsonl with teacher_text added")
    args = ap.parse_args(argv)
    with open(args.transcripts, encoding="utf-8") as fin:
        hyp = {r["key"]: r["text"] for r in map(json.loads, filter(str.strip, fin))}
    lines, missing = [], []
    with open(args.jsonl, encoding="utf-8") as fin:
        for line in filter(str.strip, fin):
            item = json.loads(line)
            if item["key"] not in hyp:
                missing.append(item["key"])
                continue
            item["teacher_text"] = hyp[item["key"]]
            lines.append(json.dumps(item, ensure_ascii=False) + "\n")
    if missing:
        print(f"add_teacher_text: {len(missing)} of {len(lines) + len(missing)} lines of {args.jsonl} have no "
              f"transcript in {args.transcripts}, e.g. {missing[0]}", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".partial"
    with open(tmp, "w", encoding="utf-8") as fout:
        fout.writelines(lines)
    os.replace(tmp, args.out)
    print(json.dumps({"out": args.out, "lines": len(lines)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whisper-base transcripts of a jsonl's audio, in the recipe's spoken-word form, resumable.

    python local/whisper_transcripts.py --jsonl data/full/qa_test.jsonl --out exp/full/whisper_test_hyp.jsonl

Whisper writes numbers and abbreviations the written way ("2015", "U.S."), while the
recipe's references are what espeak-ng says ("twenty fifteen", "u s").  Each transcript is
therefore passed through the same normaliser that made the references (local/textnorm.py),
so WER counts recognition errors, not spelling conventions; the raw text is kept as "raw".
Lines are appended per group of files, so an interrupted run continues where it stopped
(Whisper on 14 h of audio takes tens of minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from textnorm import normalize  # noqa: E402


def finished_lines(path: Path) -> list[str]:
    """The complete records of an earlier run (a line cut by an interruption is dropped)."""
    if not path.is_file():
        return []
    good = []
    for line in open(path, encoding="utf-8"):
        try:
            if "key" in json.loads(line):
                good.append(line if line.endswith("\n") else line + "\n")
        except json.JSONDecodeError:
            pass
    return good


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsonl", required=True, help="FunASR jsonl with key and source (wav path)")
    ap.add_argument("--out", required=True, help="jsonl {key, text, raw}, appended to")
    ap.add_argument("--group", type=int, default=16, help="files per transcription call (and per append)")
    args = ap.parse_args()
    from tqdm import tqdm

    from funasr_clsr.baselines.cascade import WhisperTranscriber

    pairs = [json.loads(line) for line in open(args.jsonl, encoding="utf-8") if line.strip()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    good = finished_lines(out)
    if out.is_file():
        out.write_text("".join(good), encoding="utf-8")
    have = {json.loads(line)["key"] for line in good}
    todo = [p for p in pairs if p["key"] not in have]
    if not todo:
        print(json.dumps({"out": str(out), "transcripts": len(have), "new": 0}))
        return
    asr = WhisperTranscriber(progress=False)
    with open(out, "a", encoding="utf-8") as fout, tqdm(total=len(pairs), initial=len(pairs) - len(todo),
                                                         desc="whisper", unit="utt", file=sys.stderr) as bar:
        for start in range(0, len(todo), args.group):
            group = todo[start:start + args.group]
            texts = asr.transcribe([p["source"] for p in group], skip_errors=True)
            for p, raw in zip(group, texts):
                fout.write(json.dumps({"key": p["key"], "text": normalize(raw).target, "raw": raw}) + "\n")
            fout.flush()
            os.fsync(fout.fileno())
            bar.update(len(group))
    print(json.dumps({"out": str(out), "transcripts": len(have) + len(todo), "new": len(todo)}))


if __name__ == "__main__":
    main()

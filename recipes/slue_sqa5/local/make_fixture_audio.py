#!/usr/bin/env python3
"""Lay out a tiny SLUE-SQA-5 tree for smoke tests: fixture tsv files + placeholder wavs.

Writes ``--out/slue-sqa5/slue-sqa5_<split>.tsv`` and, per row, ``<split>/question/<qid>.wav``
and ``<split>/document/<did>.wav`` (16 kHz tones, no speech). ``--corrupt ID`` writes garbage
for that question or document id, ``--omit ID`` leaves it out.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "slue-sqa5"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--corrupt", action="append", default=[])
    ap.add_argument("--omit", action="append", default=[])
    args = ap.parse_args(argv)
    root = Path(args.out) / "slue-sqa5"
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for tsv in sorted(FIXTURES.glob("slue-sqa5_*.tsv")):
        shutil.copyfile(tsv, root / tsv.name)
        split = tsv.stem[len("slue-sqa5_"):]
        with open(tsv, encoding="utf-8", newline="") as fin:
            rows = list(csv.DictReader(fin, delimiter="\t"))
        for i, row in enumerate(rows):
            for kind, ident in (("question", row["question_id"]), ("document", row["document_id"])):
                path = root / split / kind / f"{ident}.wav"
                if ident in args.omit or path.exists():
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                if ident in args.corrupt:
                    path.write_bytes(b"RIFF....WAVEbroken")
                else:
                    t = np.arange(int(0.25 * 16000)) / 16000
                    sf.write(path, (0.2 * np.sin(2 * np.pi * (220 + 25 * i) * t)).astype(np.float32), 16000)
                n += 1
    print(f"{n} placeholder recordings under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

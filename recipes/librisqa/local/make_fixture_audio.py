#!/usr/bin/env python3
"""Lay out a tiny LibriSQA + LibriSpeech tree for smoke tests (placeholder tones, no speech).

Copies ``local/fixtures/LibriSQA-PartI`` to ``--out`` and writes, for every utterance the
fixture json names, ``LibriSpeech/<subset>/<spk>/<chapter>/<id>.flac`` (16 kHz FLAC, as in
LibriSpeech) and the chapter's ``.trans.txt``. ``--corrupt ID`` writes garbage instead of a
FLAC file, ``--omit ID`` leaves the file out.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "LibriSQA-PartI"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--corrupt", action="append", default=[])
    ap.add_argument("--omit", action="append", default=[])
    args = ap.parse_args(argv)
    out = Path(args.out)
    shutil.copytree(FIXTURES, out / "LibriSQA-PartI", dirs_exist_ok=True)
    chapters: dict[Path, dict[str, str]] = defaultdict(dict)
    for path in sorted(FIXTURES.glob("*.json")):
        for rec in json.loads(path.read_text(encoding="utf-8")):
            m = re.search(r"(train-clean-\d+|test-clean|dev-clean)[\\/](\d+)[\\/](\d+)[\\/]([\d-]+)\.flac",
                          rec["speech_path"])
            subset, spk, chap, utt = m.groups()
            chapters[out / "LibriSpeech" / subset / spk / chap][utt] = rec["text"]
    n = 0
    for chap_dir, utts in chapters.items():
        chap_dir.mkdir(parents=True, exist_ok=True)
        for i, utt in enumerate(sorted(utts)):
            if utt in args.omit:
                continue
            path = chap_dir / f"{utt}.flac"
            if utt in args.corrupt:
                path.write_bytes(b"fLaC-not-really")
            else:
                t = np.arange(int(0.3 * 16000)) / 16000
                sf.write(path, (0.2 * np.sin(2 * np.pi * (250 + 30 * i) * t)).astype(np.float32), 16000,
                         format="FLAC")
            n += 1
        spk, chap = chap_dir.parent.name, chap_dir.name
        (chap_dir / f"{spk}-{chap}.trans.txt").write_text("".join(f"{u} {t}\n" for u, t in sorted(utts.items())))
    print(f"{n} placeholder utterances under {out / 'LibriSpeech'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Lay out a tiny DRCD + ODSQA tree for smoke tests: fixture json + placeholder ODSQA audio.

Copies ``local/fixtures/*.json`` to ``--out`` and writes ODSQA-style recordings under
``--out/odsqa_audio/audio_data/``: one tone per sentence of each ODSQA paragraph's DRCD text,
named ``<paragraph id>_<sentence>.wav``, and one per question, ``<question id>.wav``. That
naming is this recipe's default template, an ASSUMPTION (ODSQA does not document its archive
layout). The DRCD training speech is made in stage 0 by the TTS command (``local/tone_tts.py``
stands in for a TTS in tests). ``--corrupt NAME`` / ``--omit NAME`` break or drop one file.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SENT_END = re.compile(r"[。！？!?]+[」』”’）)\"']*")


def n_sentences(text: str) -> int:
    cuts = [m.end() for m in SENT_END.finditer(text) if m.end() < len(text.rstrip())]
    return len(cuts) + 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--corrupt", action="append", default=[])
    ap.add_argument("--omit", action="append", default=[])
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in FIXTURES.glob("*.json"):
        shutil.copyfile(path, out / path.name)
    dev = json.loads((FIXTURES / "DRCD_dev.json").read_text(encoding="utf-8"))
    odsqa = json.loads((FIXTURES / "ODSQA_spokenq_test-v1.1.json").read_text(encoding="utf-8"))
    text = {p["id"]: p["context"] for a in dev["data"] for p in a["paragraphs"]}
    audio = out / "odsqa_audio" / "audio_data"
    audio.mkdir(parents=True, exist_ok=True)
    names = []
    for art in odsqa["data"]:
        for par in art["paragraphs"]:
            names += [f"{par['id']}_{k}" for k in range(n_sentences(text[par["id"]]))]
            names += [qa["id"] for qa in par["qas"]]
    t = np.arange(int(0.2 * 16000)) / 16000
    for i, name in enumerate(names):
        if name in args.omit:
            continue
        path = audio / f"{name}.wav"
        if name in args.corrupt:
            path.write_bytes(b"\x00" * 64)
        else:
            sf.write(path, (0.2 * np.sin(2 * np.pi * (240 + 11 * i) * t)).astype(np.float32), 16000)
    print(f"{len(names)} placeholder ODSQA recordings under {audio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

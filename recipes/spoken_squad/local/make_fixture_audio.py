#!/usr/bin/env python3
"""Lay out a tiny Spoken-SQuAD tree for smoke tests: fixture json + placeholder sentence wavs.

Copies the committed json cuts (``local/fixtures``: real Spoken-SQuAD / SQuAD paragraphs) into
``--out`` and writes one short tone per sentence recording, named as the real audio is
(``Spoken-SQuAD_audio/{train,dev}_wav/<article>_<paragraph>_<sentence>.wav``, 24 kHz like the
Google-TTS originals). The tones carry no speech: they exercise the data preparation only.

``--corrupt NAME`` writes garbage bytes instead of a wav, ``--omit NAME`` leaves a file out
(NAME like ``0_3_1``), to test that broken audio is listed, skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPLITS = {"spoken_train-v1.1.json": ("train-v1.1.json", "train_wav"),
          "spoken_test-v1.1.json": ("dev-v1.1.json", "dev_wav")}


def tone(seconds: float, freq: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--corrupt", action="append", default=[])
    ap.add_argument("--omit", action="append", default=[])
    ap.add_argument("--sample-rate", type=int, default=24000)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for spoken_name, (squad_name, wav_sub) in SPLITS.items():
        for name in (spoken_name, squad_name):
            shutil.copyfile(FIXTURES / name, out / name)
        spoken = json.loads((FIXTURES / spoken_name).read_text(encoding="utf-8"))
        wav_dir = out / "Spoken-SQuAD_audio" / wav_sub
        wav_dir.mkdir(parents=True, exist_ok=True)
        for a, art in enumerate(spoken["data"]):
            for p, par in enumerate(art["paragraphs"]):
                n_sent = len([s for s in par["context"].strip().split(". ") if s.strip()])
                for s in range(n_sent):
                    stem = f"{a}_{p}_{s}"
                    if stem in args.omit:
                        continue
                    path = wav_dir / f"{stem}.wav"
                    if stem in args.corrupt:
                        path.write_bytes(b"RIFF\x00\x00not a wave file at all")
                    else:
                        sf.write(path, tone(0.15 + 0.01 * s, 300 + 40 * p + 10 * s, args.sample_rate),
                                 args.sample_rate)
                    n += 1
    print(f"{n} placeholder recordings under {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

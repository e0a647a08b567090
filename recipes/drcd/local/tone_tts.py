#!/usr/bin/env python3
"""Placeholder "TTS" for smoke tests: writes a 16 kHz tone sequence, one tone per character.

Usage as a TTS command: ``--tts_cmd "python local/tone_tts.py {text_file} {wav}"``. It carries
no speech; it only lets the data preparation and the pipeline run without a real TTS.
"""

import sys

import numpy as np
import soundfile as sf


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: tone_tts.py TEXT_FILE WAV", file=sys.stderr)
        return 2
    text = open(sys.argv[1], encoding="utf-8").read().strip()
    if not text:
        print("empty text", file=sys.stderr)
        return 1
    sr, n = 16000, 800
    t = np.arange(n) / sr
    tones = [0.2 * np.sin(2 * np.pi * (200 + 7 * (ord(ch) % 97)) * t) for ch in text[:400]]
    sf.write(sys.argv[2], np.concatenate(tones).astype(np.float32), sr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

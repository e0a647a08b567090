"""``python -m funasr_clsr.bin.export --exp DIR --out DIR [--checkpoint best] [--cmvn am.mvn]``.

The same as ``funasr-clsr export``: builds the model of a FunASR training output dir
(config.yaml), loads a checkpoint (default: the newest model.pt.avgN, else model.pt.best, else
model.pt) and writes a self-contained model directory that ``AutoModel(model=DIR)`` loads.
"""
from __future__ import annotations

import sys

from funasr_clsr.bin.cli import main as _cli_main


def main(argv: list[str] | None = None) -> int:
    return _cli_main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

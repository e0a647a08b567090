"""``python -m funasr_clsr.bin.train`` = FunASR's trainer with the plugin registered.

Same CLI as ``python -m funasr.bin.train`` (Hydra: ``--config-path DIR --config-name
X.yaml ++key=value``); a relative --config-path is taken from the current directory,
and without a GPU ``++device=cpu`` is added. Rerunning into the same ``output_dir``
resumes from its ``model.pt`` (FunASR's ``train_conf.resume``, on by default).
"""
from __future__ import annotations

import os
import sys


def _normalise_argv(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config-path" and i + 1 < len(out):
            out[i + 1] = os.path.abspath(out[i + 1])
        elif arg.startswith("--config-path="):
            out[i] = "--config-path=" + os.path.abspath(arg.split("=", 1)[1])
    if not any(a.lstrip("+").startswith("device=") for a in out):
        import torch

        if not torch.cuda.is_available():
            out.append("++device=cpu")
    return out


def main() -> None:
    import funasr_clsr  # noqa: F401  (registers CLSR and its data classes)
    from funasr.bin.train import main_hydra

    sys.argv = [sys.argv[0]] + _normalise_argv(sys.argv[1:])
    main_hydra()


if __name__ == "__main__":
    main()

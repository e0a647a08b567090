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
    _forget_init_param(sys.argv[1:])


def _forget_init_param(argv: list[str]) -> None:
    """Keep ``AutoModel(model=output_dir)`` on the trained weights.

    FunASR's loader prefers a config.yaml ``init_param`` that exists over the
    directory's own model.pt, so a run initialised from another checkpoint would
    reload that checkpoint. The path is kept as ``initialized_from``.
    """
    import yaml

    out = next((a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("output_dir=")), None)
    cfg_path = os.path.join(out, "config.yaml") if out else None
    if not cfg_path or not os.path.isfile(cfg_path):
        return
    with open(cfg_path, encoding="utf-8") as fin:
        cfg = yaml.safe_load(fin)
    if cfg.get("init_param"):
        cfg["initialized_from"] = cfg.pop("init_param")
        tmp = cfg_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fout:
            yaml.safe_dump(cfg, fout, sort_keys=False, allow_unicode=True)
        os.replace(tmp, cfg_path)


if __name__ == "__main__":
    main()

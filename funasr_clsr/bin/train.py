"""``python -m funasr_clsr.bin.train`` = FunASR's trainer with the plugin registered.

Same CLI as ``python -m funasr.bin.train`` (Hydra: ``--config-path DIR --config-name
X.yaml ++key=value``); a relative --config-path is taken from the current directory,
and without a GPU ``++device=cpu`` is added. Rerunning into the same ``output_dir``
resumes from its ``model.pt`` (FunASR's ``train_conf.resume``, on by default).

Killed runs resume: FunASR's trainer writes ``model.pt`` in place, so a kill during a save used to
leave a torn file that the rerun could not load. Here every ``torch.save`` to a path goes through a
temporary file renamed into place, and a ``model.pt`` that is not a complete checkpoint (from an
older run) is replaced by the newest complete ``model.pt.ep*`` before training starts.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path


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
    out = _output_dir(sys.argv[1:])
    if out:
        repair_resume_checkpoint(out)
    with atomic_torch_save():
        main_hydra()
    _forget_init_param(sys.argv[1:])


def _output_dir(argv: list[str]) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("output_dir=")), None)


@contextlib.contextmanager
def atomic_torch_save():
    """``torch.save(obj, path)`` writes ``path.tmp`` and renames it: a kill never leaves half a file."""
    import torch

    plain_save = torch.save

    def save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return plain_save(obj, f, *args, **kwargs)
        tmp = f"{os.fspath(f)}.tmp{os.getpid()}"
        try:
            plain_save(obj, tmp, *args, **kwargs)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, f)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    torch.save = save
    try:
        yield
    finally:
        torch.save = plain_save


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is a whole torch zip checkpoint (a torn write has no central directory)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def repair_resume_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """Make ``output_dir/model.pt`` loadable for resuming; returns what was done (None: nothing needed).

    A torn or missing ``model.pt`` is replaced by the newest complete ``model.pt.ep*`` (training
    resumes from there); a torn one with no complete epoch is moved aside and training starts from
    its initialisation.
    """
    out = Path(output_dir)
    latest = out / "model.pt"
    if latest.exists() and is_complete_checkpoint(latest):
        return None
    candidates = sorted((p for p in out.glob("model.pt.ep*") if ".tmp" not in p.name),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    good = next((p for p in candidates if is_complete_checkpoint(p)), None)
    if not latest.exists():
        if good is None:
            return None  # a fresh run
        # killed between FunASR's two saves (model.pt.epN, then model.pt)
        state = "missing"
    else:
        state = "incomplete (an interrupted save)"
    if good is None:
        aside = latest.with_name(f"model.pt.corrupt.{int(time.time())}")
        os.replace(latest, aside)
        msg = f"{latest} is incomplete (an interrupted save) and no complete model.pt.ep* exists: moved to {aside.name}; training starts from its initialisation"
    else:
        tmp = latest.with_name("model.pt.repair.tmp")
        shutil.copyfile(good, tmp)
        os.replace(tmp, latest)
        msg = f"{latest} was {state}: resuming from {good.name}"
    logging.warning(msg)
    print(f"funasr_clsr.bin.train: {msg}", file=sys.stderr)
    return msg


def _forget_init_param(argv: list[str]) -> None:
    """Keep ``AutoModel(model=output_dir)`` on the trained weights.

    FunASR's loader prefers a config.yaml ``init_param`` that exists over the
    directory's own model.pt, so a run initialised from another checkpoint would
    reload that checkpoint. The path is kept as ``initialized_from``.
    """
    import yaml

    out = _output_dir(argv)
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

"""Pack the *trained* parts of a CLSR speech branch as a small release checkpoint.

    python -m funasr_clsr.bin.pack_trained --exp exp/quick_release/asr --checkpoint auto \
        --out recipes/mini_spoken_squad/release/whisper_base_cif --note "how it was made"

Frozen parts are left out: the Whisper encoder's frozen blocks (they come from the Whisper
weights the config names) and the text encoder (from its own folder). What remains, in fp16
(``--dtype float32`` to keep full precision), initialises a training run through FunASR's
``++init_param=OUT/model.pt``; ``tokens.txt`` is the vocabulary it was trained on and must be used
with it. ``MANIFEST.json`` records the sha256 of every file, the source checkpoint, the git
commit and the note; :func:`verify_release` checks a release against it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from funasr_clsr.data_prep.download import file_digest

RELEASE_FILES = ("model.pt", "tokens.txt", "config.yaml")


def frozen_prefixes(config: dict) -> list[str]:
    """State-dict prefixes that a release leaves out for this training config."""
    prefixes = ["text_encoder."]
    enc = config.get("encoder_conf") or {}
    if config.get("encoder") == "WhisperAudioEncoder" and enc.get("freeze", True):
        from funasr_clsr.models.whisper_encoder import _whisper_config, frozen_module_names

        n_top = int(enc.get("trainable_top_blocks", 0) or 0)
        try:
            n_layers = _whisper_config(enc.get("whisper_path"), enc.get("whisper_config")).encoder_layers
        except (ValueError, OSError) as exc:
            raise ValueError(f"cannot tell which Whisper blocks are frozen: {exc}") from None
        prefixes += [f"encoder.whisper.{name}." for name in frozen_module_names(n_layers, n_top)]
    return prefixes


def pack(exp: str, out: str, checkpoint: str = "auto", dtype: str = "float16", note: str = "") -> dict:
    import torch
    import yaml

    from funasr_clsr.bin.cli import CLIError, _find_checkpoint, _load_state

    exp_dir, out_dir = Path(exp), Path(out)
    if not (exp_dir / "config.yaml").is_file():
        raise CLIError(f"{exp_dir}: no config.yaml (not a training output dir)")
    from funasr_clsr.export import model_config, read_training_config
    from funasr_clsr.tokenizer import WordPieceTokenizer

    cfg = read_training_config(exp_dir / "config.yaml")
    ckpt = _find_checkpoint(exp_dir, checkpoint)
    state = _load_state(ckpt)
    drop = tuple(frozen_prefixes(cfg))
    kept = {k: (v.to(getattr(torch, dtype)) if v.is_floating_point() else v)
            for k, v in state.items() if not k.startswith(drop)}
    if not kept:
        raise CLIError(f"{ckpt}: nothing trained left after dropping {drop}")
    tok_conf = cfg.get("tokenizer_conf") or {}
    try:
        tokenizer = WordPieceTokenizer(tok_conf.get("token_list"), tok_conf.get("do_lower_case"))
    except (OSError, ValueError) as exc:
        raise CLIError(f"{exp_dir}/config.yaml: its token list cannot be read ({exc})") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": kept}, out_dir / "model.pt")
    (out_dir / "tokens.txt").write_text("\n".join(tokenizer.token_list) + "\n", encoding="utf-8")
    model_cfg = model_config(cfg, tokenizer.do_lower_case)
    model_cfg.pop("funasr_clsr_version", None)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(model_cfg, sort_keys=False))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    manifest = {"source_checkpoint": str(ckpt), "git_commit": commit, "dtype": dtype, "note": note,
                "left_out": list(drop), "tensors": len(kept),
                "parameters": int(sum(v.numel() for v in kept.values())),
                "sha256": {name: file_digest(out_dir / name) for name in RELEASE_FILES}}
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify_release(release_dir: str | Path) -> Path:
    """The release's model.pt after checking every file against MANIFEST.json (one-line error if not)."""
    d = Path(release_dir)
    manifest_path = d / "MANIFEST.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{d}: no MANIFEST.json (not a release made by funasr_clsr.bin.pack_trained)")
    manifest = json.loads(manifest_path.read_text())
    for name, digest in manifest["sha256"].items():
        p = d / name
        if not p.is_file():
            raise FileNotFoundError(f"{d}: {name} is missing")
        if file_digest(p) != digest:
            raise ValueError(f"{p}: sha256 does not match MANIFEST.json (a damaged or edited release)")
    return d / "model.pt"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exp", help="training output dir")
    ap.add_argument("--out", help="release dir")
    ap.add_argument("--checkpoint", default="auto", help="auto, best, last, avgN, epN or a file")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--note", default="", help="how the checkpoint was made (kept in MANIFEST.json)")
    ap.add_argument("--verify", metavar="DIR", help="only check a release against its MANIFEST.json")
    a = ap.parse_args(argv)
    from funasr_clsr.bin.cli import CLIError

    try:
        if a.verify:
            print(verify_release(a.verify))
            return 0
        if not a.exp or not a.out:
            ap.error("--exp and --out are required (or --verify DIR)")
        print(json.dumps(pack(a.exp, a.out, a.checkpoint, a.dtype, a.note), indent=2))
    except (CLIError, FileNotFoundError, ValueError) as exc:
        print(f"pack_trained: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

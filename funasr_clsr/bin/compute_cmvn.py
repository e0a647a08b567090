"""Global CMVN of the LFR fbank features over a jsonl's audio, written as FunASR's am.mvn.

    python -m funasr_clsr.bin.compute_cmvn --jsonl train.jsonl --out am.mvn [--max-utts 2000]
"""
from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

import numpy as np


def write_am_mvn(path: Path, mean: np.ndarray, std: np.ndarray) -> None:
    """Kaldi nnet1 text format that funasr.frontends.wav_frontend.load_cmvn reads."""
    dim = mean.shape[0]
    fmt = lambda v: " ".join(f"{x:.8g}" for x in v)  # noqa: E731
    text = (f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(-mean)} ]\n"
            f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(1.0 / std)} ]\n</Nnet>\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def compute_stats(wav_paths, frontend_conf: dict) -> tuple[np.ndarray, np.ndarray, int]:
    import torch
    from tqdm import tqdm

    from funasr_clsr.audio import AudioError, load_audio
    from funasr_clsr.frontend import WavFrontendVectorized

    conf = {k: v for k, v in frontend_conf.items() if k != "cmvn_file"}
    conf["dither"] = 0.0
    frontend = WavFrontendVectorized(**conf)
    total = total_sq = None
    frames = skipped = 0
    for path in tqdm(wav_paths, desc="cmvn", unit="utt"):
        try:
            wav = load_audio(path, target_sr=frontend.fs)
        except (AudioError, FileNotFoundError) as exc:
            logging.warning("cmvn: skipping %s", exc)
            skipped += 1
            continue
        feats, _ = frontend(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
        f = feats[0].double().numpy()
        total = f.sum(0) if total is None else total + f.sum(0)
        total_sq = (f ** 2).sum(0) if total_sq is None else total_sq + (f ** 2).sum(0)
        frames += f.shape[0]
    if frames == 0:
        raise SystemExit("cmvn: no readable audio")
    mean = total / frames
    std = np.sqrt(np.maximum(total_sq / frames - mean ** 2, 1e-10))
    if skipped:
        logging.warning("cmvn: %d unreadable files skipped", skipped)
    return mean, std, frames


DEFAULT_FRONTEND = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
                    "lfr_m": 7, "lfr_n": 6}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsonl", required=True, nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-utts", type=int, default=2000, help="random sample of utterances to use")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = []
    for jsonl in args.jsonl:
        with open(jsonl, encoding="utf-8") as fin:
            paths.extend(json.loads(line)["source"] for line in fin if line.strip())
    if not paths:
        raise SystemExit(f"cmvn: no utterances in {args.jsonl}")
    random.Random(args.seed).shuffle(paths)
    mean, std, frames = compute_stats(paths[: args.max_utts], DEFAULT_FRONTEND)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_am_mvn(out, mean, std)
    print(json.dumps({"frames": frames, "utterances": min(len(paths), args.max_utts), "out": str(out)}))


if __name__ == "__main__":
    main()

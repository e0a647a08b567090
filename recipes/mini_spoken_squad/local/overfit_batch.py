"""Can the speech branch fit one batch? A plumbing check for a config that does not learn.

    python local/overfit_batch.py --tokens exp/quick/lang/tokens.txt --jsonl data/quick/asr_dev.jsonl \
        [--config ../../conf/clsr_whisper_base_mini_en.yaml] [--utts 8] [--steps 150]

Builds the ASR-only speech branch from the config (Whisper weights from downloads/whisper-base,
the encoder cache from $FUNASR_CLSR_ENCODER_CACHE), takes the first --utts utterances as one batch
and trains on it, printing token accuracy and losses every 15 steps. A branch that cannot fit one
batch has a bug; one that fits it but not the data has a learning problem.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(HERE.parents[1] / "conf" / "clsr_whisper_base_mini_en.yaml"))
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--jsonl", required=True)
    ap.add_argument("--whisper", default=str(HERE / "downloads" / "whisper-base"))
    ap.add_argument("--utts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    import torch
    from omegaconf import OmegaConf

    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    from funasr_clsr.datasets.qa_dataset import AudioQADataset

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = OmegaConf.to_container(OmegaConf.load(a.config))
    if cfg.get("encoder") == "WhisperAudioEncoder":
        cfg["encoder_conf"]["whisper_path"] = a.whisper
    cfg["model_conf"].update(text_encoder_conf=None, nce_weight=0)
    cfg["tokenizer_conf"]["token_list"] = a.tokens
    am = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR")
    m = am.model
    ds = AudioQADataset(a.jsonl, index_ds="IndexDSJsonlQA", frontend=am.kwargs["frontend"], tokenizer=am.kwargs["tokenizer"])
    batch = ds.collator([ds[i] for i in range(a.utts)])
    batch = {k: v for k, v in batch.items() if k in ("speech", "speech_lengths", "text", "text_lengths")}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=a.lr)
    m.train()
    for step in range(a.steps):
        loss, stats, _ = m(**batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 15 == 0 or step == a.steps - 1:
            print(step, {k: round(float(v), 3) for k, v in stats.items()
                         if k in ("acc", "loss_att", "loss_ctc", "loss_pre", "loss_cif_align")}, flush=True)


if __name__ == "__main__":
    main()

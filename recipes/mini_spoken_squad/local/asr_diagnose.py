"""Where a speech branch's recognition stands: CTC head vs CIF decoder, and what the CIF costs.

    python local/asr_diagnose.py --exp exp/full/asr --jsonl data/full/asr_dev.jsonl [--checkpoint model.pt]

Prints one JSON object with, on the first ``--limit`` utterances:
- ``ctc_wer``: greedy CTC transcripts (the auxiliary head);
- ``decoder_wer``: what inference uses (CIF with its own token count -> decoder, first pass);
- ``decoder_acc_true_length``: decoder token accuracy with the CIF weights scaled to the true
  length (as in training);
- ``decoder_acc_ctc_alignment``: the same decoder fed CIF embeddings built from the CTC head's
  Viterbi alignment of the reference (an oracle for *where* tokens are);
- ``alpha_l1_per_token``: distance of the predictor's weights from that alignment.
If the decoder is poor even with the oracle alignment, the decoder, not the predictor, is what
has not learnt (this is how the sampler problem in README.md was found).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp", required=True, help="training output directory (config.yaml + checkpoint)")
    ap.add_argument("--checkpoint", default="model.pt")
    ap.add_argument("--jsonl", required=True, help="FunASR jsonl (source, target)")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--show", type=int, default=2, help="reference/CTC/decoder lines to print to stderr")
    args = ap.parse_args()

    import torch
    from omegaconf import OmegaConf

    import funasr_clsr  # noqa: F401
    from funasr import AutoModel
    from funasr.models.paraformer.cif_predictor import cif_v1
    from funasr.models.transformer.utils.nets_utils import make_pad_mask
    from funasr.register import tables

    from funasr_clsr.evaluation import word_error_rate
    from funasr_clsr.models.clsr.alignment import cif_alpha_targets, ctc_greedy_ids, ctc_token_frames

    exp = Path(args.exp)
    ckpt = exp / args.checkpoint
    if not ckpt.is_file():
        raise SystemExit(f"{ckpt}: checkpoint not found")
    cfg = OmegaConf.to_container(OmegaConf.load(exp / "config.yaml"))
    for key in ("device", "init_param", "output_dir", "ncpu", "train_data_set_list", "valid_data_set_list"):
        cfg.pop(key, None)
    threads = torch.get_num_threads()
    am = AutoModel(**cfg, init_param=str(ckpt), device="cpu", disable_update=True, log_level="ERROR", ncpu=threads)
    model = am.model.eval()
    if model.ctc_weight <= 0:
        raise SystemExit(f"{exp}: this model has no CTC head (ctc_weight 0); nothing to compare against")
    tok = am.kwargs["tokenizer"]
    ds = tables.dataset_classes[cfg["dataset"]](args.jsonl, frontend=am.kwargs["frontend"], tokenizer=tok,
                                                **cfg["dataset_conf"])
    items = [ds[i] for i in range(min(args.limit, len(ds)))]
    batch = ds.collator(items)
    flat = lambda x: x[:, 0] if x.dim() > 1 else x  # noqa: E731  (the collator keeps a trailing dim)
    speech_lens, text, text_lens = flat(batch["speech_lengths"]), batch["text"], flat(batch["text_lengths"])

    with torch.no_grad():
        enc, lens = model.encode(batch["speech"], speech_lens)
        log_probs = model.ctc.log_softmax(enc)
        mask = (~make_pad_mask(lens, maxlen=enc.size(1))[:, None, :])
        acoustic, token_num, _, _ = model.predictor(enc, None, mask, ignore_id=model.ignore_id)
        n_pred = token_num.round().long().clamp(min=1)
        # _decode_pass: the decoder as inference runs it (with model_conf.ctc_readout's CTC term)
        free_logits = model._decode_pass(enc, lens, acoustic[:, : int(n_pred.max())], n_pred)[0]
        frames = ctc_token_frames(log_probs, lens, text, text_lens, blank=model.blank_id)
        oracle = cif_alpha_targets(frames, lens, enc.size(1))
        oracle_embeds, _ = cif_v1(enc, oracle, 1.0)
        oracle_logits = model._decode_pass(enc, lens, oracle_embeds[:, : int(text_lens.max())], text_lens)[0]
        scaled, _, alphas, _ = model.predictor(enc, text, mask, ignore_id=model.ignore_id)
        scaled_logits = model._decode_pass(enc, lens, scaled, text_lens)[0]

    def token_acc(logits, rows=None):
        keep = text != model.ignore_id
        if rows is not None:
            keep &= rows[:, None]
        return round(float(((logits.argmax(-1) == text) & keep).sum() / keep.sum().clamp(min=1)), 4)

    refs, dec_hyps = [], []
    ctc_hyps = [tok.decode(ids) for ids in ctc_greedy_ids(log_probs, lens, blank=model.blank_id)]
    for i in range(len(items)):
        dec_hyps.append(tok.decode(model._ids(free_logits[i:i + 1], n_pred[i:i + 1].clamp(max=free_logits.size(1)))[0]))
        refs.append(tok.decode(items[i]["text"].tolist()))
    for i in range(min(args.show, len(items))):
        print(f"REF {refs[i]}\nCTC {ctc_hyps[i]}\nDEC {dec_hyps[i]}", file=sys.stderr)
    aligned = frames[:, 0] >= 0
    print(json.dumps({
        "exp": os.fspath(exp), "checkpoint": args.checkpoint, "jsonl": args.jsonl, "n": len(items),
        "ctc_wer": round(word_error_rate(refs, ctc_hyps)["wer"], 2),
        "decoder_wer": round(word_error_rate(refs, dec_hyps)["wer"], 2),
        "decoder_acc_true_length": token_acc(scaled_logits),
        "decoder_acc_ctc_alignment": token_acc(oracle_logits, aligned),
        "ctc_aligned_utterances": int(aligned.sum()),
        "alpha_l1_per_token": round(float((alphas - oracle).abs().sum(1)[aligned].sum()
                                          / text_lens[aligned].sum().clamp(min=1)), 4),
        "token_count_ratio": round(float(token_num.sum() / text_lens.sum()), 4),
    }))


if __name__ == "__main__":
    main()

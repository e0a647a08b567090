"""How fast does the speech branch's CIF decoder learn on a frozen encoder? Variants side by side.

    python local/decoder_probe.py --tokens exp/quick/lang/tokens.txt \
        --train data/quick/asr_train.jsonl --dev data/quick/asr_dev.jsonl \
        --cache exp/probe_encoder.pt --steps 600 --variant baseline --variant ctc_init [--json]

The frozen encoder runs once per utterance (its outputs are kept in ``--cache``); then each
``--variant`` trains the CTC head, CIF predictor and SAN-M decoder from the same seed for
``--steps`` steps of ``--batch`` utterances and reports, on the dev utterances: CTC greedy WER,
decoder token accuracy at the true length, and the decoder's WER with the predictor's own token
count (what inference uses). Variants (combine with '+', e.g. ``ctc_init+no_ls``):

- ``baseline``: the config as it is;
- ``ctc_init``: a CTC head trained alone first for ``--ctc-steps``, its weights copied into the
  decoder's output layer (the decoder's last block has no residual, so this is a warm start, not
  an identity);
- ``no_ls``: no label smoothing; ``no_dropout``: decoder dropout 0; ``lr3``: learning rate x3;
- ``readout``: ``model_conf.ctc_readout`` (the CTC head read through the CIF embeddings, added to
  the decoder's logits);
- ``stride4``: 12.5 frames/s into the heads (pairs of cached frames averaged, as output_stride 4 does).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def build(cfg, variant: str):
    from funasr import AutoModel

    cfg = json.loads(json.dumps(cfg))
    if "no_dropout" in variant:
        for k in ("dropout_rate", "positional_dropout_rate"):
            cfg["decoder_conf"][k] = 0.0
    if "readout" in variant:
        cfg["model_conf"]["ctc_readout"] = True
    if "no_ls" in variant:
        cfg["model_conf"]["lsm_weight"] = 0.0
    am = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR")
    return am


def batches(n_items, batch, rng):
    order = list(range(n_items))
    while True:
        rng.shuffle(order)
        for i in range(0, n_items - batch + 1, batch):
            yield order[i:i + batch]


def pad(items):
    """Zero-padded batch and lengths (torch's pad_sequence)."""
    import torch

    return (torch.nn.utils.rnn.pad_sequence(items, batch_first=True),
            torch.tensor([x.size(0) for x in items]))


def evaluate(m, tok, dev, pad, word_error_rate) -> dict:
    """CTC greedy WER, decoder accuracy at the true length and inference WER on the dev rows."""
    import torch

    from funasr_clsr.models.clsr.alignment import ctc_greedy_ids

    was_training = m.training
    m.eval()
    refs, hyp_ctc, hyp_dec, correct, total = [], [], [], 0, 0
    with torch.no_grad():
        for i in range(0, len(dev), 16):
            rows = dev[i:i + 16]
            enc, el = pad([r[0].float() for r in rows])
            txt, tl = pad([r[1] for r in rows])
            txt[torch.arange(txt.size(1))[None, :] >= tl[:, None]] = m.ignore_id  # the predictor counts non-ignored ids
            mask = (torch.arange(enc.size(1))[None, :] < el[:, None])[:, None, :]
            ac, _, _, _ = m.predictor(enc, txt, mask, ignore_id=m.ignore_id)
            logits = m._decode_pass(enc, el, ac, tl)[0]
            valid = txt != m.ignore_id
            correct += int(((logits.argmax(-1) == txt) & valid).sum())
            total += int(valid.sum())
            hyp_ctc.extend(tok.decode(ids) for ids in ctc_greedy_ids(m.ctc.log_softmax(enc), el, blank=m.blank_id))
            dec_logits, _, n_text = m._decode(enc, el)
            refs.extend(tok.decode(r[1].tolist()) for r in rows)
            hyp_dec.extend(tok.decode(ids) for ids in m._ids(dec_logits, n_text))
    m.train(was_training)
    return {"ctc_wer": round(word_error_rate(refs, hyp_ctc)["wer"], 1),
            "decoder_acc_true_length": round(correct / max(total, 1), 3),
            "decoder_wer": round(word_error_rate(refs, hyp_dec)["wer"], 1),
            "example": {"ref": refs[0], "ctc": hyp_ctc[0], "decoder": hyp_dec[0]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(HERE.parents[1] / "conf" / "clsr_whisper_base_mini_en.yaml"))
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--whisper", default=str(HERE / "downloads" / "whisper-base"))
    ap.add_argument("--cmvn", default=None, help="am.mvn for a config whose frontend needs one")
    ap.add_argument("--model-conf", default="{}", help="JSON object merged into model_conf")
    ap.add_argument("--cache", required=True, help="file for the encoder outputs (made on the first run)")
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--ctc-steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=0, help="dev evaluation every N steps (0: at the end only)")
    ap.add_argument("--save", default=None, help="write each variant's state_dict to SAVE.<variant>.pt")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    import funasr_clsr  # noqa: F401
    from funasr_clsr.datasets.qa_dataset import AudioQADataset
    from funasr_clsr.evaluation.metrics import word_error_rate

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    cfg = OmegaConf.to_container(OmegaConf.load(a.config))
    if cfg.get("encoder") == "WhisperAudioEncoder":
        cfg["encoder_conf"]["whisper_path"] = a.whisper
    if a.cmvn:
        cfg["frontend_conf"]["cmvn_file"] = a.cmvn
    cfg["model_conf"].update(text_encoder_conf=None, nce_weight=0, mae_weight=1.0 / 3)
    cfg["model_conf"].update(json.loads(a.model_conf))
    cfg["tokenizer_conf"]["token_list"] = a.tokens
    variants = a.variant or ["baseline"]

    cache = Path(a.cache)
    if cache.is_file():
        data = torch.load(cache)
    else:
        am = build(cfg, "baseline")
        tok, fe = am.kwargs["tokenizer"], am.kwargs["frontend"]
        data = {}
        for split, path in (("train", a.train), ("dev", a.dev)):
            ds = AudioQADataset(path, index_ds="IndexDSJsonlQA", frontend=fe, tokenizer=tok)
            rows = []
            with torch.no_grad():
                for i in tqdm(range(len(ds)), desc=f"encode {split}", file=sys.stderr):
                    b = ds.collator([ds[i]])
                    sl = b["speech_lengths"].view(-1)
                    enc, el = am.model.encode(b["speech"], sl)
                    n = int(b["text_lengths"].view(-1)[0])
                    rows.append((enc[0, : int(el[0])].half(), b["text"][0, :n].clone()))
            data[split] = rows
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, cache)
    train, dev = data["train"], data["dev"]

    def pooled(rows):  # output_stride 4 from the cached stride-2 frames (the encoder's own mean of runs)
        out = []
        for enc, txt in rows:
            n = enc.size(0)
            pairs = enc[: n - n % 2].float().view(-1, 2, enc.size(1)).mean(1)
            if n % 2:
                pairs = torch.cat([pairs, enc[-1:].float()])
            out.append((pairs.half(), txt))
        return out

    report = {}
    full_train, full_dev = train, dev
    for variant in variants:
        train, dev = (pooled(full_train), pooled(full_dev)) if "stride4" in variant else (full_train, full_dev)
        torch.manual_seed(0)
        am = build(cfg, variant)
        m = am.model
        tok = am.kwargs["tokenizer"]
        m.encode = lambda speech, lengths: (speech, lengths)  # inputs are cached encoder outputs
        lr = a.lr * (3 if "lr3" in variant else 1)
        params = [p for n, p in m.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
        rng = random.Random(0)
        feed = batches(len(train), a.batch, rng)

        def step_on(idx, opt, ctc_only=False):
            enc, el = pad([train[i][0].float() for i in idx])
            txt, tl = pad([train[i][1] for i in idx])
            txt[torch.arange(txt.size(1))[None, :] >= tl[:, None]] = m.ignore_id
            if ctc_only:
                loss, _ = m._calc_ctc_loss(enc, el, txt, tl)
                loss = loss * len(idx) / tl.sum()
                stats = {"loss_ctc": loss.detach()}
            else:
                loss, stats, _ = m(speech=enc, speech_lengths=el, text=txt, text_lengths=tl)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            return stats

        t0 = time.perf_counter()
        m.train()
        if "ctc_init" in variant:
            opt = torch.optim.Adam(m.ctc.parameters(), lr=lr * 3)
            for _ in tqdm(range(a.ctc_steps), desc=f"{variant}: ctc head", file=sys.stderr):
                step_on(next(feed), opt, ctc_only=True)
            if "readout" not in variant:  # (the read-out uses the CTC head itself)
                with torch.no_grad():
                    m.decoder.output_layer.weight.copy_(m.ctc.ctc_lo.weight)
                    if m.decoder.output_layer.bias is not None:
                        m.decoder.output_layer.bias.copy_(m.ctc.ctc_lo.bias)
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200))
        curve, dev_curve = [], []
        for s in tqdm(range(a.steps), desc=variant, file=sys.stderr):
            stats = step_on(next(feed), opt)
            sched.step()
            if s % 50 == 0 or s == a.steps - 1:
                curve.append((s, round(float(stats["acc"]), 3)))
            if a.eval_every and (s + 1) % a.eval_every == 0:
                dev_curve.append((s + 1, {k: v for k, v in evaluate(m, tok, dev, pad, word_error_rate).items()
                                          if k != "example"}))
                print(variant, dev_curve[-1], file=sys.stderr, flush=True)
        train_s = time.perf_counter() - t0

        ev = evaluate(m, tok, dev, pad, word_error_rate)
        report[variant] = {
            "steps": a.steps, "batch": a.batch, "train_seconds": round(train_s, 1),
            "dev_utts": len(dev), **ev, "train_acc_curve": curve, "dev_curve": dev_curve,
        }
        if a.save:
            torch.save(m.state_dict(), f"{a.save}.{variant}.pt")
        print(json.dumps({variant: report[variant]}) if a.json else f"{variant}: {report[variant]}", flush=True)
    if a.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

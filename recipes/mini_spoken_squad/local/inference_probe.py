"""How two inference settings of the CLSR head change WER and retrieval: the CIF token count scaled,
and long inputs decoded in pieces.

    python local/inference_probe.py --model exp/full/clsr/model --jsonl data/full/qa_dev.jsonl \
        --scale 1.0 --scale 0.9 --piece 0 --piece 12 [--json out.json]

``--scale`` (repeatable, default 1.0): the CIF token count set to ``round(scale x the predictor's own
count)`` (FunASR's ``target_label_length``, the same rescaling of the CIF weights that training does
with the true length). The head's transcripts have more insertions than deletions (words doubled:
"the the"); a scale below 1 asks whether it fires too often.
``--piece`` (repeatable; default: the model's own ``model_conf.piece_seconds``): inputs longer than
this many seconds decoded in pieces cut at pauses (``CLSR.piece_seconds``); 0 decodes every input whole.
For each combination this decodes every context of ``--jsonl`` and reports the WER split into
substitutions / deletions / insertions, words per reference word, and Q->C recall of the jsonl's
text questions against those contexts. Run it on qa_dev to choose, on qa_test to confirm. With
FUNASR_CLSR_ENCODER_CACHE pointing at the recipe's encoder cache the frozen Whisper encoder is not
recomputed for inputs it has seen (pieces are new inputs to it).
(Until 2026-12-08 this was ``local/cif_count_probe.py``, with ``--scale`` only.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def scale_cif_count(model, state: dict) -> None:
    """Wrap ``model.calc_predictor`` so the token count is multiplied by ``state["scale"]``."""
    from funasr.models.transformer.utils.nets_utils import make_pad_mask

    own = model.calc_predictor

    def calc_predictor(enc, enc_lens):
        out = own(enc, enc_lens)
        if state["scale"] == 1.0:
            return out
        mask = (~make_pad_mask(enc_lens, maxlen=enc.size(1))[:, None, :]).to(enc.device)
        count = (out[1] * state["scale"]).round().clamp(min=1)
        acoustic, _, alphas, peaks = model.predictor(enc, None, mask, ignore_id=model.ignore_id,
                                                     target_label_length=count)
        return acoustic, count, alphas, peaks

    model.calc_predictor = calc_predictor


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="exported CLSR model directory")
    p.add_argument("--jsonl", required=True, help="qa jsonl (source, target, question, context_id)")
    p.add_argument("--scale", type=float, action="append", help="CIF token-count scale (default 1.0)")
    p.add_argument("--piece", type=float, action="append",
                   help="piece length in seconds, 0 = whole inputs (default: the model's piece_seconds)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)

    import torch

    from funasr_clsr.bin.evaluate import load_model, read_pairs
    from funasr_clsr.evaluation.metrics import retrieval_metrics_from_labels, word_error_rate

    torch.set_num_threads(args.threads)
    rows = read_pairs(args.jsonl, "text")  # one-line errors: missing file, bad line, missing field, empty
    contexts: dict[str, dict] = {}
    for r in rows:
        contexts.setdefault(r.get("context_id", r["key"]), r)
    ids = list(contexts)
    column = {k: i for i, k in enumerate(ids)}
    positives = [column[r.get("context_id", r["key"])] for r in rows]
    model = load_model(args.model).eval()
    state = {"scale": 1.0}
    scale_cif_count(model, state)
    questions = model.encode_text([r["question"] for r in rows])
    refs = [contexts[k]["target"] for k in ids]
    out = []
    own_piece = model.piece_seconds
    settings = [(scale, piece) for scale in (args.scale or [1.0])
                for piece in (args.piece or [own_piece or 0.0])]
    for scale, piece in settings:
        if piece < 0:
            raise SystemExit(f"--piece must be 0 (whole inputs) or a positive number of seconds, got {piece}")
        state["scale"] = scale
        model.piece_seconds = piece or None
        start = time.time()
        vecs, hyps = model.encode_speech([contexts[k]["source"] for k in ids], batch_size=args.batch_size,
                                         return_text=True)
        wer = word_error_rate(refs, hyps)
        n = wer["ref_words"]
        row = {"scale": scale, "piece_seconds": piece, "wer": round(wer["wer"], 2),
               "sub": round(100 * wer["substitutions"] / n, 2), "del": round(100 * wer["deletions"] / n, 2),
               "ins": round(100 * wer["insertions"] / n, 2),
               "hyp_words_per_ref_word": round(sum(len(h.split()) for h in hyps) / n, 3),
               **{k: round(v, 2) for k, v in retrieval_metrics_from_labels(
                   (questions @ vecs.T).numpy(), positives).items()},
               "questions": len(rows), "contexts": len(ids), "seconds": round(time.time() - start, 1)}
        out.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "jsonl": args.jsonl,
                                               "command": " ".join(sys.argv), "rows": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

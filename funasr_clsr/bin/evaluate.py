"""Evaluate one system on a question-context jsonl and add its row to results.json.

    python -m funasr_clsr.bin.evaluate --mode embed --model DIR --jsonl test.jsonl \
        --results results.json --system clsr [--question-kind text|speech]
    python -m funasr_clsr.bin.evaluate --mode embed --model DIR --backend onnx --quantize all ...  # exported
    python -m funasr_clsr.bin.evaluate --mode clean_text --text-encoder DIR ...       # upper bound
    python -m funasr_clsr.bin.evaluate --mode cascade --asr-model DIR --text-encoder DIR ...
    python -m funasr_clsr.bin.evaluate --mode cascade --asr whisper --text-encoder DIR ...
    python -m funasr_clsr.bin.evaluate --mode bm25 --transcripts hyp.jsonl ...

Modes:
  embed       the model's own encode_speech / encode_text (CLSR, ParaBGE, CLAP-style);
              WER of its speech branch when it can transcribe
  clean_text  the text encoder on the true transcripts (``target``): the upper bound
  cascade     an ASR system's transcripts -> the text encoder (ASR = a CLSR speech branch
              directory, or Whisper-base through faster-whisper)
  bm25        BM25 over transcripts (from --transcripts, --asr-model or the true ones)
Transcripts are cached as jsonl (``--transcripts-out``) so cascade and BM25 share one ASR pass.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def read_pairs(path: str, question_kind: str) -> list[dict]:
    pairs = []
    if not Path(path).is_file():
        raise SystemExit(f"{path}: no such file")
    with open(path, encoding="utf-8") as fin:
        for lineno, line in enumerate(fin, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise SystemExit(f"{path}:{lineno}: not a JSON line ({err.msg})") from None
            need = ["source", "target"] + (["question"] if question_kind == "text" else
                                           ["question_source", "question_target"])
            missing = [k for k in need if k not in item]
            if missing:
                raise SystemExit(f"{path}:{lineno}: missing field(s) {missing} for --question-kind {question_kind}")
            pairs.append(item)
    if not pairs:
        raise SystemExit(f"{path}: empty split")
    return pairs


def load_model(model_dir: str, backend: str = "torch", quantize: str = "none"):
    """The model of a directory on torch, or its exported ONNX graphs on onnxruntime
    (``quantize``: "none", "all" or "text", as ``funasr-clsr index --backend onnx``)."""
    if not (Path(model_dir) / "config.yaml").is_file():
        raise SystemExit(f"{model_dir}: not a model directory (no config.yaml)")
    if backend == "onnx":
        from funasr_clsr.onnx_runtime import OnnxCLSR

        try:
            return OnnxCLSR(model_dir, quantize=quantize)
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(str(err)) from None
    from funasr_clsr.retrieval.pipeline import load_model as load_model_dir

    return load_model_dir(model_dir)[0]


def load_text_encoder(path: str, max_length: int | None):
    from funasr_clsr.text_encoder import TextEncoder

    return TextEncoder(path, max_length=max_length).eval()


def encode_in_batches(fn, items, batch_size: int, desc: str):
    import torch
    from tqdm import tqdm

    outs = []
    with torch.no_grad():
        for start in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch", file=sys.stderr):
            outs.append(fn(items[start:start + batch_size]))
    return outs


def as_numpy(vectors) -> np.ndarray:
    """torch's tensors and onnxruntime's arrays alike."""
    return vectors.detach().cpu().numpy() if hasattr(vectors, "detach") else np.asarray(vectors)


def speech_embed(model, wavs, batch_size, want_text: bool):
    """Embeddings (and transcripts) for wavs, batched by length to limit padding."""
    order = sorted(range(len(wavs)), key=lambda i: -Path(wavs[i]).stat().st_size)
    sorted_wavs = [wavs[i] for i in order]
    if want_text:
        outs = encode_in_batches(lambda b: model.encode_speech(b, return_text=True), sorted_wavs, batch_size, "speech")
        vecs = np.concatenate([as_numpy(o[0]) for o in outs])
        texts = [t for o in outs for t in o[1]]
    else:
        vecs = np.concatenate([as_numpy(v) for v in encode_in_batches(model.encode_speech, sorted_wavs,
                                                                       batch_size, "speech")])
        texts = None
    inv = np.argsort(order)
    vecs = vecs[inv]
    return vecs, ([texts[i] for i in inv] if texts is not None else None)


def transcribe(asr: str | None, asr_model: str | None, wavs: list[str], batch_size: int) -> list[str]:
    if asr == "whisper":
        from funasr_clsr.baselines.cascade import WhisperTranscriber

        return WhisperTranscriber().transcribe(wavs)
    if not asr_model:
        raise SystemExit("cascade/bm25 need --asr-model DIR, --asr whisper or --transcripts FILE")
    model = load_model(asr_model)
    order = sorted(range(len(wavs)), key=lambda i: -Path(wavs[i]).stat().st_size)
    texts = [t for chunk in encode_in_batches(model.transcribe, [wavs[i] for i in order], batch_size, "asr")
             for t in chunk]
    out = [""] * len(wavs)
    for rank, i in enumerate(order):
        out[i] = texts[rank]
    return out


def read_transcripts(path: str, pairs: list[dict]) -> list[str]:
    by_key = {}
    with open(path, encoding="utf-8") as fin:
        for line in fin:
            if line.strip():
                item = json.loads(line)
                by_key[item["key"]] = item["text"]
    missing = [p["key"] for p in pairs if p["key"] not in by_key]
    if missing:
        raise SystemExit(f"{path}: no transcript for {len(missing)} keys, e.g. {missing[:3]}")
    return [by_key[p["key"]] for p in pairs]


def write_transcripts(path: str, pairs: list[dict], texts: list[str]) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("".join(json.dumps({"key": p["key"], "text": t}) + "\n" for p, t in zip(pairs, texts)))
    tmp.replace(path)


def evaluate(args) -> dict:
    from funasr_clsr.evaluation import BM25Retriever, bidirectional_metrics, recall_at_k_curve, word_error_rate

    pairs = read_pairs(args.jsonl, args.question_kind)
    wavs = [p["source"] for p in pairs]
    refs = [p["target"] for p in pairs]
    questions = [p["question"] for p in pairs] if args.question_kind == "text" else None
    row: dict = {"n": len(pairs)}
    hyps = None
    t0 = time.perf_counter()
    if args.mode == "embed":
        model = load_model(args.model, args.backend, args.quantize)
        can_asr = hasattr(model, "transcribe")
        c_vec, hyps = speech_embed(model, wavs, args.batch_size, want_text=can_asr)
        if questions is not None:
            q_vec = np.concatenate([as_numpy(v) for v in encode_in_batches(
                model.encode_text, questions, 64, "questions")])
        else:
            q_vec, _ = speech_embed(model, [p["question_source"] for p in pairs], args.batch_size, False)
    else:
        if args.mode == "clean_text":
            hyps = refs
        elif args.transcripts:
            hyps = read_transcripts(args.transcripts, pairs)
        else:
            hyps = transcribe(args.asr, args.asr_model, wavs, args.batch_size)
        if args.mode == "bm25":
            if questions is None:
                raise SystemExit("bm25 is evaluated with text questions")
            sim = BM25Retriever(hyps).similarity(questions)
            q_vec = c_vec = None
        else:
            if not args.text_encoder:
                raise SystemExit(f"--mode {args.mode} needs --text-encoder DIR")
            te = load_text_encoder(args.text_encoder, args.text_max_length)
            c_vec = np.concatenate([v.numpy() for v in encode_in_batches(
                lambda b: te.encode(b, is_query=False), [h if h.strip() else "[UNK]" for h in hyps], 32,
                "contexts")])
            q_vec = np.concatenate([v.numpy() for v in encode_in_batches(
                lambda b: te.encode(b, is_query=True), questions, 64, "questions")])
    if q_vec is not None:
        metrics = bidirectional_metrics(q_vec, c_vec)
        sim = q_vec @ c_vec.T
    else:
        from funasr_clsr.evaluation import retrieval_metrics

        metrics = {"q2c": retrieval_metrics(sim), "c2q": retrieval_metrics(sim.T)}
    row.update(metrics)
    row["q2c_curve"] = [float(x) for x in recall_at_k_curve(sim, max_k=min(50, len(pairs)))]
    if args.seen_voices:
        row["by_voice"] = voice_groups(pairs, sim, refs, hyps if args.mode != "clean_text" else None,
                                       set(args.seen_voices.split()), set(map(int, (args.seen_rates or "").split())))
    if args.mode == "embed" and args.backend == "onnx":
        row["backend"] = f"onnx (int8: {args.quantize})"
    if hyps is not None and args.mode != "clean_text":
        row["wer"] = float(word_error_rate(refs, hyps)["wer"])
        if args.transcripts_out:
            write_transcripts(args.transcripts_out, pairs, hyps)
    elif args.mode == "clean_text":
        row["wer"] = 0.0
    if args.note:
        row["note"] = args.note
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def voice_groups(pairs, sim, refs, hyps, seen_voices: set, seen_rates: set) -> dict:
    """Q->C metrics (over the whole candidate pool) and WER for contexts read by training's voices
    ("seen": voice and rate both heard in training) and by the rest ("unseen")."""
    from funasr_clsr.evaluation import retrieval_metrics_from_labels, word_error_rate

    if any("voice" not in p for p in pairs):
        raise SystemExit("--seen-voices needs a 'voice' field on every jsonl line")
    groups = {"seen": [], "unseen": []}
    for i, p in enumerate(pairs):
        seen = p["voice"] in seen_voices and (not seen_rates or int(p.get("rate") or 0) in seen_rates)
        groups["seen" if seen else "unseen"].append(i)
    out = {}
    for name, rows in groups.items():
        if not rows:
            continue
        entry = {"n": len(rows), **retrieval_metrics_from_labels(sim[rows], np.asarray(rows))}
        if hyps is not None:
            entry["wer"] = float(word_error_rate([refs[i] for i in rows], [hyps[i] for i in rows])["wer"])
        out[name] = entry
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["embed", "clean_text", "cascade", "bm25"], default="embed")
    ap.add_argument("--model", help="model directory (embed mode)")
    ap.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                    help="embed mode: the model on torch, or its exported ONNX graphs on onnxruntime")
    ap.add_argument("--quantize", choices=["none", "all", "text"], default="none",
                    help="with --backend onnx: int8 graphs for both branches (all) or the text encoder only")
    ap.add_argument("--asr-model", help="ASR model directory (a CLSR speech branch) for cascade/bm25")
    ap.add_argument("--asr", choices=["whisper"], help="use Whisper-base (faster-whisper, offline) as the ASR")
    ap.add_argument("--transcripts", help="jsonl {key, text} of precomputed transcripts")
    ap.add_argument("--transcripts-out", help="write the transcripts used here (jsonl)")
    ap.add_argument("--text-encoder", help="text encoder folder (clean_text/cascade)")
    ap.add_argument("--text-max-length", type=int, default=256,
                    help="token limit of the text encoder in clean_text/cascade (all-MiniLM-L6-v2 was trained "
                         "with 256, as the CPU CLSR config uses; BGE: 512)")
    ap.add_argument("--jsonl", required=True)
    ap.add_argument("--question-kind", choices=["text", "speech"], default="text")
    ap.add_argument("--results", required=True, help="results.json to add the row to")
    ap.add_argument("--system", required=True, help="row name, e.g. clsr, clean_text, cascade, bm25")
    ap.add_argument("--profile", default="custom")
    ap.add_argument("--command", help="the command that produced results.json (default: this one)")
    ap.add_argument("--note")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seen-voices", help="the training voices: adds seen/unseen-voice rows (by_voice)")
    ap.add_argument("--seen-rates", help="the training speaking rates (with --seen-voices)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.mode == "embed" and not args.model:
        ap.error("--mode embed needs --model DIR")
    if args.mode != "embed" and (args.backend != "torch" or args.quantize != "none"):
        ap.error("--backend and --quantize apply to --mode embed")
    if args.backend == "torch" and args.quantize != "none":
        ap.error("--quantize needs --backend onnx")
    from funasr_clsr.evaluation import merge_system

    row = evaluate(args)
    command = args.command or "python -m funasr_clsr.bin.evaluate " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    merge_system(args.results, args.system, row, profile=args.profile, command=command)
    print(json.dumps({"system": args.system, **{k: v for k, v in row.items() if k != "q2c_curve"}}))


if __name__ == "__main__":
    main()

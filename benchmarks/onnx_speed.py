"""Indexing speed and fidelity of CLSR's ONNX export: torch fp32 / torch int8 / onnxruntime fp32 / int8.

    python benchmarks/onnx_speed.py --json benchmarks/results/onnx_speed.json \
        --markdown benchmarks/results/onnx_speed.md            # Whisper-base mini config, 2 threads

One process, the same clips of real speech (the mini recipe's qa_test contexts, else a
speech-like synthetic signal) for every system, each run as ``LongFormRetriever`` indexes:
``encode_speech(windows, batch_size=B, return_text=True)``.

* ``torch_fp32``  the CLSR model directory through funasr.AutoModel;
* ``torch_int8``  the same after ``torch.ao.quantization.quantize_dynamic`` on every nn.Linear
  (speech branch and text encoder: what ``model_quant.onnx`` quantizes too);
* ``onnx_fp32`` / ``onnx_int8``  ``OnnxCLSR(DIR)`` / ``OnnxCLSR(DIR, quantize=True)`` on the files
  ``AutoModel(model=DIR).export(type="onnx", quantize=True)`` wrote (exported here when missing).

Reported per system: seconds per batch (median of interleaved runs), RTF, speed-up over torch
fp32, and cosine of its vectors to torch fp32's (min/mean) with the share of identical argmax
tokens; plus question encoding (text encoder alone) for both backends.

The model: ``--model DIR``, else the first ``recipes/mini_spoken_squad/exp/*/model`` with a
Whisper encoder, else ``conf/clsr_whisper_base_mini_en.yaml`` built on the offline Whisper-base
with an untrained head (``--work`` keeps it). An untrained CIF predictor fires on about half of
the 25 frames/s, five times what speech needs; so that every system does a trained model's work,
its output layer is set to fire ``--token-rate`` tokens per second (default 3, about the rate of
English WordPieces; benchmarks/README.md forces 90 per 30 s the same way). Speed does not depend
on training; the cosines of an untrained head do (its argmax tokens sit near ties, see
docs/export.md), so they are reported as such.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np

# before torch loads libgomp: idle threads sleep (benchmarks/README.md, libgomp spin-waiting); OnnxCLSR
# follows the same setting for onnxruntime's threads, so both backends run alike
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import bench_common as bc  # noqa: E402

logger = logging.getLogger("onnx_speed")

SYSTEMS = ("torch_fp32", "torch_int8", "onnx_fp32", "onnx_int8")
WHISPER_CONFIG = "conf/clsr_whisper_base_mini_en.yaml"
RECIPE = bc.REPO / "recipes" / "mini_spoken_squad"
TARGETS = {"speedup_onnx_int8_vs_torch_fp32": 1.5, "cosine_onnx_int8_min": 0.99}


# --------------------------------------------------------------------------- model


def trained_model_dir() -> Path | None:
    """The mini recipe's exported Whisper-branch model, if one exists."""
    for d in sorted((RECIPE / "exp").glob("*/model")):
        if (d / "config.yaml").is_file() and (d / "model.pt").is_file() and \
                bc.load_config(d / "config.yaml").get("encoder") == "WhisperAudioEncoder":
            return d
    return None


def whisper_base(work: Path) -> Path:
    """A transformers Whisper-base folder: the recipe's converted copy, else converted into ``work``
    (what ``python -m funasr_clsr.bin.convert_whisper --offline-base --out DIR`` does)."""
    recipe_copy = RECIPE / "downloads" / "whisper-base"
    if (recipe_copy / "CONVERTED_FROM.json").is_file():  # written last by the converter
        return recipe_copy
    from funasr_clsr.baselines.cascade import WhisperUnavailableError, whisper_base_dir
    from funasr_clsr.whisper_ct2 import CT2FormatError, convert

    out = work / "whisper_base_hf"
    if not (out / "CONVERTED_FROM.json").is_file():
        logger.info("converting the offline Whisper-base into %s", out)
        try:
            convert(whisper_base_dir(), out)
        except (WhisperUnavailableError, FileNotFoundError, CT2FormatError) as exc:
            raise bc.BenchmarkInputError(f"offline Whisper-base unusable: {exc}") from exc
    return out


def recipe_tokens(te_dir: Path, work: Path) -> Path | None:
    """The mini recipe's ASR vocabulary (stage 2: make_tokens --ascii-chars-only --min-count 5)."""
    train = [p for p in (RECIPE / "data" / "full" / n for n in ("asr_train.jsonl", "qa_train.jsonl")) if p.is_file()]
    if not train:
        return None
    from funasr_clsr.bin.make_tokens import iter_texts, subset_tokens
    from funasr_clsr.text_encoder import read_lowercase
    from funasr_clsr.tokenizer import read_token_list

    tokens = subset_tokens(read_token_list(te_dir / "vocab.txt"), iter_texts(train), read_lowercase(te_dir),
                           ascii_chars_only=True, min_count=5)
    out = work / "tokens.txt"
    out.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return out


def untrained_model_dir(work: Path, token_rate: float, seed: int) -> tuple[Path, str]:
    """conf/clsr_whisper_base_mini_en.yaml as a model directory, its CIF set to ``token_rate``."""
    import torch
    from transformers import WhisperConfig

    from funasr_clsr.export import export_model_dir

    out = work / f"wclsr_untrained_rate{token_rate:g}_seed{seed}"
    if (out / "model.pt").is_file():
        return out, f"{WHISPER_CONFIG}, untrained head (kept in {out})"
    whisper = whisper_base(work)
    te_dir = bc.minilm_dir()
    cfg = bc.load_config(bc.REPO / WHISPER_CONFIG)
    cfg["encoder_conf"]["whisper_path"] = str(whisper)
    cfg["predictor_conf"]["idim"] = WhisperConfig.from_pretrained(str(whisper)).d_model
    model, cfg = bc.build_clsr(cfg, te_dir, seed=seed, token_list=recipe_tokens(te_dir, work))
    frames_per_s = 50.0 / model.encoder.output_stride  # Whisper gives 50 outputs/s
    p = min(max(token_rate / frames_per_s, 1e-3), 0.999)
    with torch.no_grad():  # nearly constant weights of mean p: ``token_rate`` fires per second
        model.predictor.cif_output.weight.mul_(0.05)
        model.predictor.cif_output.bias.fill_(math.log(p / (1 - p)))
    export_model_dir(cfg, model, out, readme="Untrained Whisper-branch CLSR for benchmarks/onnx_speed.py.\n")
    return out, f"{WHISPER_CONFIG} on {whisper}, untrained head, CIF at {token_rate:g} tokens/s (seed {seed})"


# --------------------------------------------------------------------------- systems


def quantize_all_linear(model):
    """A copy of ``model`` with every nn.Linear dynamic int8 (torch's counterpart of model_quant.onnx)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)
    q.__dict__["frontend"] = model.frontend
    return q.eval()


def speech_task(model, clips: list[np.ndarray], batch: int):
    def run():
        vecs, texts = model.encode_speech(list(clips), batch_size=batch, return_text=True)
        return (vecs.detach().float().numpy() if hasattr(vecs, "detach") else np.asarray(vecs)), texts
    return run


def text_task(model, questions: list[str]):
    def run():
        v = model.encode_text(questions)
        return v.detach().float().numpy() if hasattr(v, "detach") else np.asarray(v)
    return run


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def token_agreement(a: list[str], b: list[str]) -> float:
    """Share of transcript words that agree position by position (1.0: the same argmax tokens)."""
    same = total = 0
    for x, y in zip(a, b):
        xs, ys = x.split(), y.split()
        total += max(len(xs), len(ys))
        same += sum(p == q for p, q in zip(xs, ys))
    return same / total if total else 1.0


def _shares(by_op: dict[str, float], top: int) -> dict:
    total = sum(by_op.values())
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])[:top]
    return {"total_ms": round(total, 1),
            "by_op": [[op, round(ms, 1), round(ms / total, 3) if total else 0.0] for op, ms in ranked]}


def onnx_op_profile(onnx_model, clips: list[np.ndarray], work: Path, top: int = 12) -> dict:
    """Milliseconds by ONNX op type for one batch of the speech graph (onnxruntime's own profiler:
    the same file and session options as ``onnx_model``, profiling on; the second of two runs)."""
    import json

    import onnxruntime as ort

    from funasr_clsr.models.dual_encoder import load_speech_features
    from funasr_clsr.models.clsr.export_meta import exported_paths
    from funasr_clsr.onnx_runtime import session_options

    opts = session_options(onnx_model.speech_session.get_session_options().intra_op_num_threads)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"ort_profile_{onnx_model.quantize}")
    path = exported_paths(Path(onnx_model.model_dir), onnx_model.quantize)[0]  # the speech graph it opened
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    feats, lengths, _ = load_speech_features(onnx_model.frontend, list(clips), None)
    feed = {"speech": feats.numpy().astype(np.float32), "speech_lengths": lengths.numpy().astype(np.int32)}
    for _ in range(2):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    start = runs[-1]["ts"]
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1000.0
    return {**_shares(by_op, top), "run_ms": round(runs[-1]["dur"] / 1000.0, 1)}


def torch_op_profile(torch_model, clips: list[np.ndarray], top: int = 12) -> dict:
    """Milliseconds by aten op (self CPU time) for the same batch on torch (second of two runs)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch_model.encode_speech(list(clips), batch_size=len(clips))
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        torch_model.encode_speech(list(clips), batch_size=len(clips))
    by_op = {e.key: e.self_cpu_time_total / 1000.0 for e in prof.key_averages()}
    return _shares(by_op, top)


# --------------------------------------------------------------------------- report


def markdown_table(report: dict) -> str:
    rows = ["| system | s / batch (median) | RTF | speed-up vs torch fp32 | cosine min | cosine mean | "
            "word agreement | runs (s) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["systems"].items():
        rows.append(f"| {name} | {bc.fmt_s(r['median_s'])} | {r['rtf']:.4f} | {r['speedup_vs_torch_fp32']:.2f} | "
                    f"{r['cosine_min']:.4f} | {r['cosine_mean']:.4f} | {r['word_agreement']:.3f} | "
                    f"{', '.join(f'{x:.2f}' for x in r['runs_s'])} |")
    rows += ["", "| questions (text encoder) | s (median) | speed-up | cosine min |", "|---|---|---|---|"]
    for name, r in report["questions"].items():
        rows.append(f"| {name} | {r['median_s']:.4f} | {r['speedup_vs_torch_fp32']:.2f} | {r['cosine_min']:.5f} |")
    for name, prof in (report.get("op_profile") or {}).items():
        rows += ["", f"| {name}: op (one batch, {prof['total_ms']:.0f} ms in ops) | ms | share |", "|---|---|---|"]
        rows += [f"| {op} | {ms:.1f} | {share:.1%} |" for op, ms, share in prof["by_op"]]
    rows += ["", "| target | value | goal | met |", "|---|---|---|---|"]
    for name, t in report["targets"].items():
        rows.append(f"| {name} | {t['value']:.4g} | >= {t['goal']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(rows) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", type=Path, help="CLSR model directory (default: the recipe's trained Whisper-branch "
                                              "model, else an untrained one built from " + WHISPER_CONFIG + ")")
    p.add_argument("--work", type=Path, help="keep the converted Whisper and the untrained model here "
                                             "(default: a temporary folder, removed)")
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads (default 2)")
    p.add_argument("--seconds", type=float, default=40.0, help="window length (default 40 s, the paper's)")
    p.add_argument("--batch", type=int, default=8, help="windows per batch (default 8, LongFormRetriever's)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per system (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per system first")
    p.add_argument("--token-rate", type=float, default=3.0, help="tokens/s the untrained CIF is set to fire")
    p.add_argument("--jsonl", type=Path, default=RECIPE / "data" / "full" / "qa_test.jsonl",
                   help="audio: contexts of this jsonl (default: the mini recipe's qa_test); synthetic if absent")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--markdown", type=Path, help="write the tables here (also printed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile-ops", action="store_true",
                   help="also time one batch by op type: onnxruntime's profiler and torch.profiler")
    args = p.parse_args(argv)
    for name in ("threads", "batch", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.seconds <= 0 or args.token_rate <= 0:
        p.error("--seconds and --token-rate must be > 0")
    return args


def main(argv=None) -> dict:
    return bc.run_timed_benchmark(parse_args(argv), _run, "clsr_onnx_speed_", noisy=("transformers", "funasr", "root", "onnxruntime"))


def _run(args, work: Path, report: dict) -> dict:
    import torch

    from funasr_clsr.onnx_runtime import OnnxCLSR

    model_dir = args.model or trained_model_dir()
    if model_dir is not None:
        if not (Path(model_dir) / "config.yaml").is_file():
            raise bc.BenchmarkInputError(f"{model_dir}: not a CLSR model directory (no config.yaml)")
        source = f"model directory {model_dir}"
    else:
        model_dir, source = untrained_model_dir(work, args.token_rate, args.seed)
    export = bc.ensure_onnx(Path(model_dir))
    clips, _, audio_source = bc.speech_clips(args.seconds, args.batch, args.jsonl, seed=args.seed)
    report["model"] = {"dir": str(model_dir), "source": source, "onnx": export,
                       "files_mb": {n: round((Path(model_dir) / n).stat().st_size / 2 ** 20, 1)
                                    for n in ("model.pt", "model.onnx", "model_quant.onnx", "model_eb.onnx",
                                              "model_eb_quant.onnx")}}
    report["audio"] = {"source": audio_source, "clip_seconds": args.seconds, "clips": len(clips)}

    torch_model, _ = bc.load_model_keep_threads(Path(model_dir))
    models = {"torch_fp32": torch_model, "torch_int8": quantize_all_linear(torch_model),
              "onnx_fp32": OnnxCLSR(model_dir, intra_op_num_threads=args.threads),
              "onnx_int8": OnnxCLSR(model_dir, quantize=True, intra_op_num_threads=args.threads)}
    torch.set_num_threads(args.threads)  # funasr.AutoModel sets its own
    timings = bc.round_robin({k: speech_task(m, clips, args.batch) for k, m in models.items()},
                             repeats=args.repeats, warmup=args.warmup)
    ref_vecs, ref_texts = timings["torch_fp32"]["result"]
    audio_s = args.seconds * len(clips)
    report["tokens_per_clip"] = [len(t.split()) for t in ref_texts]
    report["systems"] = {}
    for name in SYSTEMS:
        t = timings[name]
        vecs, texts = t["result"]
        c = cosines(vecs, ref_vecs)
        report["systems"][name] = {
            "median_s": t["median_s"], "min_s": t["min_s"], "runs_s": t["runs_s"], "rtf": t["median_s"] / audio_s,
            "speedup_vs_torch_fp32": timings["torch_fp32"]["median_s"] / t["median_s"],
            "cosine_min": float(c.min()), "cosine_mean": float(c.mean()),
            "word_agreement": token_agreement(texts, ref_texts)}
    questions = [row.get("question") or row.get("target", "")[:200] for row in bc.read_jsonl(args.jsonl)[:64]] \
        if Path(args.jsonl).is_file() else [f"what is the question number {i}" for i in range(64)]
    questions = [q for q in questions if q.strip()] or ["what is the question"]
    q_times = bc.round_robin({k: text_task(models[k], questions) for k in ("torch_fp32", "onnx_fp32", "onnx_int8")},
                             repeats=max(args.repeats, 5), warmup=1)
    ref_q = q_times["torch_fp32"]["result"]
    report["questions"] = {k: {"median_s": v["median_s"], "n": len(questions),
                               "speedup_vs_torch_fp32": q_times["torch_fp32"]["median_s"] / v["median_s"],
                               "cosine_min": float(cosines(v["result"], ref_q).min())} for k, v in q_times.items()}
    speedup = report["systems"]["onnx_int8"]["speedup_vs_torch_fp32"]
    cos_min = report["systems"]["onnx_int8"]["cosine_min"]
    report["targets"] = {
        "speedup_onnx_int8_vs_torch_fp32": {"value": speedup, "goal": TARGETS["speedup_onnx_int8_vs_torch_fp32"],
                                            "met": speedup >= TARGETS["speedup_onnx_int8_vs_torch_fp32"]},
        "cosine_onnx_int8_min": {"value": cos_min, "goal": TARGETS["cosine_onnx_int8_min"],
                                 "met": cos_min >= TARGETS["cosine_onnx_int8_min"]}}
    if args.profile_ops:  # after the timed runs: profiling slows what it watches
        batch = clips[:args.batch]
        report["op_profile"] = {"torch_fp32": torch_op_profile(torch_model, batch),
                                "onnx_fp32": onnx_op_profile(models["onnx_fp32"], batch, work),
                                "onnx_int8": onnx_op_profile(models["onnx_int8"], batch, work)}
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["peak_rss_mb"] = bc.peak_rss_mb()
    bc.publish(report, markdown_table(report), args.markdown, args.json)
    return report


if __name__ == "__main__":
    try:
        main()
    except (bc.BenchmarkInputError, FileNotFoundError, ValueError) as exc:
        print(f"onnx_speed.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)

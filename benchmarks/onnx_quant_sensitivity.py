"""Which MatMuls of CLSR's exported speech graph survive int8: cosine and speed per quantisation plan.

    python benchmarks/onnx_quant_sensitivity.py --model recipes/mini_spoken_squad/exp/quick/model \
        --json benchmarks/results/onnx_quant_sensitivity.json --markdown benchmarks/results/onnx_quant_sensitivity.md

``model_quant.onnx`` is ``onnxruntime.quantization.quantize_dynamic`` as FunASR's export calls it
(MatMul weights uint8 per channel, activations uint8 per tensor, every node whose name contains
``output`` left fp32). On the trained Whisper-branch model that flips argmax tokens (docs/export.md).
This script re-quantises ``model.onnx`` under several plans, each a set of MatMuls kept fp32 on
top of FunASR's rule, and runs every plan on the same clips as ``benchmarks/onnx_speed.py``:

* ``funasr``: FunASR's rule alone (what ``model_quant.onnx`` holds today);
* ``fp32_block_K``: FunASR's rule plus every MatMul of Whisper encoder block K;
* ``fp32_attention`` / ``fp32_mlp``: plus the attention (q/k/v/out) or the MLP (fc1/fc2) MatMuls of every block;
* ``fp32_fc2``: plus the second MLP layer of every block (where Whisper's large activations are);
* ``fp32_encoder``: plus the whole encoder (int8 only in the text encoder);
* ``qint8_weights``: FunASR's rule with int8 instead of uint8 weights;
* ``blockwise_b128`` / ``blockwise_b32``: not ``quantize_dynamic`` but onnxruntime's ``MatMulNBits``
  (8-bit weights and activations scaled per row and block of 128 or 32 inputs,
  ``export_meta.quantize_blockwise``), FunASR's rule for what stays fp32.

Reported per plan: MatMuls in int8, seconds per batch (median of runs interleaved with torch fp32 and
onnxruntime fp32, timed again beside each plan), speed-up over both, cosine to torch fp32 (min / mean) and the share of identical
transcript words.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as onnx_speed.py: idle threads sleep

import bench_common as bc  # noqa: E402
from onnx_speed import cosines, speech_task, token_agreement, trained_model_dir  # noqa: E402

TARGET_COSINE = 0.99
TARGET_SPEEDUP = 1.5
_BLOCK = re.compile(r"/layers\.(\d+)/")


def funasr_excluded(name: str) -> bool:
    """The nodes funasr/utils/export_utils.py::_onnx leaves out of quantize_dynamic."""
    return "output" in name or "bias_encoder" in name or "bias_decoder" in name


def encoder_block(name: str) -> int | None:
    """Whisper encoder block of a node of CLSR's speech graph (``/encoder/whisper/layers.K/...``)."""
    if not name.startswith("/encoder/"):
        return None
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None


def plans(matmuls: list[str]) -> dict[str, dict]:
    """{plan: {"keep": predicate on a MatMul name (True: stays fp32), "weight": "uint8"|"int8"}}."""
    blocks = sorted({b for b in map(encoder_block, matmuls) if b is not None})
    out = {"funasr": {"keep": lambda n: False, "weight": "uint8"},
           "qint8_weights": {"keep": lambda n: False, "weight": "int8"}}
    for b in blocks:
        out[f"fp32_block_{b}"] = {"keep": (lambda n, b=b: encoder_block(n) == b), "weight": "uint8"}
    out["fp32_attention"] = {"keep": lambda n: encoder_block(n) is not None and "/self_attn/" in n, "weight": "uint8"}
    out["fp32_mlp"] = {"keep": lambda n: encoder_block(n) is not None and ("/fc1/" in n or "/fc2/" in n),
                       "weight": "uint8"}
    out["fp32_fc2"] = {"keep": lambda n: encoder_block(n) is not None and "/fc2/" in n, "weight": "uint8"}
    out["fp32_encoder"] = {"keep": lambda n: n.startswith("/encoder/"), "weight": "uint8"}
    for block in (128, 32):
        out[f"blockwise_b{block}"] = {"keep": lambda n: False, "weight": f"blockwise{block}"}
    return out


def quantize_plan(fp32_path: Path, out: Path, node_names: list[str], keep, weight: str) -> tuple[list[str], int | None]:
    """Write ``out`` from ``fp32_path`` as FunASR's export does, keeping ``keep`` MatMuls fp32 too
    (``weight`` "blockwiseB": block-wise MatMulNBits instead). ``node_names``: the fp32 graph's node
    names. Returns the excluded names and, for block-wise plans, how many MatMuls were quantised
    (MatMulNBits takes only those with constant weights; None: every MatMul not excluded)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from funasr_clsr.models.clsr.export_meta import quantize_blockwise

    # importing the plugin's export routes quantize_dynamic for speech graphs to the block-wise
    # scheme (export_meta._use_speech_int8_scheme): the dynamic plans need FunASR's own function
    quantize_dynamic = getattr(quantize_dynamic, "__wrapped__", quantize_dynamic)
    exclude = [n for n in node_names if funasr_excluded(n) or keep(n)]
    if weight.startswith("blockwise"):
        return exclude, quantize_blockwise(fp32_path, out, exclude, block_size=int(weight[len("blockwise"):]))
    quantize_dynamic(model_input=str(fp32_path), model_output=str(out), op_types_to_quantize=["MatMul"],
                     per_channel=True, reduce_range=False,
                     weight_type=QuantType.QInt8 if weight == "int8" else QuantType.QUInt8,
                     nodes_to_exclude=exclude)
    return exclude, None


def markdown_table(report: dict) -> str:
    rows = ["| plan | MatMuls int8 | s / batch (median) | speed-up vs onnx fp32 | speed-up vs torch fp32 | "
            "cosine min | cosine mean | word agreement |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["plans"].items():
        rows.append(f"| {name} | {r['int8_matmuls']} / {r['matmuls']} | {bc.fmt_s(r['median_s'])} | "
                    f"{r['speedup_vs_onnx_fp32']:.2f} | {r['speedup_vs_torch_fp32']:.2f} | {r['cosine_min']:.4f} | "
                    f"{r['cosine_mean']:.4f} | {r['word_agreement']:.3f} |")
    rows += ["", f"Each plan timed interleaved with torch fp32 and onnxruntime fp32 (its own reference times in the "
                 f"JSON); a batch is {report['audio']['clips']} x {report['audio']['clip_seconds']:g} s."]
    return "\n".join(rows) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", type=Path, help="CLSR model directory (default: the mini recipe's trained "
                                              "Whisper-branch model)")
    p.add_argument("--plans", nargs="*", help="only these plans (default: all)")
    p.add_argument("--work", type=Path, help="keep the re-quantised graphs here (default: a temporary folder)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--jsonl", type=Path, default=bc.REPO / "recipes" / "mini_spoken_squad" / "data" / "full" /
                   "qa_test.jsonl", help="audio: contexts of this jsonl (default: the mini recipe's qa_test)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.threads, args.batch, args.repeats) < 1:
        p.error("--threads, --batch and --repeats must be >= 1")
    return args


def _run(args, work: Path, report: dict) -> dict:
    import onnx
    import torch
    from tqdm import tqdm

    from funasr_clsr.models.clsr.export_meta import exported_paths
    from funasr_clsr.onnx_runtime import OnnxCLSR, _session

    model_dir = args.model or trained_model_dir()
    if model_dir is None or not (Path(model_dir) / "config.yaml").is_file():
        raise bc.BenchmarkInputError(f"{model_dir}: no trained CLSR model directory (run make demo, or --model DIR)")
    report["model"] = {"dir": str(model_dir), "onnx": bc.ensure_onnx(Path(model_dir))}
    fp32_path = exported_paths(Path(model_dir), quantize=False)[0]
    nodes = onnx.load(str(fp32_path)).graph.node
    node_names = [n.name for n in nodes]
    matmuls = [n.name for n in nodes if n.op_type == "MatMul"]
    all_plans = plans(matmuls)
    chosen = args.plans or list(all_plans)
    unknown = [p for p in chosen if p not in all_plans]
    if unknown:
        raise bc.BenchmarkInputError(f"unknown plan(s) {', '.join(unknown)}; known: {', '.join(all_plans)}")
    clips, _, audio_source = bc.speech_clips(args.seconds, args.batch, args.jsonl, seed=args.seed)
    report["audio"] = {"source": audio_source, "clip_seconds": args.seconds, "clips": len(clips)}

    torch_model, _ = bc.load_model_keep_threads(Path(model_dir))
    onnx_fp32 = OnnxCLSR(model_dir, intra_op_num_threads=args.threads)
    # one plan's session at a time beside the two references (all at once took 24 GB on 8 x 40 s);
    # the plans share the references' frontend, tokens and text session, only the speech graph changes
    probe = OnnxCLSR(model_dir, intra_op_num_threads=args.threads)
    tasks = {"torch_fp32": speech_task(torch_model, clips, args.batch),
             "onnx_fp32": speech_task(onnx_fp32, clips, args.batch)}
    torch.set_num_threads(args.threads)
    report["plans"] = {}
    for name in tqdm(chosen, desc="plans", unit="plan"):
        path = work / f"{name}.onnx"
        excluded, n_int8 = quantize_plan(fp32_path, path, node_names, all_plans[name]["keep"], all_plans[name]["weight"])
        excluded = set(excluded)
        probe.speech_session = None
        probe.speech_session, _ = _session(path, args.threads)
        timings = bc.round_robin({**tasks, name: speech_task(probe, clips, args.batch)},
                                 repeats=args.repeats, warmup=args.warmup, progress=False)
        path.unlink()
        ref_vecs, ref_texts = timings["torch_fp32"]["result"]
        t = timings[name]
        vecs, texts = t["result"]
        c = cosines(vecs, ref_vecs)
        torch_s, onnx_s = timings["torch_fp32"]["median_s"], timings["onnx_fp32"]["median_s"]
        report["plans"][name] = {
            "int8_matmuls": sum(1 for m in matmuls if m not in excluded) if n_int8 is None else n_int8,
            "matmuls": len(matmuls),
            "median_s": t["median_s"], "runs_s": t["runs_s"], "torch_fp32_s": torch_s, "onnx_fp32_s": onnx_s,
            "speedup_vs_onnx_fp32": onnx_s / t["median_s"], "speedup_vs_torch_fp32": torch_s / t["median_s"],
            "cosine_min": float(c.min()), "cosine_mean": float(c.mean()),
            "word_agreement": token_agreement(texts, ref_texts),
            "meets_targets": bool(c.min() >= TARGET_COSINE and torch_s / t["median_s"] >= TARGET_SPEEDUP)}
    report["peak_rss_mb"] = bc.peak_rss_mb()
    bc.publish(report, markdown_table(report), args.markdown, args.json)
    return report


def main(argv=None) -> dict:
    return bc.run_timed_benchmark(parse_args(argv), _run, "clsr_onnx_quant_",
                                  noisy=("transformers", "funasr", "root", "onnxruntime"))


if __name__ == "__main__":
    try:
        main()
    except (bc.BenchmarkInputError, FileNotFoundError, ValueError) as exc:
        print(f"onnx_quant_sensitivity.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)

"""One attention layer three ways, on the CPU threads the indexer uses: why onnxruntime trails torch.

    python benchmarks/onnx_attention.py --json benchmarks/results/onnx_attention.json

Until 2026-12-07 the exported speech graph computed Whisper's self-attention as the TorchScript
exporter writes torch's ``scaled_dot_product_attention``: MatMul, scale, Add(padding mask), Softmax,
MatMul, each step writing the whole (windows, heads, T, T) score tensor; torch runs one fused kernel.
The export now emits the fused ``onnx_mha`` below (``export_meta._MultiHeadAttention``).
``benchmarks/onnx_speed.py --profile-ops`` shows where that costs time in the real graph; this
script times the layer alone, with the shapes of one indexing batch (8 x 40 s windows = 16
encoder windows of 1,500 frames: 8 full 30 s ones, 8 of the 10 s remainder padded), for:

* ``torch_sdpa``       torch's fused kernel, additive mask (what the torch backend runs);
* ``onnx_decomposed``  the exported op sequence above on onnxruntime;
* ``onnx_mha``         onnxruntime's fused ``com.microsoft.MultiHeadAttention`` with a key padding
  mask (what a fused export could emit), and the same op on unpadded windows (no mask).

Outputs are checked against torch on the valid rows (max abs difference reported).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as onnx_speed.py: both backends' idle threads sleep

import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402


def _session(model, threads: int):
    import onnxruntime as ort

    from funasr_clsr.onnx_runtime import session_options

    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def decomposed_graph(b: int, t: int, heads: int, dim: int):
    from onnx import TensorProto as TP
    from onnx import helper

    e = heads * dim
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Reshape", [x, "split"], [x + "_h"]) for x in "qkv"]
    nodes += [helper.make_node("Transpose", ["q_h"], ["q_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["k_h"], ["k_t"], perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", ["v_h"], ["v_t"], perm=[0, 2, 1, 3]),
              helper.make_node("MatMul", ["q_t", "k_t"], ["scores"]),
              helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
              helper.make_node("Add", ["scaled", "mask"], ["masked"]),
              helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "v_t"], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx_t", "merge"], ["y"])]
    inits = [helper.make_tensor("split", TP.INT64, [4], [b, t, heads, dim]),
             helper.make_tensor("merge", TP.INT64, [3], [b, t, e]),
             helper.make_tensor("scale", TP.FLOAT, [], [1.0 / np.sqrt(dim)])]
    inputs = [vi(x, TP.FLOAT, [b, t, e]) for x in "qkv"] + [vi("mask", TP.FLOAT, [b, 1, 1, t])]
    graph = helper.make_graph(nodes, "attention", inputs, [vi("y", TP.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def mha_graph(b: int, t: int, heads: int, dim: int, masked: bool):
    from onnx import TensorProto as TP
    from onnx import helper

    vi = helper.make_tensor_value_info
    inputs = [vi(x, TP.FLOAT, [b, t, heads * dim]) for x in "qkv"]
    names = ["q", "k", "v"]
    if masked:
        inputs.append(vi("key_padding_mask", TP.INT32, [b, t]))
        names += ["", "key_padding_mask"]  # no bias
    node = helper.make_node("MultiHeadAttention", names, ["y"], domain="com.microsoft", num_heads=heads)
    graph = helper.make_graph([node], "attention", inputs, [vi("y", TP.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    b, t, heads, dim = args.windows, args.frames, args.heads, args.head_dim
    e = heads * dim
    rng = np.random.default_rng(args.seed)
    q, k, v = (rng.standard_normal((b, t, e), dtype=np.float32) for _ in range(3))
    lengths = np.array([t] * (b - b // 2) + [args.short_frames] * (b // 2))
    keep = np.arange(t)[None, :] < lengths[:, None]
    additive = np.where(keep, 0.0, np.finfo(np.float32).min)[:, None, None, :].astype(np.float32)

    heads_of = lambda x: torch.from_numpy(x).view(b, t, heads, dim).transpose(1, 2)  # noqa: E731
    tq, tk, tv, tmask = heads_of(q), heads_of(k), heads_of(v), torch.from_numpy(additive)

    def torch_sdpa():
        with torch.no_grad():
            out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask)
        return out.transpose(1, 2).reshape(b, t, e).numpy()

    def torch_sdpa_unpadded():
        with torch.no_grad():
            return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)

    decomposed = _session(decomposed_graph(b, t, heads, dim), args.threads)
    mha = _session(mha_graph(b, t, heads, dim, masked=True), args.threads)
    mha_unpadded = _session(mha_graph(b, t, heads, dim, masked=False), args.threads)
    feeds = {"q": q, "k": k, "v": v}
    # the *_unpadded pair: every window full, so no mask is needed (their outputs are not compared)
    timings = bc.round_robin({
        "torch_sdpa": torch_sdpa,
        "onnx_decomposed": lambda: decomposed.run(None, {**feeds, "mask": additive})[0],
        "onnx_mha": lambda: mha.run(None, {**feeds, "key_padding_mask": keep.astype(np.int32)})[0],
        "onnx_mha_unpadded": lambda: mha_unpadded.run(None, feeds)[0],
        "torch_sdpa_unpadded": torch_sdpa_unpadded,
    }, repeats=args.repeats, warmup=1, progress=False)
    report = {"shape": {"windows": b, "frames": t, "heads": heads, "head_dim": dim,
                        "padded_windows": int((lengths < t).sum()), "short_frames": args.short_frames},
              "repeats": args.repeats, "machine": bc.machine_info(args.threads), "systems": {}}
    ref = timings["torch_sdpa"]["result"]
    for name, r in timings.items():
        row = {"median_ms": round(r["median_s"] * 1000, 1), "runs_ms": [round(x * 1000, 1) for x in r["runs_s"]]}
        if not name.endswith("_unpadded"):
            row["max_abs_diff_vs_torch"] = float(np.abs((r["result"] - ref) * keep[:, :, None]).max())
        report["systems"][name] = row
    return report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=16, help="encoder windows in the batch (default 16)")
    p.add_argument("--frames", type=int, default=1500, help="frames per window (Whisper: 1,500 per 30 s)")
    p.add_argument("--short-frames", type=int, default=500, help="valid frames of the padded half (10 s: 500)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    if min(args.windows, args.frames, args.short_frames, args.heads, args.head_dim, args.threads, args.repeats) <= 0:
        p.error("sizes, --threads and --repeats must be positive")
    if args.short_frames > args.frames:
        p.error("--short-frames must be at most --frames")
    report = run(args)
    report["command"] = "python benchmarks/onnx_attention.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for name, r in report["systems"].items():
        extra = f", max |diff| vs torch {r['max_abs_diff_vs_torch']:.1e}" if "max_abs_diff_vs_torch" in r else ""
        print(f"{name:20s} {r['median_ms']:8.1f} ms{extra}")
    bc.write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()

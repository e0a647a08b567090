"""Resident memory and speed of OnnxCLSR's speech runs with and without onnxruntime's arena shrinkage.

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE python benchmarks/onnx_arena_shrink.py \
        --model recipes/mini_spoken_squad/exp/quick/model --json benchmarks/results/onnx_arena_shrink.json

8 contexts of the recipe's qa_test, each tiled to 40 s, encoded as one batch of 8 (as indexing does),
alternately without and with ``memory.enable_memory_arena_shrinkage`` (what OnnxCLSR sets), twice
each in one process; reported: seconds and resident memory after each run.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import soundfile as sf


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="recipes/mini_spoken_squad/exp/quick/model")
    p.add_argument("--jsonl", default="recipes/mini_spoken_squad/data/quick/qa_test.jsonl")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    from funasr_clsr.onnx_runtime import OnnxCLSR

    clips, seen = [], set()
    with open(args.jsonl, encoding="utf-8") as f:
        for line in f:
            path = json.loads(line)["source"]
            if path in seen:
                continue
            seen.add(path)
            audio, sr = sf.read(path, dtype="float32")
            clips.append(np.tile(audio, int(np.ceil(40 * sr / len(audio))))[: 40 * sr])
            if len(clips) == 8:
                break
    model = OnnxCLSR(args.model, quantize="text")
    shrink = model._shrink_arena
    runs = []
    for name, opts in (("no_shrink", None), ("shrink", shrink), ("no_shrink", None), ("shrink", shrink)):
        model._shrink_arena = opts
        t0 = time.perf_counter()
        model.encode_speech(clips, batch_size=8)
        runs.append({"run": name, "s": round(time.perf_counter() - t0, 2), "rss_after_mb": round(rss_mb())})
    report = {"command": "python benchmarks/onnx_arena_shrink.py " + " ".join(argv or []), "model": args.model,
              "clips": len(clips), "runs": runs}
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

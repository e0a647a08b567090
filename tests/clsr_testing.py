"""Test helpers: a tiny CLSR built from conf/clsr_tiny.yaml and synthetic paired audio."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TINY_TE = REPO / "tests" / "fixtures" / "tiny_text_encoder"
TINY_CONF = REPO / "conf" / "clsr_tiny.yaml"


def load_script(path: Path, name: str):
    """A Python file outside the package (a benchmark, a recipe's local/ script) as module ``name``,
    registered in sys.modules first (dataclasses and pickle look a module up there)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (its folder on sys.path for ``import bench_common``)."""
    import sys

    bench = REPO / "benchmarks"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    return load_script(bench / f"{name}.py", f"bench_{name}")

# Eight context "sentences" over the tiny vocabulary and a question for each.
CONTEXTS = [
    "the king of the city", "a river in a war", "music at church", "school law",
    "team game this year", "one two three", "four and five", "his her their",
]
QUESTIONS = [
    "who was the king of the city", "which river was in the war", "what music was at church",
    "what is school law", "which team game this year", "which one two three", "four and five were",
    "his her and their",
]


def tiny_config(frontend_cmvn: str | None = None, conf: Path = TINY_CONF, **model_conf) -> dict:
    """``conf`` (default the tiny CLSR) pointed at the tiny text encoder, its vocabulary and ``frontend_cmvn``."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(conf))
    cfg["model_conf"]["text_encoder_conf"]["path"] = str(TINY_TE)
    cfg["tokenizer_conf"]["token_list"] = str(TINY_TE / "vocab.txt")
    cfg["model_conf"].update(model_conf)
    if frontend_cmvn:
        cfg["frontend_conf"]["cmvn_file"] = str(frontend_cmvn)
    return cfg


def build_tiny(seed: int = 0, frontend_cmvn: str | None = None, **model_conf):
    """funasr.AutoModel around a tiny CLSR, built from config the way training builds it."""
    import torch
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    torch.manual_seed(seed)
    # AutoModel reseeds torch with its own "seed" right before building the model
    return AutoModel(**tiny_config(frontend_cmvn, **model_conf), device="cpu", disable_update=True, log_level="ERROR",
                     seed=seed)


def tone_speech(text: str, sr: int = 16000, seconds_per_char: float = 0.06, seed: int = 0) -> np.ndarray:
    """Deterministic 'speech': one tone per character (pitch from the character), silence between words."""
    rng = np.random.default_rng(seed)
    out = [np.zeros(int(0.1 * sr), np.float32)]
    n = int(seconds_per_char * sr)
    t = np.arange(n) / sr
    for ch in text:
        if ch == " ":
            out.append(np.zeros(int(0.05 * sr), np.float32))
            continue
        # two-tone code per character (like DTMF): distinct and easy to learn
        k = (ord(ch) - 32) % 64
        f1, f2 = 250.0 + 110.0 * (k // 8), 1300.0 + 230.0 * (k % 8)
        tone = 0.25 * np.sin(2 * np.pi * f1 * t) + 0.25 * np.sin(2 * np.pi * f2 * t)
        out.append((tone * np.hanning(n)).astype(np.float32))
    out.append(np.zeros(int(0.1 * sr), np.float32))
    wav = np.concatenate(out)
    return (wav + 0.003 * rng.standard_normal(len(wav))).astype(np.float32)




def training_batch(am, jsonl) -> dict:
    """All pairs of a jsonl as one training batch, through the registered dataset class."""
    from funasr_clsr.datasets.qa_dataset import AudioQADataset

    ds = AudioQADataset(str(jsonl), index_ds="IndexDSJsonlQA", frontend=am.kwargs["frontend"],
                        tokenizer=am.kwargs["tokenizer"])
    return ds.collator([ds[i] for i in range(len(ds))])


def train_nce(model, batch, steps: int, lr: float) -> list[float]:
    """Adam steps on one batch over the trainable parameters; the InfoNCE loss of each (model left in eval)."""
    import torch

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    nce = []
    for _ in range(steps):
        model.train()
        loss, stats, _ = model(**batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        nce.append(float(stats["loss_nce"]))
    model.eval()
    return nce


def recall_at_1(q, c) -> float:
    """Share of rows of q whose most similar row of c is the one at the same index."""
    import torch

    return float(((q @ c.t()).argmax(1) == torch.arange(len(q))).float().mean())


def tiny_cmvn(path) -> Path:
    """am.mvn over the contexts' tone speech, written by the package's own CMVN code."""
    from funasr_clsr.bin.compute_cmvn import DEFAULT_FRONTEND, compute_stats, write_am_mvn

    mean, std, _ = compute_stats([tone_speech(c, seed=i) for i, c in enumerate(CONTEXTS)], DEFAULT_FRONTEND)
    write_am_mvn(Path(path), mean, std)
    return Path(path)


def export_tiny_model_dir(root) -> Path:
    """An untrained tiny CLSR exported as a model directory ``root/model`` (with ``root/am.mvn``)."""
    from funasr_clsr.export import export_model_dir

    cmvn = tiny_cmvn(Path(root) / "am.mvn")
    am = build_tiny(frontend_cmvn=str(cmvn))
    return export_model_dir(tiny_config(str(cmvn)), am.model, Path(root) / "model")


def window_clip(i: int, window_s: float, sr: int = 16000) -> np.ndarray:
    """Context ``i``'s tone speech zero-padded to exactly one window of ``window_s`` seconds."""
    x = tone_speech(CONTEXTS[i], seed=i)
    assert len(x) < window_s * sr
    return np.pad(x, (0, int(window_s * sr) - len(x)))


# Secrets the tests hand to the code (a ModelScope token, server API keys). After the whole run,
# conftest.py checks that none of them was written to any file under pytest's temporary directory
# (logs, configs, exported model directories, indexes, uploads): issue 12, "grep them".
SECRET_CANARIES = {"ModelScope token": "ms-SECRET-7f3a9c-token", "server API key": "test-key-5f1c9a7e",
                   "browser test API key": "browser-key-93b1"}


def find_secret_leaks(root, canaries=SECRET_CANARIES) -> list[str]:
    """``"<file>: <secret name>"`` for every regular file under ``root`` that holds a canary's bytes."""
    leaks = []
    needles = {name: value.encode() for name, value in canaries.items()}
    for path in sorted(Path(root).rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        leaks += [f"{path}: {name}" for name, needle in needles.items() if needle in data]
    return leaks

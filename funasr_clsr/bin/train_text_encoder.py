"""Fine-tune the text encoder on clean question-context pairs (text-side pre-training).

    python -m funasr_clsr.bin.train_text_encoder --pairs pairs.jsonl --text-encoder DIR --out DIR \
        [--epochs 1 --batch-size 32 --lr 2e-5 --temperature 0.02 --max-length N \
         --query-instruction STR --hard-negatives 7 --symmetric --resume]

``pairs.jsonl`` is FlagEmbedding's fine-tuning format, one object per line:
``{"query": str, "pos": [str, ...], "neg": [str, ...]}`` (``neg`` optional).

Training runs through FlagEmbedding 1.4.2's own fine-tuning API (``EncoderOnlyEmbedderRunner``,
a Hugging Face ``Trainer``), which works on CPU and offline.  Four things are added around it:

* the loader builds a config-only folder (no weights, like ``tests/fixtures/tiny_text_encoder``)
  from its config, so such a folder can be trained and is then saved *with* weights;
* ``--symmetric`` adds the context->question direction to FlagEmbedding's query->passage InfoNCE
  (the CLSR paper's joint loss is symmetric), through the model's ``compute_loss`` hook;
* the output is a complete sentence-transformers folder (weights, tokenizer, ``modules.json``,
  ``1_Pooling/config.json``, ``sentence_bert_config.json``) with the source model's pooling, so
  ``funasr_clsr.text_encoder.TextEncoder`` and ``SentenceTransformer`` both load it;
* resuming works: FlagEmbedding's checkpoints hold the inner encoder's weights, which the stock
  ``Trainer`` cannot load back (FlagEmbedding issues #183, #1034); the trainer here loads them.

Loss: in-batch negatives, plus up to ``--hard-negatives`` entries of ``neg`` per query (a query
without ``neg`` gets other pairs' positives instead, so every query has the same group size, which
FlagEmbedding requires).  A checkpoint is written every epoch (``OUT/checkpoint-STEP``, the latest
kept); ``--resume`` continues from it, also to train for more epochs.  ``OUT/train_text_encoder.json``
records the run; rerunning a finished command is a no-op.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

STATE_FILE = "train_text_encoder.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Settings that must not change when a run is resumed (epochs may grow).
RESUME_KEYS = ("pairs_sha256", "source", "batch_size", "lr", "temperature", "max_length",
               "query_max_length", "query_instruction", "group_size", "symmetric", "seed",
               "warmup_ratio", "weight_decay")

log = logging.getLogger("train_text_encoder")


class PairsError(ValueError):
    """The pairs file is empty or has a malformed line."""


class OutDirError(ValueError):
    """The output folder holds something this run must not overwrite."""


# --------------------------------------------------------------------------- data


def read_pairs(path: str | os.PathLike) -> list[dict]:
    """Validated ``{"query", "pos", "neg"}`` records; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pairs file not found")
    pairs = []
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{ln}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise PairsError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise PairsError(f"{where}: expected a JSON object with query/pos/neg")
            q = obj.get("query")
            if not isinstance(q, str) or not q.strip():
                raise PairsError(f"{where}: 'query' must be a non-empty string")
            pos = obj.get("pos")
            if isinstance(pos, str):
                pos = [pos]
            if not isinstance(pos, list) or not pos or not all(isinstance(p, str) and p.strip() for p in pos):
                raise PairsError(f"{where}: 'pos' must be a non-empty list of non-empty strings")
            neg = obj.get("neg", [])
            if neg is None:
                neg = []
            if not isinstance(neg, list) or not all(isinstance(n, str) and n.strip() for n in neg):
                raise PairsError(f"{where}: 'neg' must be a list of non-empty strings")
            pairs.append({"query": q, "pos": pos, "neg": neg})
    if not pairs:
        raise PairsError(f"{path}: no pairs (the file is empty)")
    return pairs


def group_negatives(pairs: list[dict], hard_negatives: int, seed: int = 0) -> tuple[list[dict], int]:
    """Give every pair the same number of negatives; returns (pairs, group size = 1 + negatives).

    FlagEmbedding draws ``group_size - 1`` negatives per query (with repeats when a list is short)
    and fails on an empty list, so queries without ``neg`` borrow other pairs' positives.
    """
    n_neg = min(max(hard_negatives, 0), max(len(p["neg"]) for p in pairs))
    if n_neg == 0:
        return [{**p, "neg": []} for p in pairs], 1
    rng = random.Random(seed)
    out, filled = [], 0
    for i, p in enumerate(pairs):
        neg = list(p["neg"])
        if not neg:
            own = set(p["pos"])
            others = [j for j in range(len(pairs)) if j != i]
            rng.shuffle(others)
            neg = [pairs[j]["pos"][0] for j in others if pairs[j]["pos"][0] not in own][:n_neg]
            filled += 1
            if not neg:
                raise PairsError("hard negatives asked for, but no other pair has a different positive")
        out.append({**p, "neg": neg})
    if filled:
        log.info("%d of %d queries have no 'neg': they get other pairs' positives as negatives", filled, len(pairs))
    return out, 1 + n_neg


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- model folder


def source_max_length(folder: Path) -> int:
    """sentence-transformers' max_seq_length when the folder has one, else the position limit (<= 512)."""
    cfg = json.loads((folder / "config.json").read_text())
    limit = int(cfg.get("max_position_embeddings", 512))
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        msl = json.loads(st.read_text()).get("max_seq_length")
        if msl:
            return min(int(msl), limit)
    return min(512, limit)


def write_sentence_transformers_files(src: Path, out: Path, pooling: str, hidden: int, max_length: int,
                                      query_instruction: str | None) -> None:
    """modules.json, 1_Pooling/config.json and friends: the source's, else the standard ones."""
    pool_dir = out / "1_Pooling"
    pool_dir.mkdir(parents=True, exist_ok=True)
    if (src / "1_Pooling" / "config.json").is_file():
        shutil.copy2(src / "1_Pooling" / "config.json", pool_dir / "config.json")
    else:
        (pool_dir / "config.json").write_text(json.dumps({
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }, indent=2) + "\n")
    if (src / "modules.json").is_file():
        shutil.copy2(src / "modules.json", out / "modules.json")
    else:  # the encoder is trained on unit vectors: keep the Normalize step
        (out / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ], indent=2) + "\n")
    st_cfg = {}
    if (src / "sentence_bert_config.json").is_file():
        st_cfg = json.loads((src / "sentence_bert_config.json").read_text())
    st_cfg.update({"max_seq_length": max_length, "do_lower_case": bool(st_cfg.get("do_lower_case", False))})
    (out / "sentence_bert_config.json").write_text(json.dumps(st_cfg, indent=2) + "\n")
    cst = {}
    if (src / "config_sentence_transformers.json").is_file():
        cst = json.loads((src / "config_sentence_transformers.json").read_text())
    if query_instruction:
        cst.setdefault("prompts", {})["query"] = query_instruction
    if cst:
        (out / "config_sentence_transformers.json").write_text(json.dumps(cst, indent=2) + "\n")
    for f in out.iterdir():  # safetensors writes 0600 files; a shared model folder should be readable
        if f.is_file():
            f.chmod(0o644)


def latest_checkpoint(out: Path) -> Path | None:
    best = None
    for d in out.glob("checkpoint-*"):
        try:
            step = int(d.name.split("-", 1)[1])
        except ValueError:
            continue
        if (d / "trainer_state.json").is_file() and (best is None or step > best[0]):
            best = (step, d)
    return best[1] if best else None


# --------------------------------------------------------------------------- FlagEmbedding glue


@functools.lru_cache(maxsize=None)
def flag_classes():
    """(Runner, Model): subclasses of FlagEmbedding's encoder-only runner and model (lazy: heavy imports)."""
    import torch
    from FlagEmbedding.finetune.embedder.encoder_only.base import (
        BiEncoderOnlyEmbedderModel,
        EncoderOnlyEmbedderRunner,
        EncoderOnlyEmbedderTrainer,
    )
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    class Model(BiEncoderOnlyEmbedderModel):
        """FlagEmbedding's bi-encoder; ``symmetric`` adds the passage->query InfoNCE term."""

        symmetric = False

        def compute_loss(self, scores, target):
            loss = super().compute_loss(scores, target)
            b = scores.size(0)
            if not self.symmetric or b == 0 or scores.size(1) % b:
                return loss
            group = scores.size(1) // b
            expected = torch.arange(b, device=scores.device) * group
            if target.shape != expected.shape or not torch.equal(target, expected):
                return loss  # not the in-batch layout (e.g. no-in-batch-negatives mode)
            to_query = scores[:, target].t()  # (positive passages, queries)
            back = self.cross_entropy(to_query, torch.arange(b, device=scores.device))
            return 0.5 * (loss + back)

    class Trainer(EncoderOnlyEmbedderTrainer):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # FlagEmbedding checkpoints hold the inner encoder's save_pretrained() weights, which the
            # stock Trainer loads into the wrapper (no key matches; FlagEmbedding issues #183, #1034):
            # load them into the encoder itself, strictly.  Optimizer, scheduler, RNG and trainer state
            # are restored by the Trainer as usual.
            encoder = (model if model is not None else self.model).model
            ckpt = Path(resume_from_checkpoint)
            if (ckpt / "model.safetensors").is_file():
                from safetensors.torch import load_file

                weights = load_file(str(ckpt / "model.safetensors"), device="cpu")
            elif (ckpt / "pytorch_model.bin").is_file():
                weights = torch.load(ckpt / "pytorch_model.bin", map_location="cpu", weights_only=True)
            else:
                raise OutDirError(f"{ckpt}: checkpoint has no model weights; delete it to restart that epoch")
            missing, unexpected = encoder.load_state_dict(weights, strict=False)
            if missing or unexpected:
                raise OutDirError(f"{ckpt}: checkpoint does not fit the encoder (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")

    class Runner(EncoderOnlyEmbedderRunner):
        symmetric = False

        def load_trainer(self):
            return Trainer(model=self.model, args=self.training_args, train_dataset=self.train_dataset,
                           data_collator=self.data_collator, processing_class=self.tokenizer)

        def load_tokenizer_and_model(self):
            folder = self.model_args.model_name_or_path
            tokenizer = AutoTokenizer.from_pretrained(folder)
            if any((Path(folder) / f).is_file() for f in WEIGHT_FILES):
                base = AutoModel.from_pretrained(folder)
            else:  # a config-only folder: random init (seeded by the runner), saved with weights
                log.warning("%s has no weights: training from a random init built from config.json", folder)
                base = AutoModel.from_config(AutoConfig.from_pretrained(folder), add_pooling_layer=False)
            ta = self.training_args
            model = Model(base, tokenizer=tokenizer, negatives_cross_device=ta.negatives_cross_device,
                          temperature=ta.temperature, sub_batch_size=ta.sub_batch_size,
                          sentence_pooling_method=ta.sentence_pooling_method,
                          normalize_embeddings=ta.normalize_embeddings)
            model.symmetric = self.symmetric
            return tokenizer, model

    return Runner, Model


# --------------------------------------------------------------------------- main


def _read_state(out: Path) -> dict | None:
    p = out / STATE_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        raise OutDirError(f"{p}: unreadable run record; move {out} away or choose another --out") from None


def _write_state(out: Path, state: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(out / STATE_FILE)


def plan_run(out: Path, config: dict, epochs: int, resume: bool) -> tuple[str, Path | None]:
    """('done' | 'fresh' | 'resume', checkpoint): decide without ever overwriting finished work."""
    state = _read_state(out)
    ckpt = latest_checkpoint(out) if out.is_dir() else None
    if state is None:
        if out.is_dir() and any(out.iterdir()):
            raise OutDirError(f"{out}: not empty and not an earlier train_text_encoder run; choose another --out")
        return "fresh", None
    changed = [k for k in RESUME_KEYS if state.get("config", {}).get(k) != config.get(k)]
    if state.get("complete") and state.get("epochs") == epochs and not changed:
        return "done", None
    if not resume:
        raise OutDirError(f"{out}: holds an earlier run ({state.get('epochs_done', 0)} of {state.get('epochs')} "
                          "epochs); pass --resume to continue it, or choose another --out")
    if changed:
        raise OutDirError(f"{out}: cannot resume, settings differ from the earlier run: {', '.join(changed)}")
    done = int(state.get("epochs_done", 0))
    if epochs < done:
        raise OutDirError(f"{out}: already trained {done} epochs; --epochs {epochs} cannot undo that")
    if ckpt is None:
        if done or state.get("complete"):  # finished epochs but their checkpoint is gone: never retrain over them
            raise OutDirError(f"{out}: {done} epochs done but no checkpoint-* left to continue from; "
                              "choose another --out (or train further with --text-encoder pointing at it)")
        return "fresh", None  # interrupted before the first checkpoint: nothing to lose
    return "resume", ckpt


def train(args: argparse.Namespace) -> dict:
    from funasr_clsr.text_encoder import read_pooling, resolve_text_encoder_dir

    pairs = read_pairs(args.pairs)
    src = Path(args.text_encoder)
    if not (src / "config.json").is_file():
        if not src.exists():
            raise FileNotFoundError(f"{src}: text encoder folder not found")
        src = resolve_text_encoder_dir(str(src))
    src = src.resolve()
    if not (src / "vocab.txt").is_file():
        raise FileNotFoundError(f"{src}: no vocab.txt (a BERT-like WordPiece encoder folder is needed)")
    out = Path(args.out).resolve()
    if out == src:
        raise OutDirError(f"{out}: --out must differ from --text-encoder")
    pooling = read_pooling(src)
    limit = int(json.loads((src / "config.json").read_text()).get("max_position_embeddings", 512))
    max_length = args.max_length or source_max_length(src)
    query_max_length = args.query_max_length or max_length
    for name, v in (("--max-length", max_length), ("--query-max-length", query_max_length)):
        if not 2 < v <= limit:
            raise ValueError(f"{name} {v} must be in 3..{limit} (the encoder's position limit)")
    for name, v in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if not (args.temperature > 0 and args.lr > 0):
        raise ValueError("--temperature and --lr must be > 0")
    grouped, group_size = group_negatives(pairs, args.hard_negatives, args.seed)
    config = {
        "pairs": str(Path(args.pairs).resolve()), "pairs_sha256": file_sha256(args.pairs), "source": str(src),
        "pooling": pooling, "batch_size": args.batch_size, "lr": args.lr, "temperature": args.temperature,
        "max_length": max_length, "query_max_length": query_max_length,
        "query_instruction": args.query_instruction or None, "group_size": group_size,
        "symmetric": bool(args.symmetric), "seed": args.seed, "warmup_ratio": args.warmup_ratio,
        "weight_decay": args.weight_decay,
    }
    mode, ckpt = plan_run(out, config, args.epochs, args.resume)
    if mode == "done":
        state = _read_state(out)
        log.info("%s: already trained %d epochs; nothing to do", out, state["epochs"])
        return state
    if mode == "fresh" and out.is_dir():  # only our record of a run that never checkpointed
        (out / STATE_FILE).unlink(missing_ok=True)
    prev = _read_state(out) or {}
    state = {"complete": False, "epochs": args.epochs, "epochs_done": prev.get("epochs_done", 0),
             "pairs": len(pairs), "config": config, "backend": "FlagEmbedding EncoderOnlyEmbedderRunner"}
    _write_state(out, state)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="train_text_encoder_") as tmp:
        data = Path(tmp) / "pairs.jsonl"
        data.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in grouped), encoding="utf-8")
        trainer = _build_trainer(args, src, out, data, Path(tmp) / "cache", pooling, group_size,
                                 max_length, query_max_length)
        trainer.add_callback(_epoch_recorder(out, state))
        if ckpt is not None:
            log.info("resuming from %s", ckpt)
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
        trainer.save_model(str(out))
        history = trainer.state.log_history
    hidden = json.loads((src / "config.json").read_text()).get("hidden_size")
    write_sentence_transformers_files(src, out, pooling, hidden, max_length, args.query_instruction)
    losses = [round(float(h["loss"]), 5) for h in history if "loss" in h and "epoch" in h]
    state.update({"complete": True, "epochs_done": args.epochs, "loss_per_epoch": losses,
                  "steps": trainer.state.global_step, "resumed_from": ckpt.name if ckpt else None,
                  "seconds_this_run": round(time.time() - t0, 1)})
    _write_state(out, state)
    return state


def _epoch_recorder(out: Path, state: dict):
    """Keeps OUT/train_text_encoder.json's epochs_done in step with the per-epoch checkpoints."""
    from transformers import TrainerCallback

    class EpochRecorder(TrainerCallback):
        def on_save(self, args, trainer_state, control, **kwargs):
            state["epochs_done"] = int(round(trainer_state.epoch or 0))
            _write_state(out, state)

    return EpochRecorder()


def _build_trainer(args, src: Path, out: Path, data: Path, cache: Path, pooling: str, group_size: int,
                   max_length: int, query_max_length: int):
    from FlagEmbedding.finetune.embedder.encoder_only.base import (
        EncoderOnlyEmbedderDataArguments,
        EncoderOnlyEmbedderModelArguments,
        EncoderOnlyEmbedderTrainingArguments,
    )

    import torch

    logging.getLogger("FlagEmbedding").setLevel(logging.WARNING)  # it logs every argument at INFO
    Runner, _ = flag_classes()
    Runner.symmetric = bool(args.symmetric)
    model_args = EncoderOnlyEmbedderModelArguments(model_name_or_path=str(src))
    data_args = EncoderOnlyEmbedderDataArguments(
        train_data=[str(data)], cache_path=str(cache), train_group_size=group_size,
        query_max_len=query_max_length, passage_max_len=max_length,
        query_instruction_for_retrieval=args.query_instruction or None, query_instruction_format="{}{}")
    training_args = EncoderOnlyEmbedderTrainingArguments(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
        lr_scheduler_type="linear", temperature=args.temperature, sentence_pooling_method=pooling,
        normalize_embeddings=True, save_strategy="epoch", save_total_limit=1, logging_strategy="epoch",
        report_to="none", seed=args.seed, data_seed=args.seed, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(), disable_tqdm=False)
    return Runner(model_args=model_args, data_args=data_args, training_args=training_args).trainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m funasr_clsr.bin.train_text_encoder",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", required=True, help='jsonl of {"query": str, "pos": [str], "neg": [str]}')
    ap.add_argument("--text-encoder", required=True, help="source encoder folder (BERT-like, sentence-transformers)")
    ap.add_argument("--out", required=True, help="output folder (complete model + checkpoints)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32, help="queries per batch (in-batch negatives)")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--temperature", type=float, default=0.02)
    ap.add_argument("--max-length", type=int, help="passage tokens (default: the source's max_seq_length)")
    ap.add_argument("--query-max-length", type=int, help="query tokens (default: --max-length)")
    ap.add_argument("--query-instruction", help="prefix added to every query (BGE-style instruction)")
    ap.add_argument("--hard-negatives", type=int, default=7, help="max 'neg' entries per query (0: in-batch only)")
    ap.add_argument("--symmetric", action="store_true",
                    help="add the context->question InfoNCE term (the paper's joint loss is symmetric)")
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run (or train more epochs)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout stays JSON
            state = train(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(state, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

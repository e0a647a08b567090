"""A BERT-like sentence encoder (BGE, all-MiniLM-L6-v2, ...) loaded from a local folder.

The folder is a Hugging Face / sentence-transformers model directory: ``config.json``,
``vocab.txt``, optionally weights (``model.safetensors`` / ``pytorch_model.bin``) and
``1_Pooling/config.json``. A folder without weights is refused unless the caller asks for a
random init (``load_weights=False``): that is how exported CLSR models carry it, its weights
living in ``model.pt`` next to the rest of the model, which the model loader fills in.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from funasr_clsr.tokenizer import WordPieceTokenizer

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Files an exported model keeps of its text encoder (weights go into model.pt).
CONFIG_FILES = ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                "sentence_bert_config.json", "modules.json", "config_sentence_transformers.json")


def resolve_text_encoder_dir(path: str, base_dir: str | None = None) -> Path:
    """A local folder for ``path``: as given, relative to ``base_dir``, or from a hub cache.

    Hub ids (``BAAI/bge-base-en-v1.5``) are fetched with ModelScope first, then the
    Hugging Face hub; offline, this fails with one line saying what to pass instead.
    """
    candidates = [Path(path).expanduser()]
    if base_dir and not Path(path).is_absolute():
        candidates.insert(0, Path(base_dir) / path)
    for cand in candidates:
        if (cand / "config.json").is_file():
            return cand.resolve()
    errors = []
    if "/" in path and not Path(path).exists():
        try:
            from modelscope.hub.snapshot_download import snapshot_download

            local = snapshot_download(path)
            if (Path(local) / "config.json").is_file():
                return Path(local)
        except Exception as exc:  # network or unknown id
            errors.append(f"modelscope: {type(exc).__name__}")
        try:
            from huggingface_hub import snapshot_download as hf_download

            local = hf_download(path)
            if (Path(local) / "config.json").is_file():
                return Path(local)
        except Exception as exc:
            errors.append(f"huggingface: {type(exc).__name__}")
    raise FileNotFoundError(
        f"text encoder '{path}' is neither a local model folder with config.json nor downloadable "
        f"({'; '.join(errors) or 'not a hub id'}); pass ++model_conf.text_encoder_conf.path=<local dir>")


def read_pooling(folder: Path) -> str:
    """'cls' or 'mean' from sentence-transformers' 1_Pooling/config.json (BGE: cls).

    Without that file the pooling is unknown (BGE uses CLS, MiniLM mean; guessing wrong gives a
    working-looking but poor encoder), so the caller must say: ``text_encoder_conf.pooling``.
    """
    cfg = folder / "1_Pooling" / "config.json"
    if cfg.is_file():
        pooling = json.loads(cfg.read_text())
        if pooling.get("pooling_mode_cls_token"):
            return "cls"
        if pooling.get("pooling_mode_mean_tokens"):
            return "mean"
        raise ValueError(f"{cfg}: unsupported pooling {pooling}; CLSR supports CLS and mean pooling")
    raise ValueError(f"text encoder {folder} has no 1_Pooling/config.json, so its pooling is unknown: "
                     "set text_encoder_conf.pooling to cls (BGE) or mean (all-MiniLM)")


def read_max_seq_length(folder: Path) -> int | None:
    """sentence-transformers' ``max_seq_length`` (sentence_bert_config.json): the length it was trained at."""
    cfg = folder / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


def read_lowercase(folder: Path) -> bool:
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        return bool(json.loads(cfg.read_text()).get("do_lower_case", True))
    return True


class TextEncoder(nn.Module):
    """Sentence vectors (L2-normalised) from token ids or from ``inputs_embeds``."""

    def __init__(self, path: str, pooling: str = "auto", max_length: int | None = None,
                 load_weights: bool = True, query_instruction: str | None = None,
                 base_dir: str | None = None, **kwargs):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        folder = resolve_text_encoder_dir(str(path), base_dir)
        self.folder = folder
        config = AutoConfig.from_pretrained(folder)
        vocab = folder / "vocab.txt"
        if not vocab.is_file():
            raise FileNotFoundError(f"text encoder {folder} has no vocab.txt (CLSR needs a WordPiece vocabulary)")
        self.tokenizer = WordPieceTokenizer(vocab, do_lower_case=read_lowercase(folder))
        if len(self.tokenizer.token_list) != config.vocab_size:
            raise ValueError(f"text encoder {folder}: vocab.txt has {len(self.tokenizer.token_list)} tokens "
                             f"but config.json says vocab_size={config.vocab_size}")
        has_weights = any((folder / f).is_file() for f in WEIGHT_FILES)
        if load_weights and not has_weights:
            raise FileNotFoundError(
                f"text encoder {folder} has no weights ({' or '.join(WEIGHT_FILES)}); an exported CLSR model's "
                "text_encoder/ keeps only its configuration (the weights are in model.pt): pass the original "
                "text encoder folder, or load the model directory itself")
        if load_weights:
            self.model = AutoModel.from_pretrained(folder, config=config, add_pooling_layer=False)
        else:  # the caller fills the weights (a model directory's model.pt)
            self.model = AutoModel.from_config(config, add_pooling_layer=False)
        self.loaded_pretrained = bool(load_weights and has_weights)
        self.pooling = read_pooling(folder) if pooling == "auto" else pooling
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be auto, cls or mean, not {pooling!r}")
        self.max_length = int(max_length or read_max_seq_length(folder) or config.max_position_embeddings)
        self.query_instruction = query_instruction or ""

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def word_embeddings(self) -> torch.Tensor:
        """The (V, H) input word-embedding matrix W_te."""
        return self.model.get_input_embeddings().weight

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            vec = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return F.normalize(vec, dim=-1)

    def forward_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode a text-like embedding sequence that already holds [CLS]/[SEP] rows."""
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask.long())
        return self.pool(out.last_hidden_state, attention_mask)

    def forward_ids(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=attention_mask.long())
        return self.pool(out.last_hidden_state, attention_mask)

    def tokenize(self, texts: Sequence[str], is_query: bool = False):
        """Padded (ids, mask) tensors with [CLS]/[SEP], truncated to max_length."""
        if is_query and self.query_instruction:
            texts = [self.query_instruction + t for t in texts]
        ids, lengths = self.tokenizer.batch_encode(texts, self.max_length)
        width = max(lengths)
        device = self.word_embeddings.device
        id_tensor = torch.full((len(ids), width), self.tokenizer.pad_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            id_tensor[row, : len(seq)] = torch.tensor(seq)
        mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
        return id_tensor.to(device), mask.to(device)

    def encode(self, texts: Sequence[str], is_query: bool = False, batch_size: int = 64) -> torch.Tensor:
        vecs = []
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[start:start + batch_size], is_query=is_query)
            vecs.append(self.forward_ids(ids, mask))
        return torch.cat(vecs) if vecs else torch.empty(0, self.hidden_size)

    def save_config(self, out_dir: str | os.PathLike) -> Path:
        """Copy the folder's configuration (no weights) for a self-contained model directory."""
        import shutil

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in CONFIG_FILES:
            if (self.folder / name).is_file():
                shutil.copy2(self.folder / name, out / name)
        pool_dir = out / "1_Pooling"
        pool_dir.mkdir(exist_ok=True)
        (pool_dir / "config.json").write_text(json.dumps({
            "word_embedding_dimension": self.hidden_size,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
        }, indent=2))
        return out


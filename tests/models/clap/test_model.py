"""CLAP-style baseline: audio encoder, projection heads, temperature, learning, export round trip, bad input."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from clsr_testing import QUESTIONS, REPO, TINY_TE, tiny_config, recall_at_1, train_nce, training_batch

CONF = REPO / "conf" / "clap_tiny.yaml"


def clap_config(cmvn=None, **model_conf) -> dict:
    return tiny_config(cmvn, conf=CONF, **model_conf)


def build(cmvn=None, seed: int = 0, cfg: dict | None = None, **model_conf):
    """AutoModel around a tiny CLAPStyle, built from config the way training builds it."""
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    cfg = cfg or clap_config(cmvn, **model_conf)
    return AutoModel(**cfg, seed=seed, device="cpu", disable_update=True, log_level="ERROR")


@pytest.fixture(scope="module")
def tiny(cmvn):
    return build(cmvn)


def test_registered_with_its_audio_encoder_and_projection_heads(tiny):
    from funasr.register import tables

    m = tiny.model
    assert tables.model_classes["CLAPStyle"] is type(m)
    assert type(m.encoder) is tables.encoder_classes["CLAPAudioEncoder"]
    assert m.audio_proj.net[0].in_features == 64 and m.text_proj.net[0].in_features == m.text_encoder.hidden_size
    assert m.logit_scale.requires_grad and math.isclose(float(m.temperature.detach()), 0.07, rel_tol=1e-5)
    assert not hasattr(m, "transcribe")


def test_audio_encoder_subsamples_and_ignores_padding():
    from funasr_clsr.models.clap.model import CLAPAudioEncoder

    torch.manual_seed(0)
    enc = CLAPAudioEncoder(input_size=20, output_size=16, conv_layers=2, attention_heads=2, linear_units=32,
                           num_blocks=2, dropout_rate=0.0).eval()
    x = torch.randn(2, 41, 20)
    out, lens, _ = enc(x, torch.tensor([41, 17]))
    assert out.shape == (2, 11, 16) and lens.tolist() == [11, 5]  # 41 -> 21 -> 11, 17 -> 9 -> 5
    alone, alone_lens, _ = enc(x[1:, :17], torch.tensor([17]))
    assert alone_lens.tolist() == [5]
    assert torch.allclose(out[1, :5], alone[0], atol=1e-5)  # padding frames change nothing


def test_frozen_text_encoder_but_trainable_heads_and_temperature(cmvn, pair_dir):
    am = build(cmvn)
    m = am.model.train()
    assert not m.text_encoder.training and m.encoder.training
    before = {k: v.clone() for k, v in m.text_encoder.state_dict().items()}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    loss, stats, weight = m(**training_batch(am, pair_dir / "text_q.jsonl"))
    assert set(stats) >= {"loss", "loss_nce", "r1_q2c", "temperature"} and int(weight) == 8
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in m.text_encoder.parameters())
    for p in (m.text_proj.net[0].weight, m.audio_proj.net[2].weight, m.logit_scale,
              m.encoder.blocks.layers[0].linear1.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in m.text_encoder.state_dict().items())


def test_trainable_text_encoder_switch(cmvn, pair_dir):
    am = build(cmvn, freeze_text_encoder=False)
    m = am.model.train()
    assert m.text_encoder.training
    loss, _, _ = m(**training_batch(am, pair_dir / "text_q.jsonl"))
    loss.backward()
    assert m.text_encoder.model.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_contrastive_training_learns_eight_pairs(cmvn, pair_dir):
    am = build(cmvn)
    m = am.model
    batch = training_batch(am, pair_dir / "text_q.jsonl")
    losses = train_nce(m, batch, steps=40, lr=3e-3)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses
    contexts = [str(pair_dir / f"ctx{i}.wav") for i in range(8)]
    assert recall_at_1(m.encode_text(QUESTIONS), m.encode_speech(contexts)) == 1.0


def test_temperature_is_clamped_at_its_minimum(tiny):
    m = tiny.model
    with torch.no_grad():
        saved = m.logit_scale.clone()
        m.logit_scale.fill_(20.0)
        assert math.isclose(float(m.temperature.detach()), 0.01, rel_tol=1e-5)
        m.logit_scale.copy_(saved)


def test_spoken_questions_cls_pooling_and_a_sanm_audio_tower(cmvn, pair_dir):
    cfg = clap_config(cmvn, audio_pooling="cls")
    cfg["encoder"] = "SANMEncoder"  # any FunASR encoder can be the audio tower
    cfg["encoder_conf"] = {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 1,
                           "input_layer": "pe", "dropout_rate": 0.0}
    am = build(cfg=cfg)
    m = am.model.train()
    assert type(m.encoder).__name__ == "SANMEncoder"
    batch = training_batch(am, pair_dir / "speech_q.jsonl")
    loss, _, _ = m(**batch)
    loss.backward()
    assert m.cls_token.grad.abs().sum() > 0
    vec = m.eval().encode_speech([str(pair_dir / "ctx0.wav"), str(pair_dir / "ctx1.wav")])
    assert vec.shape == (2, 32) and torch.allclose(vec.norm(dim=1), torch.ones(2))


def test_export_and_automodel_round_trip(tiny, cmvn, pair_dir, tmp_path):
    from funasr import AutoModel
    from funasr_clsr.export import export_model_dir

    m = tiny.model.eval()
    wavs = [str(pair_dir / f"ctx{i}.wav") for i in range(3)]
    before_speech = m.encode_speech(wavs)
    before_text = m.encode_text(QUESTIONS[:3])
    # padding-free: each file alone gives the vector it gets in the batch
    assert torch.allclose(m.encode_speech(wavs[2]), before_speech[2:], atol=1e-5)
    out = export_model_dir(clap_config(cmvn), m, tmp_path / "model")
    assert str(tmp_path) not in (out / "config.yaml").read_text()
    am = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR")
    loaded = am.model
    assert type(loaded).__name__ == "CLAPStyle"
    assert torch.allclose(loaded.encode_speech(wavs), before_speech, atol=1e-5)
    assert torch.allclose(loaded.encode_text(QUESTIONS[:3]), before_text, atol=1e-6)
    assert torch.equal(loaded.logit_scale, m.logit_scale)
    res = am.generate(input=wavs[1])
    assert np.allclose(res[0]["embedding"], before_speech[1].numpy(), atol=1e-5)


def test_trainer_cli_trains_and_saves_a_loadable_model(cmvn, pair_dir, tmp_path):
    from funasr import AutoModel

    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "funasr_clsr.bin.train", "--config-path", "conf", "--config-name", CONF.name,
           f"++model_conf.text_encoder_conf.path={TINY_TE}", f"++tokenizer_conf.token_list={TINY_TE / 'vocab.txt'}",
           f"++frontend_conf.cmvn_file={cmvn}", f"++train_data_set_list={pair_dir / 'speech_q.jsonl'}",
           f"++valid_data_set_list={pair_dir / 'speech_q.jsonl'}", f"++output_dir={out}", "++train_conf.max_epoch=1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loss_nce" in proc.stdout + proc.stderr
    m = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").model
    assert type(m).__name__ == "CLAPStyle"
    state = torch.load(out / "model.pt", map_location="cpu")["state_dict"]
    assert torch.equal(m.audio_proj.net[0].weight, state["audio_proj.net.0.weight"])


def test_mini_config_builds():
    cfg = yaml.safe_load((REPO / "conf" / "clap_mini_en.yaml").read_text())
    clsr = yaml.safe_load((REPO / "conf" / "clsr_mini_en.yaml").read_text())
    assert cfg["frontend_conf"] == clsr["frontend_conf"] and cfg["dataset_conf"] == clsr["dataset_conf"]
    cfg["model_conf"]["text_encoder_conf"]["path"] = str(TINY_TE)
    cfg["tokenizer_conf"]["token_list"] = str(TINY_TE / "vocab.txt")
    m = build(cfg=cfg).model
    audio = sum(p.numel() for p in m.encoder.parameters())
    assert 1e6 < audio < 2e6, audio  # about the size of clsr_mini_en's speech encoder (1.2M)
    assert m.audio_proj.net[2].out_features == 256
    assert (m.specaug is None) == (clsr.get("specaug") is None)


# ------------------------------------------------------------------ bad input
def test_bad_configuration_and_batches(tiny, pair_dir):
    with pytest.raises(ValueError, match="audio_pooling"):
        build(audio_pooling="max")
    with pytest.raises(ValueError, match="needs a text encoder"):
        build(text_encoder_conf=None)
    with pytest.raises(ValueError, match="not registered"):
        cfg = clap_config()
        cfg["encoder"] = "NoSuchEncoder"
        build(cfg=cfg)
    batch = training_batch(tiny, pair_dir / "text_q.jsonl")
    batch.pop("question")
    with pytest.raises(ValueError, match="neither `question` nor `question_speech`"):
        tiny.model(**batch)


def test_whisper_config_trains_only_its_heads_on_the_cached_frozen_encoder(pair_dir, tmp_path, monkeypatch):
    """conf/clap_whisper_base_mini_en.yaml (the recipe's CLAP row on CLSR's acoustic model) with a tiny
    random Whisper: the encoder is frozen and read from its cache after the first pass, the heads learn."""
    from funasr.register import tables
    from funasr_clsr.models.whisper_encoder import ENV_CACHE

    monkeypatch.delenv(ENV_CACHE, raising=False)
    cfg = tiny_config(conf=REPO / "conf" / "clap_whisper_base_mini_en.yaml")
    assert cfg["dataset_conf"] == yaml.safe_load((REPO / "conf" / "parabge_whisper_base_mini_en.yaml").read_text())["dataset_conf"]
    cfg["encoder_conf"].update(whisper_path=None, cache_dir=str(tmp_path / "cache"), whisper_config={
        "d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
        "num_mel_bins": 80, "max_source_positions": 100})
    am = build(cfg=cfg)
    m = am.model
    assert type(m.encoder) is tables.encoder_classes["WhisperAudioEncoder"]
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"audio_proj", "text_proj", "logit_scale"}, trainable
    batch = training_batch(am, pair_dir / "text_q.jsonl")
    losses = train_nce(m, batch, steps=30, lr=3e-3)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses
    assert m.encoder.cache.misses == 8 and m.encoder.cache.hits == 29 * 8  # each context encoded once

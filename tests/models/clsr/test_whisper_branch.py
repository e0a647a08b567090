"""CLSR with a Whisper audio encoder: built from config, trains with the encoder frozen and cached,
exports without am.mvn, reloads identically through AutoModel."""
from __future__ import annotations

import pytest
import torch

from clsr_testing import QUESTIONS, TINY_TE, tiny_config, training_batch
from funasr_clsr.models.whisper_encoder import ENV_CACHE

TINY_WHISPER = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                "num_mel_bins": 80, "max_source_positions": 100}


def whisper_config(**encoder_conf) -> dict:
    cfg = tiny_config()
    cfg["encoder"] = "WhisperAudioEncoder"
    cfg["encoder_conf"] = {"whisper_config": TINY_WHISPER, "freeze": True, **encoder_conf}
    cfg["frontend"] = "WhisperLogMelFrontend"
    cfg["frontend_conf"] = {"fs": 16000, "n_mels": 80}
    cfg["predictor_conf"]["idim"] = TINY_WHISPER["d_model"]
    cfg["specaug"] = None
    return cfg


def build(**encoder_conf):
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    return AutoModel(**whisper_config(**encoder_conf), device="cpu", disable_update=True, log_level="ERROR", seed=0)


@pytest.fixture(autouse=True)
def no_env_cache(monkeypatch):
    monkeypatch.delenv(ENV_CACHE, raising=False)


def test_frozen_encoder_trains_the_rest_from_the_cache_and_exports_without_cmvn(pair_dir, tmp_path):
    from funasr import AutoModel
    from funasr.register import tables

    from funasr_clsr.export import export_model_dir
    from funasr_clsr.hub import model_identity, validate_model_dir

    am = build(cache_dir=str(tmp_path / "cache"))
    m = am.model
    assert type(m.encoder) is tables.encoder_classes["WhisperAudioEncoder"]
    assert type(am.kwargs["frontend"]) is tables.frontend_classes["WhisperLogMelFrontend"]
    encoder_before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    batch = training_batch(am, pair_dir / "text_q.jsonl")
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    m.train()
    losses = []
    for _ in range(4):
        loss, stats, _ = m(**batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert m.encoder.cache.misses == 8 and m.encoder.cache.hits == 24  # encoded once, then read back
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, m.encoder.state_dict()[k]) for k, v in encoder_before.items())
    m.eval()
    wavs = [str(pair_dir / f"ctx{i}.wav") for i in range(3)]
    speech, text = m.encode_speech(wavs), m.transcribe(wavs)
    out = export_model_dir(whisper_config(cache_dir=str(tmp_path / "cache")), m, tmp_path / "model")
    assert not (out / "am.mvn").exists()
    assert validate_model_dir(out, require_readme=False) == out  # complete without am.mvn
    model_id, version = model_identity(out)
    assert model_id.startswith("clsr-") and version.endswith("format1")
    cfg_text = (out / "config.yaml").read_text()
    assert str(tmp_path) not in cfg_text and "whisper_config" in cfg_text
    back = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").model
    torch.testing.assert_close(back.encode_speech(wavs), speech, atol=1e-5, rtol=1e-4)
    assert back.transcribe(wavs) == text
    torch.testing.assert_close(back.encode_text(QUESTIONS[:2]), m.encode_text(QUESTIONS[:2]))


def test_model_dir_with_an_unknown_encoder_kind_is_one_clear_error(tmp_path, pair_dir):
    import yaml
    from funasr import AutoModel

    from funasr_clsr.export import export_model_dir

    m = build().model.eval()
    out = export_model_dir(whisper_config(), m, tmp_path / "model")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["encoder"] = "WhisperAudioEncoderV9"
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="encoder 'WhisperAudioEncoderV9' is not registered"):
        AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR")

"""pack_trained: a release holds only the trained parts, checks itself, and initialises a model."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models" / "clsr"))
from test_whisper_branch import build, whisper_config  # noqa: E402

from funasr_clsr.bin.pack_trained import frozen_prefixes, main, pack, verify_release  # noqa: E402


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("exp")
    m = build().model
    torch.save({"state_dict": m.state_dict()}, d / "model.pt")
    (d / "config.yaml").write_text(yaml.safe_dump(whisper_config()))
    return d, m


def test_release_keeps_only_trained_tensors_and_initialises_a_model(exp_dir, tmp_path):
    from funasr.train_utils.load_pretrained_model import load_pretrained_model

    exp, trained = exp_dir
    manifest = pack(str(exp), str(tmp_path / "rel"), note="test")
    state = torch.load(tmp_path / "rel" / "model.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith(("encoder.whisper.", "text_encoder.")) for k in state)
    assert any(k.startswith("decoder.") for k in state) and any(k.startswith("predictor.") for k in state)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert manifest["parameters"] == sum(v.numel() for v in state.values())
    assert verify_release(tmp_path / "rel") == tmp_path / "rel" / "model.pt"
    fresh = build().model
    for p in fresh.decoder.parameters():
        torch.nn.init.zeros_(p)
    load_pretrained_model(path=str(tmp_path / "rel" / "model.pt"), model=fresh, ignore_init_mismatch=True)
    for k, v in state.items():
        torch.testing.assert_close(fresh.state_dict()[k].float(), v.float())
    torch.testing.assert_close(fresh.state_dict()["decoder.output_layer.weight"],
                               trained.state_dict()["decoder.output_layer.weight"], atol=1e-3, rtol=1e-3)


def test_damaged_release_is_refused_in_one_line(exp_dir, tmp_path, capsys):
    exp, _ = exp_dir
    pack(str(exp), str(tmp_path / "rel"))
    with open(tmp_path / "rel" / "tokens.txt", "a") as f:
        f.write("extra\n")
    assert main(["--verify", str(tmp_path / "rel")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pack_trained:") and "sha256 does not match" in err and "\n" not in err
    (tmp_path / "rel" / "MANIFEST.json").unlink()
    with pytest.raises(FileNotFoundError, match="no MANIFEST.json"):
        verify_release(tmp_path / "rel")


def test_top_blocks_that_train_are_kept():
    cfg = {"encoder": "WhisperAudioEncoder",
           "encoder_conf": {"freeze": True, "trainable_top_blocks": 1, "whisper_config": {"encoder_layers": 3}}}
    drop = frozen_prefixes(cfg)
    assert "encoder.whisper.layers.1." in drop and "encoder.whisper.layers.2." not in drop
    assert "encoder.whisper.layer_norm." not in drop
    assert json.dumps(frozen_prefixes({"encoder": "SANMEncoder"})) == '["text_encoder."]'

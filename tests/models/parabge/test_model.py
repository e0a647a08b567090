"""ParaBGE baseline: FunASR components, frozen text encoder, learning, export round trip, init, bad input."""
from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from clsr_testing import QUESTIONS, REPO, TINY_TE, tiny_config, recall_at_1, train_nce, training_batch

CONF = REPO / "conf" / "parabge_tiny.yaml"


def parabge_config(cmvn=None, **model_conf) -> dict:
    return tiny_config(cmvn, conf=CONF, **model_conf)


def build(cmvn=None, seed: int = 0, log_level: str = "ERROR", init_param: str | None = None, **model_conf):
    """AutoModel around a tiny ParaBGE, built from config the way training builds it."""
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    extra = {"init_param": init_param} if init_param else {}
    # AutoModel seeds torch itself (``seed``, default 0) before building
    return AutoModel(**parabge_config(cmvn, **model_conf), seed=seed, device="cpu", disable_update=True,
                     log_level=log_level, **extra)


@pytest.fixture(scope="module")
def tiny(cmvn):
    return build(cmvn)


def test_registered_and_built_from_funasr_components(tiny):
    from funasr.register import tables

    m = tiny.model
    assert tables.model_classes["ParaBGE"] is type(m)
    assert type(m.encoder) is tables.encoder_classes["SANMEncoder"]
    assert not hasattr(m, "decoder") and not hasattr(m, "predictor")  # no CIF/VQ bridge
    assert m.speech_proj.in_features == 64 and m.speech_proj.out_features == m.text_encoder.hidden_size
    assert not hasattr(m, "transcribe")  # evaluate.py must not ask it for transcripts


def test_frozen_text_encoder_stays_frozen_while_the_speech_side_learns(cmvn, pair_dir):
    am = build(cmvn)
    m = am.model.train()
    assert not m.text_encoder.training and m.encoder.training
    assert not any(p.requires_grad for p in m.text_encoder.parameters())
    before = {k: v.clone() for k, v in m.text_encoder.state_dict().items()}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    loss, stats, weight = m(**training_batch(am, pair_dir / "text_q.jsonl"))
    assert set(stats) >= {"loss", "loss_nce", "r1_q2c", "batch_size"} and int(weight) == 8
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in m.text_encoder.parameters())
    assert m.speech_proj.weight.grad.abs().sum() > 0
    assert m.encoder.encoders0[0].self_attn.linear_out.weight.grad.abs().sum() > 0
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


def test_spoken_questions_go_through_the_speech_encoder(tiny, pair_dir):
    m = tiny.model.train()
    batch = training_batch(tiny, pair_dir / "speech_q.jsonl")
    assert "question_speech" in batch and "question" not in batch
    loss, stats, _ = m(**batch)
    loss.backward()
    assert torch.isfinite(loss) and m.speech_proj.weight.grad.abs().sum() > 0
    m.zero_grad()
    m.eval()


def test_export_and_automodel_round_trip(tiny, cmvn, pair_dir, tmp_path):
    from funasr import AutoModel
    from funasr_clsr.export import export_model_dir

    m = tiny.model.eval()
    wavs = [str(pair_dir / f"ctx{i}.wav") for i in range(3)]
    before_speech = m.encode_speech(wavs)
    before_text = m.encode_text(QUESTIONS[:3])
    assert before_speech.shape == (3, 32) and torch.allclose(before_speech.norm(dim=1), torch.ones(3))
    out = export_model_dir(parabge_config(cmvn), m, tmp_path / "model")
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "model.pt", "tokens.txt", "am.mvn", "text_encoder"}
    assert str(tmp_path) not in (out / "config.yaml").read_text()
    for variant in ("with configuration.json", "config.yaml only"):
        if variant == "config.yaml only":
            (out / "configuration.json").unlink()
        am = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR")
        loaded = am.model
        assert type(loaded).__name__ == "ParaBGE", variant
        assert torch.allclose(loaded.encode_speech(wavs), before_speech, atol=1e-5), variant
        assert torch.allclose(loaded.encode_text(QUESTIONS[:3]), before_text, atol=1e-6), variant
    res = am.generate(input=wavs[0])
    assert res[0]["key"] and np.allclose(res[0]["embedding"], before_speech[0].numpy(), atol=1e-5)


def test_speech_encoder_initialised_from_a_clsr_checkpoint(tmp_path, caplog):
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    clsr = AutoModel(**tiny_config(), seed=3, device="cpu", disable_update=True, log_level="ERROR").model
    assert not torch.equal(clsr.encoder.encoders0[0].self_attn.linear_out.weight,
                           build(seed=4).model.encoder.encoders0[0].self_attn.linear_out.weight)
    ckpt = tmp_path / "clsr.pt"
    torch.save({"state_dict": clsr.state_dict()}, ckpt)
    with caplog.at_level(logging.INFO):
        m = build(seed=4, log_level="INFO", init_param=str(ckpt)).model
    for key, value in m.encoder.state_dict().items():
        assert torch.equal(value, clsr.encoder.state_dict()[key]), key
    assert "speech encoder loaded from the checkpoint" in caplog.text


def test_init_from_a_checkpoint_of_another_size_is_reported(tmp_path, caplog):
    from funasr.register import tables

    other = tables.encoder_classes["SANMEncoder"](input_size=560, output_size=32, attention_heads=2,
                                                  linear_units=64, num_blocks=2, input_layer="pe")
    ckpt = tmp_path / "other.pt"
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in other.state_dict().items()}}, ckpt)
    with caplog.at_level(logging.WARNING):
        build(log_level="INFO", init_param=str(ckpt))
    assert "speech-encoder tensors loaded" in caplog.text and "random initialisation" in caplog.text


def test_trainer_cli_trains_and_saves_a_loadable_model(cmvn, pair_dir, tmp_path):
    from funasr import AutoModel

    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "funasr_clsr.bin.train", "--config-path", "conf", "--config-name", CONF.name,
           f"++model_conf.text_encoder_conf.path={TINY_TE}", f"++tokenizer_conf.token_list={TINY_TE / 'vocab.txt'}",
           f"++frontend_conf.cmvn_file={cmvn}", f"++train_data_set_list={pair_dir / 'text_q.jsonl'}",
           f"++valid_data_set_list={pair_dir / 'text_q.jsonl'}", f"++output_dir={out}", "++train_conf.max_epoch=1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loss_nce" in proc.stdout + proc.stderr
    m = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").model
    assert type(m).__name__ == "ParaBGE"
    state = torch.load(out / "model.pt", map_location="cpu")["state_dict"]
    assert torch.equal(m.speech_proj.weight, state["speech_proj.weight"])


def test_mini_config_builds_with_the_clsr_mini_speech_encoder():
    """The recipe starts ParaBGE from the CLSR ASR checkpoint: the encoders must stay identical."""
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    cfg = yaml.safe_load((REPO / "conf" / "parabge_mini_en.yaml").read_text())
    clsr = yaml.safe_load((REPO / "conf" / "clsr_mini_en.yaml").read_text())
    assert cfg["encoder"] == clsr["encoder"] and cfg["encoder_conf"] == clsr["encoder_conf"]
    assert cfg["frontend_conf"] == clsr["frontend_conf"] and cfg["dataset_conf"] == clsr["dataset_conf"]
    cfg["model_conf"]["text_encoder_conf"]["path"] = str(TINY_TE)
    cfg["tokenizer_conf"]["token_list"] = str(TINY_TE / "vocab.txt")
    m = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR").model
    assert m.encoder.output_size() == clsr["encoder_conf"]["output_size"]
    assert (m.specaug is None) == (clsr.get("specaug") is None)


# ------------------------------------------------------------------ bad input
def test_batch_without_questions_is_a_clear_error(tiny, pair_dir):
    batch = training_batch(tiny, pair_dir / "text_q.jsonl")
    batch.pop("question")
    with pytest.raises(ValueError, match="neither `question` nor `question_speech`"):
        tiny.model(**batch)


def test_missing_text_encoder_and_bad_audio(tiny, tmp_path):
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    cfg = parabge_config()
    cfg["model_conf"]["text_encoder_conf"] = None
    with pytest.raises(ValueError, match="needs a text encoder"):
        AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR")
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        tiny.model.encode_speech([str(tmp_path / "missing.wav")])
    with pytest.raises(ValueError, match="empty"):
        tiny.model.encode_text(["who was the king", "  "])

"""The training launcher: FunASR's trainer on CPU, resumable, output loadable by AutoModel."""
import logging
import subprocess
import sys

import torch

from clsr_testing import QUESTIONS, REPO, TINY_TE, build_tiny, tiny_config


def _train(pair_dir, cmvn, out, *extra):
    cmd = [sys.executable, "-m", "funasr_clsr.bin.train", "--config-path", "conf", "--config-name", "clsr_tiny.yaml",
           f"++model_conf.text_encoder_conf.path={TINY_TE}", f"++tokenizer_conf.token_list={TINY_TE / 'vocab.txt'}",
           f"++frontend_conf.cmvn_file={cmvn}", f"++train_data_set_list={pair_dir / 'text_q.jsonl'}",
           f"++valid_data_set_list={pair_dir / 'text_q.jsonl'}", f"++output_dir={out}", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_resume_and_load(pair_dir, cmvn, tmp_path):
    from funasr import AutoModel

    out = tmp_path / "exp"
    log = _train(pair_dir, cmvn, out, "++train_conf.max_epoch=1")
    assert "loss_nce" in log  # every loss term is reported in the stats
    for name in ("config.yaml", "model.pt", "model.pt.ep1"):
        assert (out / name).is_file(), name
    # an interrupted/extended run resumes from model.pt instead of restarting at epoch 0
    log = _train(pair_dir, cmvn, out, "++train_conf.max_epoch=2")
    assert "epoch: 0/2" not in log and "epoch: 1/2" in log
    assert (out / "model.pt.ep2").is_file()
    m = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").model
    assert type(m).__name__ == "CLSR"
    assert m.encode_text(QUESTIONS[:2]).shape == (2, 32)
    state = torch.load(out / "model.pt", map_location="cpu")["state_dict"]
    assert torch.equal(m.decoder.output_layer.weight, state["decoder.output_layer.weight"])


def test_init_from_paraformer_with_another_vocabulary(tmp_path, caplog):
    """Vocabulary-dependent layers are re-initialised, the rest loaded, the mismatch reported."""
    from funasr.register import tables
    from funasr.train_utils.load_pretrained_model import load_pretrained_model

    cfg = tiny_config()
    para = tables.model_classes["Paraformer"](
        encoder=cfg["encoder"], encoder_conf=cfg["encoder_conf"], decoder=cfg["decoder"],
        decoder_conf=cfg["decoder_conf"], predictor=cfg["predictor"], predictor_conf=cfg["predictor_conf"],
        input_size=560, vocab_size=50)
    ckpt = tmp_path / "paraformer.pt"
    torch.save({"state_dict": para.state_dict()}, ckpt)
    m = build_tiny().model
    with caplog.at_level(logging.WARNING):
        load_pretrained_model(str(ckpt), m, ignore_init_mismatch=True)
    assert torch.equal(m.encoder.encoders0[0].self_attn.linear_out.weight,
                       para.encoder.encoders0[0].self_attn.linear_out.weight)
    assert torch.equal(m.predictor.cif_output.weight, para.predictor.cif_output.weight)
    assert m.decoder.output_layer.weight.shape[0] != para.decoder.output_layer.weight.shape[0]
    assert "re-initialised" in caplog.text and "decoder.output_layer.weight" in caplog.text


def test_relative_config_path_and_cpu_device_are_filled_in(monkeypatch):
    from funasr_clsr.bin.train import _normalise_argv

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = _normalise_argv(["--config-path", "conf", "--config-name", "x.yaml"])
    assert argv[1] == str(REPO / "conf") or argv[1].endswith("/conf") and argv[1].startswith("/")
    assert argv[-1] == "++device=cpu"
    assert _normalise_argv(["++device=cuda"]) == ["++device=cuda"]


def test_output_config_forgets_the_init_checkpoint(tmp_path):
    """FunASR would reload an existing init_param instead of the trained model.pt."""
    import yaml
    from funasr_clsr.bin.train import _forget_init_param

    (tmp_path / "init.pt").write_bytes(b"x")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": "CLSR", "init_param": str(tmp_path / "init.pt")}))
    _forget_init_param([f"++output_dir={tmp_path}"])
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert "init_param" not in cfg and cfg["initialized_from"] == str(tmp_path / "init.pt")

"""The training launcher: FunASR's trainer on CPU, resumable, output loadable by AutoModel."""
import logging
import subprocess
import sys

import torch

from clsr_testing import QUESTIONS, REPO, TINY_TE, build_tiny, tiny_config


def _train(pair_dir, cmvn, out, *extra, token_list=True):
    tokens = [f"++tokenizer_conf.token_list={TINY_TE / 'vocab.txt'}"] if token_list else []
    cmd = [sys.executable, "-m", "funasr_clsr.bin.train", "--config-path", "conf", "--config-name", "clsr_tiny.yaml",
           f"++model_conf.text_encoder_conf.path={TINY_TE}", *tokens,
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


def test_token_list_defaults_to_the_text_encoders_vocabulary(pair_dir, cmvn, tmp_path):
    """No ++tokenizer_conf.token_list: the ASR vocabulary is the text encoder's, cased as it is."""
    from funasr_clsr.bin.pack_trained import main as pack
    from funasr_clsr.tokenizer import read_token_list

    out = tmp_path / "exp"
    _train(pair_dir, cmvn, out, "++train_conf.max_epoch=1", token_list=False)
    ckpt = torch.load(out / "model.pt", map_location="cpu")["state_dict"]
    assert ckpt["decoder.output_layer.weight"].shape[0] == len(read_token_list(TINY_TE / "vocab.txt"))
    release = tmp_path / "release"
    pack(["--exp", str(out), "--out", str(release), "--checkpoint", "model.pt"])  # reads the saved config's token list
    assert (release / "tokens.txt").read_text().split("\n")[:-1] == read_token_list(TINY_TE / "vocab.txt")


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


def test_a_kill_during_training_resumes_from_the_last_checkpoint(pair_dir, cmvn, tmp_path):
    """SIGKILL once the first epoch's checkpoint exists; the rerun continues at epoch 1 and loads."""
    import signal
    import time

    from funasr import AutoModel

    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "funasr_clsr.bin.train", "--config-path", "conf", "--config-name", "clsr_tiny.yaml",
           f"++model_conf.text_encoder_conf.path={TINY_TE}", f"++tokenizer_conf.token_list={TINY_TE / 'vocab.txt'}",
           f"++frontend_conf.cmvn_file={cmvn}", f"++train_data_set_list={pair_dir / 'text_q.jsonl'}",
           f"++valid_data_set_list={pair_dir / 'text_q.jsonl'}", f"++output_dir={out}", "++train_conf.max_epoch=40"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "model.pt.ep1").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.pt.ep40").exists()
    done = sorted(int(p.name.split("ep")[1]) for p in out.glob("model.pt.ep*") if ".tmp" not in p.name)
    log = _train(pair_dir, cmvn, out, f"++train_conf.max_epoch={done[-1] + 1}")
    assert f"epoch: 0/{done[-1] + 1}" not in log and f"epoch: {done[-1]}/{done[-1] + 1}" in log
    m = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").model
    assert m.encode_text(QUESTIONS[:2]).shape == (2, 32)


def test_a_torn_model_pt_is_replaced_by_the_newest_complete_epoch(tmp_path, capsys):
    from funasr_clsr.bin.train import is_complete_checkpoint, repair_resume_checkpoint

    torch.save({"epoch": 1}, tmp_path / "model.pt.ep1")
    torch.save({"epoch": 2}, tmp_path / "model.pt.ep2")
    whole = (tmp_path / "model.pt.ep2").read_bytes()
    (tmp_path / "model.pt").write_bytes(whole[: len(whole) // 2])  # a kill in the middle of FunASR's save
    assert not is_complete_checkpoint(tmp_path / "model.pt")
    assert repair_resume_checkpoint(tmp_path) is not None
    assert torch.load(tmp_path / "model.pt")["epoch"] == 2
    assert "resuming from model.pt.ep2" in capsys.readouterr().err
    assert repair_resume_checkpoint(tmp_path) is None  # a complete model.pt is left alone
    (tmp_path / "model.pt").unlink()  # killed between the epoch's save and model.pt's
    assert "model.pt was missing: resuming from model.pt.ep2" in repair_resume_checkpoint(tmp_path)
    assert torch.load(tmp_path / "model.pt")["epoch"] == 2

    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.pt").write_bytes(whole[:100])
    assert "moved to model.pt.corrupt." in repair_resume_checkpoint(lone)
    assert not (lone / "model.pt").exists() and len(list(lone.glob("model.pt.corrupt.*"))) == 1
    assert repair_resume_checkpoint(tmp_path / "fresh") is None  # nothing there yet: a fresh run


def test_saves_are_atomic(tmp_path):
    from funasr_clsr.bin.train import atomic_torch_save

    target = tmp_path / "model.pt"
    torch.save({"old": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-save")

    with atomic_torch_save():
        try:
            torch.save({"new": Unpicklable()}, target)
        except RuntimeError:
            pass
        torch.save({"fresh": 2}, tmp_path / "other.pt")
    assert torch.load(target) == {"old": 1}  # the previous checkpoint survives a failed save
    assert torch.load(tmp_path / "other.pt") == {"fresh": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "other.pt"]
    assert torch.save.__module__.startswith("torch")  # restored afterwards

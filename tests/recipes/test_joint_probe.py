"""recipes/mini_spoken_squad/local/joint_probe.sh on a tiny stage-3 checkpoint: the stage-3 model
scored as a CLSR without training, a short joint run with the negative banks, and the error for a
profile whose stage 3 has not run."""
import json
import os
import shutil
import subprocess
import sys

from clsr_testing import REPO, TINY_TE

SCRIPT = REPO / "recipes" / "mini_spoken_squad" / "local" / "joint_probe.sh"


def _probe(*args, data, exp, text_encoder):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), "--data", str(data), "--exp", str(exp), "--config", "clsr_tiny.yaml",
                           "--text-encoder", str(text_encoder), "--train-pairs", "8", "--test-pairs", "8", "--joint-batch", "4", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def _text_encoder_with_weights(root):
    """The tiny text encoder with saved (random) weights: a --no-train probe takes them from the folder,
    as it takes the real MiniLM's."""
    import torch
    from transformers import BertConfig, BertModel

    out = root / "te"
    shutil.copytree(TINY_TE, out)
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(out)).save_pretrained(out)
    return out


def test_probe_scores_the_stage3_checkpoint_and_a_short_joint_run(pair_dir, cmvn, tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    data.mkdir()
    for split in ("qa_train", "qa_dev", "qa_test"):
        shutil.copy(pair_dir / "text_q.jsonl", data / f"{split}.jsonl")
    te = _text_encoder_with_weights(tmp_path)
    missing = _probe("--name", "step0", "--no-train", data=data, exp=exp, text_encoder=te)
    assert missing.returncode == 1 and "asr/model.pt not found: run stages 0-3" in missing.stderr
    bad_lr = _probe("--name", "step0", "--no-train", "--joint-lr", "fast", data=data, exp=exp, text_encoder=te)
    assert bad_lr.returncode == 1 and "--joint-lr fast: expected a positive number" in bad_lr.stderr

    (exp / "lang").mkdir(parents=True)
    shutil.copy(TINY_TE / "vocab.txt", exp / "lang" / "tokens.txt")
    shutil.copy(cmvn, exp / "lang" / "am.mvn")
    train = subprocess.run(
        [sys.executable, "-m", "funasr_clsr.bin.train", "--config-path", "conf", "--config-name", "clsr_tiny.yaml",
         "++model_conf.text_encoder_conf=null", "++model_conf.nce_weight=0",
         f"++tokenizer_conf.token_list={TINY_TE / 'vocab.txt'}", f"++frontend_conf.cmvn_file={cmvn}",
         f"++train_data_set_list={pair_dir / 'text_q.jsonl'}", f"++valid_data_set_list={pair_dir / 'text_q.jsonl'}",
         f"++output_dir={exp / 'asr'}", "++train_conf.max_epoch=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]

    step0 = _probe("--name", "step0", "--no-train", data=data, exp=exp, text_encoder=te)
    assert step0.returncode == 0, step0.stderr[-3000:]
    joint = _probe("--name", "banks", "--", "++model_conf.nce_question_bank=16", "++model_conf.nce_context_bank=8",
                   data=data, exp=exp, text_encoder=te)
    assert joint.returncode == 0, joint.stderr[-3000:]
    assert "loss_nce" in (exp / "probe" / "banks" / "train.log").read_text()

    whisper_exp = tmp_path / "whisper_exp"
    shutil.copytree(exp / "lang", whisper_exp / "lang")
    (whisper_exp / "asr").mkdir()
    shutil.copy(exp / "asr" / "model.pt", whisper_exp / "asr" / "model.pt")
    (whisper_exp / "asr" / "config.yaml").write_text("encoder: WhisperAudioEncoder\nencoder_conf:\n  whisper_path: w\n")
    whisper = _probe("--name", "step0", "--no-train", data=data, exp=whisper_exp, text_encoder=te)
    assert whisper.returncode == 1 and "is a Whisper-branch checkpoint" in whisper.stderr
    assert len(whisper.stderr.strip().splitlines()) == 1 and not (whisper_exp / "probe").exists()

    rows = json.loads((exp / "probe" / "results.json").read_text())["systems"]
    assert set(rows) == {"step0", "banks"}
    for row in rows.values():
        assert row["n"] == 8 and 0.0 <= row["q2c"]["r1"] <= 100.0 and row["wer"] >= 0
    assert len((exp / "probe" / "train_8.jsonl").read_text().splitlines()) == 8
    assert "('batch_size', 4)" in (exp / "probe" / "banks" / "train.log").read_text()

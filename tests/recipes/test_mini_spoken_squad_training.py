"""recipes/mini_spoken_squad/run.sh stage 3's orchestration: the warm-up phase (the paper's sampler, no
CIF-alignment loss) and the resumed main phase, their markers and logs, and resuming after a crash.
The trainer is replaced by a recording stand-in, so this checks what run.sh asks for, in a second."""
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "mini_spoken_squad"

FAKE_PYTHON = """#!/usr/bin/env bash
# records each trainer call (one line of arguments) and leaves the checkpoint a trainer would
echo "$*" >> "{calls}"
for a in "$@"; do case "$a" in ++output_dir=*) mkdir -p "${{a#++output_dir=}}"; touch "${{a#++output_dir=}}/model.pt";; esac; done
"""


def _recipe(tmp_path):
    repo = tmp_path / "repo"
    rec = repo / "recipes" / "mini_spoken_squad"
    rec.mkdir(parents=True)
    (repo / "conf").mkdir()
    for name in ("run.sh", "local", "utils", "conf"):
        src = RECIPE / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, rec / name)
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(calls=calls))
    fake.chmod(0o755)
    return rec, fake, calls


def _stage3(rec, fake, *extra):
    # the two-phase stage 3 is the from-scratch SAN-M branch's; the Whisper branch's tests pass their own
    branch = [] if "--speech-branch" in extra else ["--speech-branch", "sanm"]
    cmd = ["bash", str(rec / "run.sh"), "--python", str(fake), "--text-encoder", "/te", "--stage", "3",
           "--stop-stage", "3", "--asr-epochs", "5", "--asr-warmup-epochs", "2", *branch, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _calls(calls):
    return calls.read_text().splitlines() if calls.exists() else []


def test_stage3_warmup_then_resumed_main_phase(tmp_path):
    rec, fake, calls = _recipe(tmp_path)
    r = _stage3(rec, fake)
    assert r.returncode == 0, r.stderr[-2000:]
    warm, main = _calls(calls)
    assert "++train_conf.max_epoch=2" in warm and "++model_conf.sampling_ratio=0.75" in warm
    assert "++model_conf.cif_align_weight=0" in warm
    # the main phase continues the same directory (the trainer resumes from its model.pt) with the recipe's settings
    assert "++train_conf.max_epoch=5" in main and "++model_conf.sampling_ratio=0.0" in main
    assert "cif_align_weight" not in main
    out = rec / "exp" / "quick" / "asr"
    assert f"++output_dir={out}" in warm.split() and f"++output_dir={out}" in main.split()
    assert (out / ".warmup_done").is_file() and (out / ".done").is_file()
    logs = rec / "exp" / "quick" / "logs"
    assert (logs / "train_asr_warmup.log").is_file() and (logs / "train_asr.log").is_file()

    r = _stage3(rec, fake)  # finished: nothing is trained again
    assert r.returncode == 0 and len(_calls(calls)) == 2 and "already trained" in r.stderr


def test_stage3_crash_after_warmup_resumes_main_phase_only(tmp_path):
    rec, fake, calls = _recipe(tmp_path)
    assert _stage3(rec, fake).returncode == 0
    (rec / "exp" / "quick" / "asr" / ".done").unlink()  # as if the main phase had been interrupted
    r = _stage3(rec, fake)
    assert r.returncode == 0, r.stderr[-2000:]
    new = _calls(calls)[2:]
    assert len(new) == 1 and "++train_conf.max_epoch=5" in new[0]


def test_stage3_without_warmup(tmp_path):
    rec, fake, calls = _recipe(tmp_path)
    assert _stage3(rec, fake, "--asr-warmup-epochs", "0").returncode == 0
    (only,) = _calls(calls)
    assert "++train_conf.max_epoch=5" in only and "++model_conf.sampling_ratio=0.0" in only


def _whisper_data(rec):
    data = rec / "data" / "quick"
    data.mkdir(parents=True)
    (data / "asr_train.jsonl").write_text('{"key": "a"}\n')
    (data / "qa_train.jsonl").write_text('{"key": "q"}\n')
    return data


def test_stage3_whisper_branch_trains_on_asr_and_qa_utterances_with_the_whisper_weights(tmp_path):
    rec, fake, calls = _recipe(tmp_path)
    data = _whisper_data(rec)
    r = _stage3(rec, fake, "--speech-branch", "whisper", "--asr-warmup-epochs", "0", "--release", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    (only,) = _calls(calls)
    assert "--config-name clsr_whisper_base_mini_en.yaml" in only
    assert f"++encoder_conf.whisper_path={rec}/downloads/whisper-base" in only.split()
    assert "cmvn_file" not in only  # Whisper's log-mel has no am.mvn
    train = data / "asr_train_plus_qa.jsonl"
    assert f"++train_data_set_list={train}" in only.split() and train.read_text().count("key") == 2


def _release(rec):
    rel = rec / "release" / "r1"  # what run.sh checks a release by
    rel.mkdir(parents=True)
    (rel / "MANIFEST.json").write_text("{}")


def test_stage3_on_top_of_a_release_uses_its_checkpoint_and_qa_train(tmp_path):
    rec, fake, calls = _recipe(tmp_path)
    data = _whisper_data(rec)
    _release(rec)
    r = _stage3(rec, fake, "--speech-branch", "whisper", "--release", "release/r1", "--release-epochs", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    (only,) = _calls(calls)
    assert f"++init_param={rec}/release/r1/model.pt" in only.split()
    assert f"++train_data_set_list={data}/qa_train.jsonl" in only.split() and "++train_conf.max_epoch=1" in only
    bad = _stage3(rec, fake, "--speech-branch", "whisper", "--release", "release/none_here")
    assert bad.returncode == 1 and "no released checkpoint there" in bad.stderr
    # by default the continuation keeps the encoder frozen and the config's learning rate
    assert "trainable_top_blocks" not in only and "optim_conf.lr" not in only


def test_release_continuation_can_train_the_top_encoder_blocks_as_release_step_4_did(tmp_path):
    rec, fake, calls = _recipe(tmp_path)
    data = _whisper_data(rec)
    _release(rec)
    r = _stage3(rec, fake, "--speech-branch", "whisper", "--release", "release/r1", "--release-epochs", "1",
                "--release-data", "asr_train_plus_qa", "--release-top-blocks", "2", "--release-lr", "0.0002")
    assert r.returncode == 0, r.stderr[-2000:]
    (only,) = _calls(calls)
    # the overrides of release step 4's training call (release/whisper_base_cif/README.md)
    args = only.split()
    for want in (f"++init_param={rec}/release/r1/model.pt", "++encoder_conf.trainable_top_blocks=2",
                 "++optim_conf.lr=0.0002", f"++train_data_set_list={data}/asr_train_plus_qa.jsonl",
                 "++train_conf.max_epoch=1", "++model_conf.text_encoder_conf=null", "++model_conf.nce_weight=0"):
        assert want in args, want
    bad = _stage3(rec, fake, "--speech-branch", "whisper", "--release", "release/r1", "--release-top-blocks", "two")
    assert bad.returncode == 1 and "--release-top-blocks two: expected a whole number" in bad.stderr
    bad_lr = _stage3(rec, fake, "--speech-branch", "whisper", "--release", "release/r1", "--release-lr", "fast")
    assert bad_lr.returncode == 1 and "--release-lr fast: expected a positive number" in bad_lr.stderr
    for lr in ("2e-4", "0.0002", "1E-3"):
        assert _stage3(rec, fake, "--speech-branch", "whisper", "--release", "release/r1", "--release-lr", lr).returncode == 0
    # the stage-4 options (conf/joint.sh) are checked the same way, before anything runs
    for opt, value, message in (("--joint-lr", "fast", "--joint-lr fast: expected a positive number"),
                                ("--joint-warmup", "1.5", "--joint-warmup 1.5: expected a whole number"),
                                ("--joint-batch", "0", "--joint-batch 0: expected a positive whole number"),
                                ("--joint-nce-weight", "-1", "--joint-nce-weight -1: expected a number in [0, 1]"),
                                ("--joint-mae-weight", "0.5", "is over 1")):
        bad = _stage3(rec, fake, "--speech-branch", "whisper", "--release", "release/r1", opt, value)
        assert bad.returncode == 1 and message in bad.stderr and bad.stderr.count("\n") == 1, (opt, bad.stderr)
    assert _stage3(rec, fake, "--speech-branch", "whisper", "--release", "release/r1", "--joint-lr", "1e-4",
                   "--joint-nce-weight", "0.5", "--joint-mae-weight", "0.5").returncode == 0
    # without a release they would have been ignored: refused instead
    for opt, value in (("--release-top-blocks", "2"), ("--release-lr", "2e-4")):
        none = _stage3(rec, fake, "--speech-branch", "whisper", "--release", "none", opt, value)
        assert none.returncode == 1 and "there is none (--release none" in none.stderr, opt


def test_ctc_readout_option_reaches_every_training_call(tmp_path):
    rec, fake, calls = _recipe(tmp_path)
    _whisper_data(rec)
    r = _stage3(rec, fake, "--speech-branch", "whisper", "--ctc-readout", "true", "--release", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    first = _calls(calls)
    assert first and all("++model_conf.ctc_readout=true" in c.split() for c in first)
    plain = _stage3(rec, fake, "--speech-branch", "whisper", "--tag", "_plain", "--release", "none")
    later = _calls(calls)[len(first):]
    assert plain.returncode == 0 and later and not any("++model_conf.ctc_readout" in c for c in later)
    bad = _stage3(rec, fake, "--speech-branch", "whisper", "--ctc-readout", "maybe", "--release", "none")
    assert bad.returncode == 1 and "--ctc-readout must be true or false, not 'maybe'" in bad.stderr


def test_stage4_dual_encoders_on_the_whisper_branch_share_its_frozen_encoder(tmp_path):
    rec, fake, calls = _recipe(tmp_path)
    _whisper_data(rec)
    exp = rec / "exp" / "quick"
    cmd = ["bash", str(rec / "run.sh"), "--python", str(fake), "--text-encoder", "/te", "--stage", "4", "--stop-stage",
           "4", "--speech-branch", "whisper", "--release", "none", "--systems", "parabge speechdpr clap", "--dual-epochs", "7"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = _calls(calls)
    trainer = {c.split(f"++output_dir={exp}/")[1].split()[0]: c.split() for c in lines if "funasr_clsr.bin.train" in c}
    assert set(trainer) == {"clsr", "parabge", "speechdpr", "clap"}
    for name in ("parabge", "speechdpr", "clap"):
        call = trainer[name]
        conf = "clap_whisper_base_mini_en.yaml" if name == "clap" else "parabge_whisper_base_mini_en.yaml"
        assert conf in call and f"++encoder_conf.whisper_path={rec}/downloads/whisper-base" in call
        assert "++train_conf.max_epoch=7" in call and "++scheduler_conf.warmup_steps=50" in call
        assert not any(a.startswith(("++init_param", "++optim_conf.lr")) for a in call)  # its own lr, Whisper's weights
    assert "++model_conf.distill_weight=1.0" in trainer["speechdpr"] and "++model_conf.distill_weight=1.0" not in trainer["parabge"]
    assert f"++train_data_set_list={exp}/speechdpr_data/qa_train.jsonl" in trainer["speechdpr"]
    # its teacher: the Whisper-base transcripts of both splits, joined to the lists before training
    teachers = [c for c in lines if "whisper_transcripts.py" in c or "add_teacher_text.py" in c]
    assert len(teachers) == 4 and all(any(f"data/quick/{s}.jsonl" in c for s in ("qa_train", "qa_dev")) for c in teachers)
    bad = subprocess.run(cmd[:-6] + ["--speech-branch", "sanm", "--systems", "speechdpr"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "speechdpr needs --speech-branch whisper" in bad.stderr

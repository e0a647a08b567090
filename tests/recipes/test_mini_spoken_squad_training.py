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
    cmd = ["bash", str(rec / "run.sh"), "--python", str(fake), "--text-encoder", "/te", "--stage", "3",
           "--stop-stage", "3", "--asr-epochs", "5", "--asr-warmup-epochs", "2", *extra]
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

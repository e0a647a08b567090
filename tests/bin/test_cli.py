"""funasr-clsr CLI: index / query / clips / export / publish, JSON output, one-line errors with exit code 2."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from clsr_testing import CONTEXTS, QUESTIONS, REPO, build_tiny, tiny_cmvn, tiny_config, tone_speech

SR = 16000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(AutoModel of a tiny CLSR, its training-style config, am.mvn, exported model dir)."""
    from funasr_clsr.export import export_model_dir

    root = tmp_path_factory.mktemp("cli_model")
    cmvn = tiny_cmvn(root / "am.mvn")
    am = build_tiny(frontend_cmvn=str(cmvn))
    cfg = tiny_config(str(cmvn))
    return am, cfg, cmvn, export_model_dir(cfg, am.model, root / "model")


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_audio")
    clips = []
    for i in range(6):
        x = tone_speech(CONTEXTS[i], seed=i)
        clips.append(np.pad(x, (0, 2 * SR - len(x))))
        sf.write(d / f"c{i}.wav", clips[-1], SR)
    sf.write(d / "talk1.wav", np.concatenate(clips[:3]), SR)
    sf.write(d / "talk2.wav", np.concatenate(clips[3:]), SR)
    return d


def run(capsys, *argv):
    from funasr_clsr.bin.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def last_line(err: str) -> str:
    return [line for line in err.splitlines() if line.strip()][-1]


def test_index_query_clips(tiny, audio, tmp_path, capsys):
    model = tiny[3]
    idx = tmp_path / "idx"
    lst = tmp_path / "talks.scp"
    lst.write_text(f"t2 {audio / 'talk2.wav'}\n# a comment\n\n")
    rc, out, err = run(capsys, "index", "--model", model, "--index", idx, "--window", 2, "--no-progress", "--json",
                       audio / "talk1.wav", lst)
    assert rc == 0, err
    report = json.loads(out)
    assert report["num_segments"] == 6 and report["num_recordings"] == 2 and report["failed"] == []
    assert {r["recording_id"] for r in report["indexed"]} == {"t2", str((audio / "talk1.wav").resolve())}
    rc, out, _ = run(capsys, "index", "--model", model, "--index", idx, "--window", 2, "--no-progress",
                     "--list", lst)  # again: resumable, nothing new
    assert rc == 0 and "6 segments from 2 recordings (0 indexed now, 1 skipped" in out

    rc, out, err = run(capsys, "query", "--model", model, "--index", idx, QUESTIONS[0], "--question-wav",
                       audio / "c4.wav", "--top-k", 2, "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert [r["question"] for r in res] == [QUESTIONS[0], str(audio / "c4.wav")]
    top = res[1]["hits"][0]
    assert (top["recording_id"], top["start"], top["end"]) == ("t2", 2.0, 4.0)
    assert top["score"] == pytest.approx(1.0, abs=1e-4) and len(res[0]["hits"]) == 2
    rc, out, _ = run(capsys, "query", "--model", model, "--index", idx, "--question-wav", audio / "c4.wav",
                     "--top-k", 1)
    assert rc == 0 and out.startswith("Q1: ") and "0:00:02.000-0:00:04.000" in out and "talk2.wav" in out

    rc, out, err = run(capsys, "clips", "--model", model, "--index", idx, "--question-wav", audio / "c1.wav",
                       "--top-k", 2, "--out", tmp_path / "clips", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    first = doc["questions"][0]["clips"][0]
    assert doc["manifest"] == str(tmp_path / "clips" / "manifest.json")
    assert (first["start"], first["end"]) == (2.0, 4.0)
    clip, sr = sf.read(first["path"], dtype="float32")
    ref, _ = sf.read(audio / "c1.wav", dtype="float32")
    assert sr == SR and np.allclose(clip, ref, atol=1e-4)


def test_errors_are_one_line_with_exit_code_2(tiny, audio, tmp_path, capsys):
    model = tiny[3]
    rc, out, err = run(capsys, "query", "--model", model, "--index", tmp_path / "none", "who")
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [f"funasr-clsr query: error: {tmp_path / 'none'}: no segment index here "
                                        f"(missing segments.lance)"]
    rc, _, err = run(capsys, "query", "--model", tmp_path, "--index", tmp_path / "none", "who")
    assert rc == 2 and "not a CLSR model directory" in last_line(err)
    idx = tmp_path / "idx"
    rc, out, err = run(capsys, "index", "--model", model, "--index", idx, "--window", 2, "--no-progress",
                       tmp_path / "missing.wav", audio / "c0.wav")
    assert rc == 2 and "1 indexed now" in out and "0 skipped, 1 failed" in out
    assert last_line(err) == f"funasr-clsr index: error: {tmp_path / 'missing.wav'}: audio file not found"
    rc, _, err = run(capsys, "query", "--model", model, "--index", idx)
    assert rc == 2 and "no question given" in last_line(err)
    rc, _, err = run(capsys, "query", "--model", model, "--index", idx, "")
    assert rc == 2 and "question 1 is empty" in last_line(err)
    # an index built by another model (here: another am.mvn) is refused
    other = shutil.copytree(model, tmp_path / "other_model")
    (other / "am.mvn").write_text((other / "am.mvn").read_text().replace("<Rescale>", "<Rescale> ", 1))
    rc, _, err = run(capsys, "query", "--model", other, "--index", idx, "who")
    assert rc == 2 and "rebuild it with this model" in last_line(err)
    with pytest.raises(Exception, match="no segment index"):
        run(capsys, "--debug", "query", "--model", model, "--index", tmp_path / "none", "who")
    rc, _, err = run(capsys, "serve", "--model", model, "--index", idx, "--search-workers", 0)
    assert rc == 2 and last_line(err) == "funasr-clsr serve: error: --search-workers must be >= 1, got 0"
    with pytest.raises(SystemExit) as exc:
        run(capsys, "index", "--model", model)  # argparse: --index is required
    assert exc.value.code == 2


def test_list_delete_meta_where_and_migrate(tiny, audio, tmp_path, capsys):
    model = tiny[3]
    idx = tmp_path / "idx"
    lst = tmp_path / "talks.scp"
    lst.write_text(f't2 {audio / "talk2.wav"} {{"title": "Second", "date": "2026-02-01", "speaker": "Ada"}}\n')
    rc, _, err = run(capsys, "index", "--model", model, "--index", idx, "--meta", "[1, 2]", lst)
    assert rc == 2 and last_line(err) == "funasr-clsr index: error: --meta must be a JSON object " \
        '({"title": ..., "date": ...}), got list' and not idx.exists()
    rc, _, err = run(capsys, "index", "--model", model, "--index", idx, "--num-workers", 2, lst)
    assert rc == 2 and "--num-workers / --num-gpus-per-worker need --ray" in last_line(err)
    rc, out, err = run(capsys, "index", "--model", model, "--index", idx, "--window", 2, "--no-progress", lst,
                       audio / "talk1.wav", "--meta", '{"speaker": "Bob", "tags": ["x"]}')
    assert rc == 0, err
    rc, out, err = run(capsys, "list", "--index", idx, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["num_recordings"] == 2 and doc["num_segments"] == 6 and doc["hours"] == pytest.approx(12 / 3600, abs=1e-4)
    assert [(r["recording_id"], r["segments"], r["meta"].get("speaker")) for r in doc["recordings"]] == \
        [("t2", 3, "Ada"), (str((audio / "talk1.wav").resolve()), 3, "Bob")]
    rc, out, _ = run(capsys, "list", "--index", idx)
    assert rc == 0 and out.startswith(f"{idx}: 2 recordings, 6 segments") and '"title": "Second"' in out
    rc, out, err = run(capsys, "query", "--model", model, "--index", idx, "--question-wav", audio / "c4.wav",
                       "--where", "speaker = 'Bob' AND start >= 2", "--top-k", 5, "--json")
    assert rc == 0, err
    hits = json.loads(out)[0]["hits"]
    assert len(hits) == 2 and {h["meta"]["speaker"] for h in hits} == {"Bob"} and min(h["start"] for h in hits) >= 2
    for where, msg in [("speaker == ", "does not parse"), ("room = 1", "no column 'room'")]:
        rc, out, err = run(capsys, "query", "--model", model, "--index", idx, "who", "--where", where)
        assert rc == 2 and out == "" and msg in last_line(err) and len(err.strip().splitlines()) == 1
    rc, out, err = run(capsys, "delete", "--index", idx, "t2", "nobody")
    assert rc == 2 and "not in the index: 'nobody'; nothing was deleted" in last_line(err)
    rc, out, err = run(capsys, "delete", "--index", idx, "t2", "--json")
    assert rc == 0 and json.loads(out)["deleted"] == {"t2": 3} and json.loads(out)["num_segments"] == 3
    # a FAISS index of the previous version: refused with the command, then migrated
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    old = tmp_path / "old"
    LongFormRetriever(str(model), window_s=2.0).index_recordings([("t2", audio / "talk2.wav")], old,
                                                                  progress=False, store="faiss")
    rc, _, err = run(capsys, "query", "--model", model, "--index", old, "who")
    assert rc == 2 and f"convert it with `funasr-clsr migrate --index {old}`" in last_line(err)
    rc, out, err = run(capsys, "migrate", "--index", old, "--json")
    assert rc == 0 and json.loads(out)["segments"] == 3, err
    rc, out, err = run(capsys, "query", "--model", model, "--index", old, "--question-wav", audio / "c4.wav",
                       "--top-k", 1, "--json")
    assert rc == 0 and json.loads(out)[0]["hits"][0]["start"] == 2.0, err


def _exp_dir(tiny, root, rel_tokens=False):
    """A FunASR training output dir: config.yaml (with training keys) and checkpoints in its formats."""
    am, cfg, cmvn, _ = tiny
    exp = root / "exp"
    exp.mkdir()
    cfg = json.loads(json.dumps(cfg))
    cfg.update(output_dir=str(exp), train_data_set_list="data/train.jsonl", init_param=None)
    if rel_tokens:
        shutil.copy(cfg["tokenizer_conf"]["token_list"], exp / "tokens.txt")
        cfg["tokenizer_conf"]["token_list"] = "tokens.txt"
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))
    sd = {k: v.clone() for k, v in am.model.state_dict().items()}
    best = {("module." + k): v for k, v in sd.items()}  # a DDP-trained model
    torch.save({"state_dict": best, "optimizer": {"state": {}}, "epoch": 3, "best_step_or_epoch": "ep3"},
               exp / "model.pt.best")
    avg = {k: (v + 0.01 if v.is_floating_point() and not k.startswith("text_encoder.") else v) for k, v in sd.items()}
    torch.save({"state_dict": avg}, exp / "model.pt.avg2")
    torch.save({"state_dict": sd}, exp / "model.pt")
    return exp, sd, avg


def _weights(model_dir):
    return torch.load(model_dir / "model.pt", weights_only=True)["state_dict"]


def test_export_builds_loads_checkpoint_and_verifies(tiny, tmp_path, capsys):
    from funasr import AutoModel

    exp, sd, avg = _exp_dir(tiny, tmp_path, rel_tokens=True)
    rc, out, err = run(capsys, "export", "--exp", exp, "--out", tmp_path / "m_auto", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["checkpoint"].endswith("model.pt.avg2") and res["verified"] is True
    got = _weights(tmp_path / "m_auto")
    assert all(torch.equal(got[k], avg[k]) for k in avg)
    loaded = AutoModel(model=str(tmp_path / "m_auto"), device="cpu", disable_update=True, log_level="ERROR").model
    assert type(loaded).__name__ == "CLSR"
    assert "output_dir" not in (tmp_path / "m_auto" / "config.yaml").read_text()

    from funasr_clsr.bin.export import main as export_main  # python -m funasr_clsr.bin.export

    assert export_main(["--exp", str(exp), "--checkpoint", "best", "--out", str(tmp_path / "m_best")]) == 0
    got = _weights(tmp_path / "m_best")
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_export_works_for_the_baseline_models_too(tiny, tmp_path, capsys):
    """The recipes export ParaBGE (and CLAP-style) systems with the same command."""
    from funasr import AutoModel

    from clsr_testing import TINY_TE

    cfg = yaml.safe_load((REPO / "conf" / "parabge_tiny.yaml").read_text())
    cfg["model_conf"]["text_encoder_conf"]["path"] = str(TINY_TE)
    cfg["tokenizer_conf"]["token_list"] = str(TINY_TE / "vocab.txt")
    cfg["frontend_conf"]["cmvn_file"] = str(tiny[2])
    torch.manual_seed(1)
    model = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR").model
    exp = tmp_path / "parabge"
    exp.mkdir()
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))
    torch.save({"state_dict": model.state_dict()}, exp / "model.pt")
    rc, out, err = run(capsys, "export", "--exp", exp, "--checkpoint", "model.pt", "--out", tmp_path / "m", "--json")
    assert rc == 0, err
    loaded = AutoModel(model=str(tmp_path / "m"), device="cpu", disable_update=True, log_level="ERROR").model
    assert type(loaded).__name__ == "ParaBGE"
    assert torch.allclose(loaded.encode_text(QUESTIONS[:2]), model.encode_text(QUESTIONS[:2]), atol=1e-6)
    cfg["model"] = "Paraformer"
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))
    rc, _, err = run(capsys, "export", "--exp", exp, "--out", tmp_path / "m2")
    assert rc == 2 and "'Paraformer', not a funasr_clsr model" in last_line(err)


def test_export_errors(tiny, tmp_path, capsys):
    exp, sd, _ = _exp_dir(tiny, tmp_path)
    rc, _, err = run(capsys, "export", "--exp", exp, "--checkpoint", "ep9", "--out", tmp_path / "m")
    assert rc == 2 and "checkpoint 'ep9' not found (available: model.pt, model.pt.avg2, model.pt.best)" in err
    bad = dict(sd)
    key = next(k for k in bad if k.startswith("decoder."))
    bad.pop(key)
    torch.save({"state_dict": bad}, exp / "model.pt.broken")
    rc, _, err = run(capsys, "export", "--exp", exp, "--checkpoint", "model.pt.broken", "--out", tmp_path / "m")
    assert rc == 2 and "does not fit the model" in last_line(err) and key in last_line(err)
    (exp / "model.pt.junk").write_bytes(b"not a checkpoint")
    rc, _, err = run(capsys, "export", "--exp", exp, "--checkpoint", "model.pt.junk", "--out", tmp_path / "m")
    assert rc == 2 and "not a readable torch checkpoint" in last_line(err)
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    cfg["frontend_conf"]["cmvn_file"] = "gone/am.mvn"
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))
    rc, _, err = run(capsys, "export", "--exp", exp, "--out", tmp_path / "m")
    assert rc == 2 and "'gone/am.mvn'" in last_line(err) and "--cmvn" in last_line(err)
    assert not (tmp_path / "m").exists()
    rc, _, err = run(capsys, "export", "--exp", tmp_path / "nowhere", "--out", tmp_path / "m")
    assert rc == 2 and "no config.yaml" in last_line(err)


def test_publish_local_and_missing_token(tiny, tmp_path, capsys, monkeypatch):
    from funasr_clsr import hub

    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(hub.ENV_TOKEN, raising=False)
    d = shutil.copytree(tiny[3], tmp_path / "m")
    results = tmp_path / "RESULTS.md"
    results.write_text("| system | R@1 |\n|---|---|\n| tiny | 1.0 |\n")
    rc, out, err = run(capsys, "publish", d, "--local", "--results", results, "--json")
    assert rc == 0, err
    assert json.loads(out)["published"] == str(hub.local_cache_dir())
    assert "| tiny | 1.0 |" in (hub.local_cache_dir() / "README.md").read_text()
    rc, _, err = run(capsys, "publish", d, "--repo-id", "team/x", "--results", results)
    assert rc == 2 and "MODELSCOPE_API_TOKEN" in last_line(err)


def test_console_script_json_is_clean_stdout(tiny, audio, tmp_path):
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    LongFormRetriever(str(tiny[3]), window_s=2.0).index_recordings([audio / "talk1.wav"], tmp_path / "idx",
                                                                   progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "funasr_clsr.bin.cli", "query", "--model", str(tiny[3]),
                           "--index", str(tmp_path / "idx"), QUESTIONS[0], "--top-k", "2", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(json.loads(proc.stdout)[0]["hits"]) == 2


def test_help_prints_no_ffmpeg_notice():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "funasr_clsr.bin.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: funasr-clsr")
    assert "ffmpeg is not installed" not in r.stdout + r.stderr

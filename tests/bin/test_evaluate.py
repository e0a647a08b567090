"""python -m funasr_clsr.bin.evaluate: every mode writes one row into the same results.json."""
import json

import pytest

from clsr_testing import CONTEXTS, QUESTIONS, TINY_TE, build_tiny, tiny_config
from funasr_clsr.bin import evaluate


@pytest.fixture(scope="module")
def model_dir(cmvn, tmp_path_factory):
    from funasr_clsr.export import export_model_dir

    am = build_tiny(frontend_cmvn=cmvn)
    return export_model_dir(tiny_config(cmvn), am.model.eval(), tmp_path_factory.mktemp("m") / "model")


def _run(capsys, *argv):
    import torch

    torch.manual_seed(0)  # the tiny text encoder is config-only: the same random weights on every load
    evaluate.main([str(a) for a in argv])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_all_modes_fill_one_results_file(model_dir, pair_dir, tmp_path, capsys):
    results = tmp_path / "results.json"
    jsonl = pair_dir / "text_q.jsonl"
    common = ["--jsonl", jsonl, "--results", results, "--profile", "test"]

    clean = _run(capsys, "--mode", "clean_text", "--text-encoder", TINY_TE, "--system", "clean_text", *common)
    assert clean["wer"] == 0.0 and clean["n"] == 8
    assert clean["q2c"]["r1"] >= 75.0  # the tiny random text encoder still tells most texts apart

    emb = _run(capsys, "--mode", "embed", "--model", model_dir, "--system", "clsr", *common)
    assert set(emb["q2c"]) >= {"r1", "r5", "r10", "mrr"} and set(emb["c2q"]) == set(emb["q2c"])
    assert 0.0 <= emb["q2c"]["r1"] <= 100.0 and emb["wer"] >= 0.0  # an untrained model: any value

    hyps = tmp_path / "hyp.jsonl"
    casc = _run(capsys, "--mode", "cascade", "--asr-model", model_dir, "--text-encoder", TINY_TE,
                "--transcripts-out", hyps, "--system", "cascade", *common)
    written = [json.loads(line) for line in hyps.read_text().splitlines()]
    assert [w["key"] for w in written] == [f"pair{i}" for i in range(8)]
    assert casc["wer"] == emb["wer"]  # the same speech branch, the same transcripts

    # precomputed transcripts: the true ones give the clean-text numbers back, and BM25 runs on them
    hyps.write_text("".join(json.dumps({"key": f"pair{i}", "text": c}) + "\n" for i, c in enumerate(CONTEXTS)))
    again = _run(capsys, "--mode", "cascade", "--transcripts", hyps, "--text-encoder", TINY_TE,
                 "--system", "cascade_true", *common)
    assert again["q2c"] == clean["q2c"] and again["wer"] == 0.0
    bm25 = _run(capsys, "--mode", "bm25", "--transcripts", hyps, "--system", "bm25", *common)
    assert bm25["q2c"]["r1"] > 50.0  # the questions repeat their contexts' words

    table = json.loads(results.read_text())
    assert table["profile"] == "test"
    assert set(table["systems"]) == {"clean_text", "clsr", "cascade", "cascade_true", "bm25"}
    assert len(table["systems"]["clsr"]["q2c_curve"]) == 8


def test_bad_input_is_one_clear_error(model_dir, pair_dir, tmp_path):
    results = tmp_path / "r.json"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SystemExit, match="empty split"):
        evaluate.main(["--mode", "clean_text", "--text-encoder", str(TINY_TE), "--jsonl", str(empty),
                       "--results", str(results), "--system", "x"])
    with pytest.raises(SystemExit, match="missing field"):
        evaluate.main(["--mode", "embed", "--model", str(model_dir), "--jsonl", str(pair_dir / "text_q.jsonl"),
                       "--question-kind", "speech", "--results", str(results), "--system", "x"])
    with pytest.raises(SystemExit, match="not a model directory"):
        evaluate.main(["--mode", "embed", "--model", str(tmp_path), "--jsonl", str(pair_dir / "text_q.jsonl"),
                       "--results", str(results), "--system", "x"])
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"key": "pair0", "text": QUESTIONS[0]}) + "\n")
    with pytest.raises(SystemExit, match="no transcript for 7 keys"):
        evaluate.main(["--mode", "bm25", "--transcripts", str(partial), "--jsonl", str(pair_dir / "text_q.jsonl"),
                       "--results", str(results), "--system", "x"])
    assert not results.exists()  # nothing half-written


def test_seen_and_unseen_voice_rows_rank_over_the_whole_pool():
    import numpy as np

    from funasr_clsr.bin.evaluate import voice_groups
    from funasr_clsr.evaluation.report import render_markdown

    pairs = [{"voice": "a", "rate": 150}, {"voice": "b", "rate": 150}, {"voice": "a", "rate": 200},
             {"voice": "a", "rate": 150}]
    sim = np.array([[1.0, 0.0, 0.0, 0.0],   # seen, right
                    [0.0, 0.0, 1.0, 0.0],   # unseen voice, wrong (its context is column 1)
                    [0.0, 0.0, 0.0, 1.0],   # unseen rate, wrong
                    [0.0, 0.0, 0.0, 1.0]])  # seen, right
    refs = ["x y", "x y", "x y", "x y"]
    hyps = ["x y", "x", "x y", "x y"]
    g = voice_groups(pairs, sim, refs, hyps, {"a"}, {150})
    assert g["seen"]["n"] == 2 and g["seen"]["r1"] == 100.0 and g["seen"]["wer"] == 0.0
    assert g["unseen"]["n"] == 2 and g["unseen"]["r1"] == 0.0 and g["unseen"]["wer"] == 25.0
    row = {"n": 4, "q2c": {"r1": 50.0, "r5": 100.0, "r10": 100.0, "mrr": 70.0}, "by_voice": g}
    md = render_markdown({"profile": "t", "command": "c", "systems": {"clsr": row}})
    assert "## Seen and unseen voices" in md and "| `clsr` | unseen |" in md

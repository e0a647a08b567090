"""recipes/mini_spoken_squad/local/inference_probe.py on an untrained tiny model: scale 1.0 is the
model as it ships, a smaller scale decodes fewer tokens; --piece decodes in pieces."""
import json

from clsr_testing import REPO, export_tiny_model_dir, load_script


def _probe():
    path = REPO / "recipes" / "mini_spoken_squad" / "local" / "inference_probe.py"
    return load_script(path, "_recipe_mini_spoken_squad_inference_probe")


def test_scaled_token_count(pair_dir, tmp_path):
    from funasr_clsr.evaluation.metrics import word_error_rate
    from funasr_clsr.retrieval.pipeline import load_model

    model_dir = export_tiny_model_dir(tmp_path)
    jsonl = pair_dir / "text_q.jsonl"
    out = tmp_path / "probe.json"
    assert _probe().main(["--model", str(model_dir), "--jsonl", str(jsonl), "--scale", "1.0", "--scale", "0.5",
                          "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["scale"] for r in rows] == [1.0, 0.5]
    assert all(r["contexts"] == 8 and r["questions"] == 8 and 0 <= r["r1"] <= r["r5"] <= 100 for r in rows)
    assert rows[1]["hyp_words_per_ref_word"] < rows[0]["hyp_words_per_ref_word"]

    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    shipped = load_model(str(model_dir))[0].eval().transcribe([r["source"] for r in lines])
    assert rows[0]["wer"] == round(word_error_rate([r["target"] for r in lines], shipped)["wer"], 2)


def test_bad_inputs_are_one_line_errors(pair_dir, tmp_path):
    import pytest

    probe = _probe()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "a.wav"\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    cases = [(["--model", str(tmp_path), "--jsonl", str(pair_dir / "text_q.jsonl")], "not a model directory"),
             (["--model", str(tmp_path), "--jsonl", str(tmp_path / "nope.jsonl")], "nope.jsonl: no such file"),
             (["--model", str(tmp_path), "--jsonl", str(bad)], "bad.jsonl:1: not a JSON line"),
             (["--model", str(tmp_path), "--jsonl", str(empty)], "empty.jsonl: empty split")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as err:
            probe.main([*argv, "--scale", "1.0"])
        assert message in str(err.value) and "\n" not in str(err.value), argv


def test_pieces_are_rows_beside_whole_inputs(pair_dir, tmp_path):
    model_dir = export_tiny_model_dir(tmp_path)
    out = tmp_path / "probe.json"
    assert _probe().main(["--model", str(model_dir), "--jsonl", str(pair_dir / "text_q.jsonl"), "--piece", "0",
                          "--piece", "0.5", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["scale"], r["piece_seconds"]) for r in rows] == [(1.0, 0.0), (1.0, 0.5)]
    # each row is the model's own WER with that setting (the tiny contexts are 1-2 s: 0.5 s cuts them)
    from funasr_clsr.evaluation.metrics import word_error_rate
    from funasr_clsr.retrieval.pipeline import load_model

    lines = [json.loads(line) for line in (pair_dir / "text_q.jsonl").read_text().splitlines()]
    model = load_model(str(model_dir))[0].eval()
    for row in rows:
        model.piece_seconds = row["piece_seconds"] or None
        hyps = model.transcribe([r["source"] for r in lines])
        assert row["wer"] == round(word_error_rate([r["target"] for r in lines], hyps)["wer"], 2)
    from funasr_clsr.models.dual_encoder import load_speech_pieces

    assert load_speech_pieces(model.frontend, [lines[0]["source"]], 0.5)[1] == [3]  # 1.4 s in 0.5 s pieces: three

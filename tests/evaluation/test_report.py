"""results.json schema, merge_system, RESULTS.md and the CLI."""

import copy
import json
import os

import numpy as np
import pytest

from funasr_clsr.evaluation import report as R


def m(r1, r5, r10, mrr):
    return {"r1": r1, "r5": r5, "r10": r10, "mrr": mrr}


def sample():
    return {
        "profile": "tiny",
        "command": "bash recipes/spoken_squad/run.sh --profile tiny",
        "systems": {
            "clsr_no_vq": {"wer": 30.0, "q2c": m(10.0, 20.0, 30.0, 15.0), "c2q": None},
            "parabge": {"wer": None, "q2c": m(35.0, 50.0, 60.0, 42.0), "c2q": m(30.0, 45.0, 55.0, 37.0)},
            "clsr": {"wer": 15.14, "q2c": m(50.0, 70.0, 80.0, 59.04), "c2q": m(48.0, 68.0, 79.0, 57.0), "n": 200},
            "cascade": {"wer": 19.39, "q2c": m(52.0, 71.0, 81.0, 60.0), "c2q": m(51.0, 70.0, 80.0, 59.0)},
            "clean_text": {"wer": None, "q2c": m(60.0, 80.0, 85.0, 69.0), "c2q": m(58.0, 79.0, 84.0, 67.0),
                           "note": "BGE on gold text"},
            "bm25": {"wer": 19.39, "q2c": m(40.0, 60.0, 70.0, 49.0)},
        },
    }


def test_valid_sample_passes():
    assert R.validate_results(sample()) is not None


@pytest.mark.parametrize("mutate, msg", [
    (lambda o: o["systems"]["clsr"].pop("q2c"), "missing 'q2c'"),
    (lambda o: o["systems"]["clsr"]["q2c"].pop("mrr"), "missing metric keys"),
    (lambda o: o["systems"]["clsr"]["q2c"].update(r1=150.0), "outside"),
    (lambda o: o["systems"]["clsr"]["q2c"].update(r1=0.5, r5=0.7, r10=0.8, mrr=0.3), "mrr"),
    (lambda o: o["systems"]["clsr"]["q2c"].update(r5=90.0), "recall must not drop"),
    (lambda o: o["systems"]["clsr"]["q2c"].update(r1="50"), "finite number"),
    (lambda o: o["systems"]["clsr"]["q2c"].update(r1=True), "finite number"),
    (lambda o: o["systems"]["clsr"]["q2c"].update(recall1=5.0), "unknown metric key"),
    (lambda o: o["systems"]["clsr"].update(wer=-1.0), "wer"),
    (lambda o: o["systems"]["clsr"].update(n=0), "positive integer"),
    (lambda o: o["systems"].update({"bad name": o["systems"]["clsr"]}), "identifier"),
    (lambda o: o.pop("command"), "command"),
    (lambda o: o.update(systems=[]), "systems"),
])
def test_schema_violations_are_named(mutate, msg):
    o = sample()
    mutate(o)
    with pytest.raises(ValueError, match=msg):
        R.validate_results(o)


def test_merge_creates_adds_and_replaces(tmp_path):
    path = tmp_path / "exp" / "results.json"
    with pytest.raises(ValueError, match="profile= and command="):
        R.merge_system(path, "clsr", sample()["systems"]["clsr"])
    assert not path.exists()
    R.merge_system(path, "clsr", sample()["systems"]["clsr"], profile="tiny", command="run.sh")
    # numpy scalars (as produced by metrics code) must serialise.
    R.merge_system(path, "bm25", {"wer": np.float32(19.5), "q2c": {k: np.float64(v) for k, v in m(1, 2, 3, 1.5).items()}})
    obj = json.loads(path.read_text())
    assert set(obj["systems"]) == {"clsr", "bm25"}
    assert obj["systems"]["bm25"]["wer"] == pytest.approx(19.5)
    assert obj["systems"]["clsr"]["command"] == "run.sh"
    R.merge_system(path, "clsr", {"wer": 1.0, "q2c": m(9, 9, 9, 9)}, command="run.sh --stage 5")
    obj = R.load_results(path)
    assert obj["systems"]["clsr"]["q2c"]["r1"] == 9 and obj["systems"]["bm25"]["q2c"]["r1"] == 1
    assert obj["command"] == "run.sh --stage 5"
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_concurrent_merges_keep_every_row(tmp_path):
    import threading

    path = tmp_path / "results.json"
    R.merge_system(path, "clsr", sample()["systems"]["clsr"], profile="tiny", command="run.sh")
    names = [f"sys{i}" for i in range(12)]
    threads = [threading.Thread(target=R.merge_system, args=(path, n, sample()["systems"]["bm25"]))
               for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(R.load_results(path)["systems"]) == {"clsr", *names}


def test_merge_rejects_malformed_metrics_without_touching_file(tmp_path):
    path = tmp_path / "results.json"
    R.merge_system(path, "clsr", sample()["systems"]["clsr"], profile="tiny", command="run.sh")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="refusing to write"):
        R.merge_system(path, "bm25", {"q2c": {"r1": 10.0, "r5": 20.0}})
    with pytest.raises(ValueError, match="refusing to write"):
        R.merge_system(path, "bm25", {"q2c": m(0.9, 0.95, 0.97, 0.93), "wer": "high"})
    with pytest.raises(ValueError, match="holds profile 'tiny'"):
        R.merge_system(path, "bm25", sample()["systems"]["bm25"], profile="full")
    assert path.read_bytes() == before


def test_merge_refuses_to_overwrite_corrupt_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"profile": "tiny", "systems": {')
    with pytest.raises(ValueError, match="not valid JSON"):
        R.merge_system(path, "clsr", sample()["systems"]["clsr"], profile="tiny", command="x")
    assert path.read_text() == '{"profile": "tiny", "systems": {'


def _row(md, name):
    return next(line for line in md.splitlines() if line.startswith(f"| `{name}` |"))


def test_markdown_numbers_order_and_header():
    md = R.render_markdown(sample())
    assert "profile `tiny`" in md and "bash recipes/spoken_squad/run.sh --profile tiny" in md
    cells = [c.strip() for c in _row(md, "clsr").strip("|").split("|")]
    # System, What, WER, q2c x4, c2q x4, n, Note
    assert cells[2:11] == ["15.1", "50.0", "70.0", "80.0", "59.0", "48.0", "68.0", "79.0", "57.0"]
    assert cells[11] == "200"
    bm = [c.strip() for c in _row(md, "bm25").strip("|").split("|")]
    assert bm[7:11] == ["-", "-", "-", "-"]
    assert [c.strip() for c in _row(md, "parabge").strip("|").split("|")][2] == "-"
    order = [line.split("`")[1] for line in md.splitlines() if line.startswith("| `")]
    assert order == ["clean_text", "clsr", "cascade", "parabge", "bm25", "clsr_no_vq"]
    assert "BGE on gold text" in _row(md, "clean_text")


def test_claims_computed_from_numbers():
    claims = {c["id"]: c for c in R.compute_claims(sample())}
    # clsr 50 >= 0.8 * 60 = 48: met by 2 points
    assert claims["clsr_vs_clean_text"]["status"] == "met"
    assert claims["clsr_vs_clean_text"]["margin"] == pytest.approx(2.0)
    # 50 - 35 = 15 < 20: missed by 5
    assert claims["clsr_vs_parabge"]["status"] == "missed"
    assert claims["clsr_vs_parabge"]["margin"] == pytest.approx(-5.0)
    # 50 < 52: missed by 2
    assert claims["clsr_vs_cascade"]["status"] == "missed"
    assert claims["clsr_vs_cascade"]["margin"] == pytest.approx(-2.0)
    md = R.render_markdown(sample())
    assert "**met** (margin +2.00 points" in md
    assert "**missed** (margin -5.00 points" in md and "**missed** (margin -2.00 points" in md

    o = sample()
    o["systems"]["clsr"]["q2c"] = m(56.0, 70.0, 80.0, 60.0)
    del o["systems"]["parabge"]
    claims = {c["id"]: c for c in R.compute_claims(o)}
    assert claims["clsr_vs_parabge"]["status"] == "skipped"
    assert claims["clsr_vs_cascade"]["status"] == "met"
    assert claims["clsr_vs_cascade"]["margin"] == pytest.approx(4.0)
    assert "**skipped** (no row for `parabge`)" in R.render_markdown(o)
    assert claims["clsr_vs_clap"]["status"] == "skipped"  # the sample has no clap row
    o["systems"]["clap"] = {"q2c": m(60.0, 70.0, 80.0, 65.0)}
    clap = {c["id"]: c for c in R.compute_claims(o)}["clsr_vs_clap"]
    assert clap["status"] == "missed" and clap["margin"] == pytest.approx(-4.0)


def test_anchors_table_is_labelled_and_validated():
    anchors = R.paper_anchors("spoken_squad")
    md = R.render_markdown(sample(), anchors=anchors, notes="Trained on 200 pairs.")
    sect = md.split("## Anchors")[1].split("## Claims")[0]
    assert "Anchors (not from this run)" in md and "arXiv 2511.09282" in sect
    clsr = next(line for line in sect.splitlines() if line.startswith("| CLSR (paper)"))
    assert [c.strip() for c in clsr.strip("|").split("|")][1:6] == ["15.1", "70.0", "86.9", "90.7", "-"]
    assert "## Notes" in md and "Trained on 200 pairs." in md
    bad = copy.deepcopy(anchors)
    del bad["source"]
    with pytest.raises(ValueError, match="source"):
        R.render_markdown(sample(), anchors=bad)
    with pytest.raises(ValueError, match="known"):
        R.paper_anchors("nope")


def test_cli_writes_markdown_and_plots(tmp_path, capsys):
    res = tmp_path / "results.json"
    o = sample()
    o["systems"]["clsr"]["q2c_curve"] = [50.0, 60.0, 65.0, 68.0, 70.0]
    res.write_text(json.dumps(o))
    anchors = tmp_path / "anchors.json"
    anchors.write_text(json.dumps({"source": "somewhere", "rows": {"X": {"q2c": {"r1": 12.34}}}}))
    out = tmp_path / "docs" / "RESULTS.md"
    rc = R.main([str(res), "--out", str(out), "--anchors", str(anchors), "--plots", str(tmp_path / "docs" / "fig")])
    assert rc == 0
    md = out.read_text()
    assert "| X | - | 12.3 |" in md
    assert "](fig/wer_vs_r1.png)" in md and "](fig/recall_at_k.png)" in md
    assert (tmp_path / "docs" / "fig" / "wer_vs_r1.png").stat().st_size > 1000

    assert R.main([str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    res.write_text(json.dumps({"profile": "tiny"}))
    assert R.main([str(res)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_cli_stdout(tmp_path, capsys):
    res = tmp_path / "results.json"
    res.write_text(json.dumps(sample()))
    assert R.main([str(res), "--paper-anchors", "librisqa"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Results") and "LibriSQA" in text
    assert not os.path.exists(tmp_path / "RESULTS.md")

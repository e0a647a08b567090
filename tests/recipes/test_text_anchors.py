"""recipes/mini_spoken_squad/local/text_anchors.py: the Spoken-SQuAD join and the anchors rows.

Toy SQuAD + Spoken-SQuAD files in the real layout are joined (kept / dropped paragraphs, every
consistency check), then the anchors are computed with the tiny (random-init, seeded) text encoder:
schema, WER ordering, and a garbled transcript level must lose recall.  The committed
``data_src/spoken_squad_asr_1q.jsonl`` and ``local/anchors.json`` are checked against each other.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from clsr_testing import TINY_TE, load_script

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "recipes" / "mini_spoken_squad" / "local"


ta = load_script(LOCAL / "text_anchors.py", "_recipe_mini_spoken_squad_text_anchors")

# Ten paragraphs over the tiny vocabulary, two articles; question i shares words with context i only.
CONTEXTS = [
    "the king of the city had a war", "the river was in the school", "music at the church this year",
    "the team game was not law", "one two three four five", "his her their its",
    "who did what when", "the war was at the river", "city music and school law", "the game of the king",
]
QUESTIONS = [
    "which king had a war", "what river was in school", "what music at church", "which team game",
    "one two three", "his her their", "who did what", "which war was at river", "what city music",
    "what game of king",
]
ARTICLES = [("Art_A", range(0, 5)), ("Art_B", range(5, 10))]
DROP = {2, 7}  # paragraphs whose chosen question Spoken-SQuAD no longer has
GARBLE = "qzx vkj wpf yyq xzv jjq"


def _squad() -> dict:
    data = []
    for title, idx in ARTICLES:
        paras = []
        for i in idx:
            paras.append({"context": CONTEXTS[i], "qas": [
                {"id": f"q{i}", "question": QUESTIONS[i], "answers": [{"text": "x", "answer_start": 0}]},
                {"id": f"q{i}b", "question": "other " + QUESTIONS[i], "answers": []}]})
        data.append({"title": title, "paragraphs": paras})
    return {"data": data, "version": "1.1"}


def _spoken(transcript) -> dict:
    obj = copy.deepcopy(_squad())
    i = 0
    for art in obj["data"]:
        for para in art["paragraphs"]:
            para["context"] = transcript(i, CONTEXTS[i])
            if i in DROP:  # only the second question survived ASR
                para["qas"] = para["qas"][1:]
            i += 1
    return obj


def _one_q_rows() -> list[dict]:
    rows = []
    for ai, (title, idx) in enumerate(ARTICLES):
        for pi, i in enumerate(idx):
            rows.append({"id": f"sqdev-a{ai:02d}-p{pi:03d}", "title": title, "context": CONTEXTS[i],
                         "qid": f"q{i}", "question": QUESTIONS[i], "answer": "x", "answer_start": 0})
    return rows


def _half(i: int, text: str) -> str:
    words = text.split()
    return " ".join(w if k % 2 == 0 else "zq" for k, w in enumerate(words))


@pytest.fixture()
def toy(tmp_path) -> dict:
    spoken_dir = tmp_path / "spoken"
    spoken_dir.mkdir()
    transcripts = {"asr_wer22": lambda i, t: t.upper(), "asr_wer44": _half,
                   "asr_wer54": lambda i, t: GARBLE}
    for key, fname in ta.SPOKEN_FILES.items():
        (spoken_dir / fname).write_text(json.dumps(_spoken(transcripts[key])))
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(_squad()))
    one_q = tmp_path / "one_q.jsonl"
    one_q.write_text("".join(json.dumps(r) + "\n" for r in _one_q_rows()))
    return {"spoken": spoken_dir, "squad": squad, "one_q": one_q, "asr": tmp_path / "asr.jsonl",
            "tmp": tmp_path}


def _build(toy) -> int:
    return ta.main(["--build-asr", str(toy["spoken"]), "--squad-json", str(toy["squad"]),
                    "--squad-1q", str(toy["one_q"]), "--asr-jsonl", str(toy["asr"])])


def test_build_keeps_paragraphs_whose_question_survived(toy, capsys):
    assert _build(toy) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["contexts"], info["kept"], info["dropped"]) == (10, 8, 2)
    rows = [json.loads(x) for x in toy["asr"].read_text().splitlines()]
    assert [r["qid"] for r in rows] == [f"q{i}" for i in range(10) if i not in DROP]
    assert rows[0]["id"] == "sqdev-a00-p000" and rows[5]["id"] == "sqdev-a01-p001"  # q6 = Art_B paragraph 1
    assert rows[5]["asr_wer22"] == CONTEXTS[6].upper()
    assert rows[5]["asr_wer54"] == GARBLE
    assert set(rows[0]) == {"id", "qid", "asr_wer22", "asr_wer44", "asr_wer54"}  # compact


def _expect_error(toy, capsys, needle: str) -> None:
    assert _build(toy) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert not toy["asr"].exists()  # nothing half-written


def test_build_rejects_misaligned_articles(toy, capsys):
    p = toy["spoken"] / ta.SPOKEN_FILES["asr_wer44"]
    obj = json.loads(p.read_text())
    obj["data"][1]["title"] = "Other"
    p.write_text(json.dumps(obj))
    _expect_error(toy, capsys, "article 1 is 'Other'")


def test_build_rejects_shifted_paragraphs(toy, capsys):
    p = toy["spoken"] / ta.SPOKEN_FILES["asr_wer22"]
    obj = json.loads(p.read_text())
    obj["data"][0]["paragraphs"].pop()
    p.write_text(json.dumps(obj))
    _expect_error(toy, capsys, "has 4 paragraphs, SQuAD has 5")


def test_build_rejects_a_1q_file_from_another_squad(toy, capsys):
    rows = _one_q_rows()
    rows[3]["context"] = "something else"
    toy["one_q"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    _expect_error(toy, capsys, "sqdev-a00-p003: context differs")


def test_build_names_bad_json_line(toy, capsys):
    toy["one_q"].write_text(json.dumps(_one_q_rows()[0]) + "\n{not json\n")
    _expect_error(toy, capsys, "one_q.jsonl:2: invalid JSON")


def test_anchors_rows_schema_and_corruption_lowers_recall(toy, capsys):
    import torch

    from funasr_clsr.evaluation.report import render_markdown, validate_anchors

    assert _build(toy) == 0
    capsys.readouterr()
    quick = toy["tmp"] / "qa_test.jsonl"
    quick.write_text("".join(json.dumps({"key": f"qa_test-sqdev-a0{a}-p00{p}"}) + "\n"
                             for a, p in ((0, 0), (0, 3), (1, 4))))
    out = toy["tmp"] / "anchors.json"
    torch.manual_seed(0)  # the tiny encoder has no weights: TextEncoder builds it from config
    rc = ta.main(["--text-encoder", str(TINY_TE), "--out", str(out), "--max-length", "64",
                  "--squad-1q", str(toy["one_q"]), "--asr-jsonl", str(toy["asr"]),
                  "--quick-test-jsonl", str(quick), "--batch-size", "4"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    anchors = json.loads(out.read_text())
    assert printed == anchors
    validate_anchors(anchors)
    assert "text_anchors.py" in anchors["source"] and anchors["max_length"] == 64
    rows = anchors["rows"]

    def row(*words):
        hits = [v for k, v in rows.items() if all(w in k for w in words)]
        assert len(hits) == 1, (words, list(rows))
        return hits[0]

    assert len(rows) == 7
    full = row("clean text, all 10 contexts", "(mean)")
    subset = row("clean text, 8-context")
    w22, w44, w54 = row("WER22"), row("WER44"), row("WER54")
    quick_row = row("quick profile's 3-context")
    cls = row("cls pooling instead of mean")
    for r, n in ((full, 10), (subset, 8), (w22, 8), (w44, 8), (w54, 8), (quick_row, 3), (cls, 10)):
        assert r["n"] == n
        assert set(r["q2c"]) == {"r1", "r5", "r10", "mrr"} and set(r["c2q"]) == {"r1", "r5", "r10", "mrr"}
        assert r["source"].startswith("text_anchors.py")
    # WER: upper-cased copy = 0 (normalisation), every other word replaced = 40-50%, garbage ~100%
    assert w22["wer"] == 0.0 and full["wer"] == 0.0
    assert 30 <= w44["wer"] <= 60
    assert w54["wer"] >= 90
    # the upper-cased copy tokenises like the clean text: identical retrieval
    assert w22["q2c"] == subset["q2c"] and w22["c2q"] == subset["c2q"]
    # a garbled transcript loses recall; the tiny random encoder still beats chance on clean text
    assert subset["q2c"]["r1"] > 100 / 8
    assert w54["q2c"]["r1"] < subset["q2c"]["r1"]
    assert w54["q2c"]["mrr"] < subset["q2c"]["mrr"]
    md = render_markdown({"profile": "t", "command": "c", "systems": {}}, anchors=anchors)
    assert "WER54" in md


def test_join_rejects_a_different_question_choice(toy):
    assert _build(toy) == 0
    rows = ta.read_jsonl(toy["asr"])
    rows[1]["qid"] = "q1b"
    with pytest.raises(ta.AnchorDataError, match="chose q1"):
        ta.join_asr(_one_q_rows(), rows)


def test_too_long_max_length_is_a_clear_error(toy, capsys):
    assert _build(toy) == 0
    capsys.readouterr()
    rc = ta.main(["--text-encoder", str(TINY_TE), "--out", str(toy["tmp"] / "a.json"), "--max-length", "256",
                  "--squad-1q", str(toy["one_q"]), "--asr-jsonl", str(toy["asr"]), "--quick-test-jsonl", "none"])
    assert rc == 2
    assert "exceeds the encoder's 128 positions" in capsys.readouterr().err
    assert not (toy["tmp"] / "a.json").exists()


def test_quick_subset_redrawn_like_stage0():
    rows = ta.read_jsonl(ta.SQUAD_1Q, ("id",))
    ids, how = ta.quick_subset_ids(rows, None)
    assert len(ids) == ta.QUICK_TEST_CONTEXTS == len(set(ids))
    order = {r["id"]: i for i, r in enumerate(rows)}
    assert [order[i] for i in ids] == sorted(order[i] for i in ids)  # source order
    assert len({i.split("-p")[0] for i in ids}) == 24  # spread over all articles
    assert "seed 0" in how


def test_committed_files_agree():
    from funasr_clsr.evaluation.report import validate_anchors

    squad_1q = ta.read_jsonl(ta.SQUAD_1Q, ("id", "context", "qid", "question"))
    asr = ta.read_jsonl(ta.ASR_1Q, ("id", "qid"))
    idx = ta.join_asr(squad_1q, asr, str(ta.ASR_1Q))
    assert len(idx) == 505 and idx == sorted(idx)
    anchors = json.loads((LOCAL / "anchors.json").read_text())
    validate_anchors(anchors)
    assert anchors["inputs"]["recipes/mini_spoken_squad/data_src/spoken_squad_asr_1q.jsonl"] == ta.sha256(ta.ASR_1Q)
    assert anchors["inputs"]["recipes/mini_spoken_squad/data_src/squad_dev_part1_1q.jsonl"] == ta.sha256(ta.SQUAD_1Q)
    ns = sorted(r["n"] for r in anchors["rows"].values())
    assert ns == [300, 505, 505, 505, 505, 1048, 1048]
    wers = [r["wer"] for k, r in anchors["rows"].items() if "Spoken-SQuAD ASR" in k]
    assert wers == sorted(wers) and len(wers) == 3

"""SQuAD-layout reading, sentence pairing, one-to-one filtering and jsonl writing."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from funasr_clsr.data_prep import squad_format as S

# Real text: SQuAD v1.1 dev, "Super_Bowl_50" paragraph 3 (CC BY-SA 4.0), and Spoken-SQuAD's
# Sphinx transcript of its four sentence recordings (the TTS front end split at "U.S. ").
CBS_TEXT = ("CBS broadcast Super Bowl 50 in the U.S., and charged an average of $5 million for a "
            "30-second commercial during the game. The Super Bowl 50 halftime show was headlined by "
            "the British rock group Coldplay with special guest performers Beyoncé and Bruno Mars, who "
            "headlined the Super Bowl XLVII and Super Bowl 50 halftime shows, respectively. It was the "
            "third-most watched U.S. broadcast ever.")
CBS_ASR = ["c b s broadcast super bowl fifty in the u s and charged an average of five million dollars "
           "for a thirty second commercial during the game",
           "the super bowl fifty halftime show was headline by the british rock group called play with "
           "special guest performers beyond saying bruno mars who had lined the super bowl x l v i i and "
           "super bowl fifty halftime shows respectively",
           "it was the third most watched you asked",
           "broadcast ever"]


def squad(paragraphs, title="T"):
    return {"version": "1.1", "data": [{"title": title, "paragraphs": paragraphs}]}


def qa(qid, question, answer, start):
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": start}]}


def wav(path, seconds=0.5, sr=16000):
    sf.write(path, (0.1 * np.sin(np.arange(int(seconds * sr)) / 7.0)).astype(np.float32), sr)
    return str(path)


# --------------------------------------------------------------------------- text


def test_clean_text_and_target_length():
    assert S.clean_text("  a\n b\t\tc ") == "a b c"
    assert S.target_length("the game was played", "en") == 4
    assert S.target_length("聯邦 總理。", "zh") == 5


def test_split_sentences_english_and_chinese():
    text = "He left early. Then she came! Ted Ginn Jr. on the line? \"Quoted.\" End"
    spans = S.split_sentences(text, "en")
    assert [text[a:b] for a, b in spans] == ["He left early.", "Then she came!",
                                             "Ted Ginn Jr. on the line?", "\"Quoted.\"", "End"]
    zh = "甲是乙。丙呢？「丁。」戊！"
    assert [zh[a:b] for a, b in S.split_sentences(zh, "zh")] == ["甲是乙。", "丙呢？", "「丁。」", "戊！"]
    assert S.sentence_index(spans, 0) == 0
    assert S.sentence_index(spans, text.index("Ginn")) == 2


def test_segment_like_reference_aligns_words_when_counts_differ():
    assert len(S.split_sentences(CBS_TEXT, "en")) == 3  # the splitter alone cannot match 4 recordings
    spans = S.segment_like_reference(CBS_TEXT, CBS_ASR)
    parts = [CBS_TEXT[a:b] for a, b in spans]
    assert len(parts) == 4
    assert parts[0].startswith("CBS broadcast") and parts[0].endswith("during the game.")
    assert parts[2] == "It was the third-most watched U.S."
    assert parts[3] == "broadcast ever."


def test_segment_like_reference_direct_and_impossible():
    text = "One here. Two there."
    assert S.segment_like_reference(text, ["one here", "two there"]) == [(0, 9), (10, 20)]
    assert S.segment_like_reference(text, ["only one"]) == [(0, 20)]
    assert S.segment_like_reference("Too short.", ["a", "b", "c"]) is None


# --------------------------------------------------------------------------- SQuAD layout


def test_load_squad_errors_name_file_and_place(tmp_path):
    bad = tmp_path / "partial.json"
    bad.write_text('{"data": [{"title": "x", "paragr')
    with pytest.raises(S.DataPrepError, match=r"partial.json: not valid JSON .*partial download"):
        S.load_squad(bad)
    wrong = tmp_path / "list.json"
    wrong.write_text("[1, 2]")
    with pytest.raises(S.SquadFormatError, match="list.json: not SQuAD layout"):
        S.load_squad(wrong)
    with pytest.raises(FileNotFoundError, match="nope.json: file not found"):
        S.load_squad(tmp_path / "nope.json")
    obj = squad([{"context": "c", "qas": [{"id": "1"}]}])
    with pytest.raises(S.SquadFormatError, match=r"f.json: data\[0\].paragraphs\[0\].qas\[0\]: missing 'question'"):
        S.iter_paragraphs(obj, "f.json")


def test_iter_paragraphs_keeps_ids_and_answers():
    obj = {"data": [{"title": "A", "id": "7", "paragraphs": [
        {"id": "7-1", "context": "ctx", "qas": [qa("7-1-1", "q?", "ctx", 0)]},
        {"context": "other", "qas": []}]}]}
    pars = S.iter_paragraphs(obj)
    assert [p.paragraph_id for p in pars] == ["7-1", "0_1"]
    assert pars[0].qas[0] == S.QA("7-1-1", "q?", "ctx", 0)


def test_join_spoken_squad_checks_the_files_belong_together():
    text = squad([{"context": "Alpha one. Beta two.", "qas": [qa("q1", "a?", "Beta", 11), qa("q2", "b?", "Alpha", 0)]}])
    spoken = squad([{"context": "alpha one. beta two.", "qas": [qa("q1", "a?", "beta", 11)]}])
    joined = S.join_spoken_squad(spoken, text)
    assert len(joined) == 1 and joined[0].asr_context == "alpha one. beta two."
    assert [q.id for q in joined[0].asr_qas] == ["q1"] and len(joined[0].text.qas) == 2
    with pytest.raises(S.SquadFormatError, match="'Other' but .* has 'T'"):
        S.join_spoken_squad(squad(spoken["data"][0]["paragraphs"], title="Other"), text, "sp.json", "sq.json")
    stray = squad([{"context": "x", "qas": [qa("zz", "?", "x", 0)]}])
    with pytest.raises(S.SquadFormatError, match="question id zz is not in the same paragraph"):
        S.join_spoken_squad(stray, text)


def test_answer_sentence_pairs_locates_answers():
    par = S.Paragraph(0, 0, "t", "p1", "甲是乙。丙在丁。", [S.QA("a", "?", "丙", 4), S.QA("b", "?", "乙", 99),
                                                   S.QA("c", "?", "無", 0)])
    pairs, unplaced = S.answer_sentence_pairs([par], "zh")
    assert [(k, q.id) for _, k, _, q in pairs] == [(1, "a"), (0, "b")]  # b: wrong offset, found by search
    assert [(q.id, why) for _, q, why in unplaced] == [("c", "answer text not found in the context")]


def ex(key, ctx, target="ctx text", question=None, **kw):
    return S.Example(key=key, context_id=ctx, source=kw.pop("source", "/x.wav"), target=target,
                     question=question or f"question {key}", question_id=key, **kw)


def test_one_to_one_is_deterministic_and_drops_identical_texts():
    items = [ex("q1", "c1", "first"), ex("q2", "c1", "first"), ex("q3", "c2", "second"),
             ex("q4", "c3", "First"), ex("q5", "c4", "fourth", question="question q3")]
    kept, dropped = S.one_to_one(items)
    assert [e.key for e in kept] == ["q1", "q3"]
    assert [(e.key, why.split(": ")[1]) for e, why in dropped] == [
        ("q2", "context already has a question"),
        ("q4", "identical context text kept under another id"),
        ("q5", "identical question kept for another context")]
    assert [e.key for e in S.one_to_one(list(reversed(items)))[0]] == ["q5", "q4"]  # order decides
    assert [e.key for e in S.one_to_one(items, dedupe_text=False)[0]] == ["q1", "q3", "q4", "q5"]


# --------------------------------------------------------------------------- jsonl


def test_finalize_split_writes_jsonl_and_lists_every_skip(tmp_path):
    good = wav(tmp_path / "good.wav", 0.5, 24000)
    other = wav(tmp_path / "other.wav", 1.0)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF0000WAVEnonsense")
    empty = wav(tmp_path / "empty.wav", 0.0)
    qwav = wav(tmp_path / "q.wav", 0.3)
    examples = [
        ex("k1", "c1", "The game was played.", source=good, extra={"title": "T"}),
        ex("k2", "c1", "The game was played.", source=good),
        ex("k3", "c2", "Other text here", source=other, question_source=qwav, question_target="spoken q"),
        ex("k4", "c3", source=str(corrupt)),
        ex("k5", "c4", source=str(tmp_path / "missing.wav")),
        ex("k6", "c5", source=empty),
        ex("k7", "c6", source=other, question_source=str(tmp_path / "qmissing.wav")),
    ]
    res = S.finalize_split(examples, tmp_path / "out", "train", "en", pre_skipped=[("k0", "p", "no text")])
    recs = [json.loads(line) for line in res.jsonl.read_text().splitlines()]
    assert [r["key"] for r in recs] == ["k1", "k3"]
    r1, r3 = recs
    assert r1["source_len"] == 50 and r1["target_len"] == 4 and r1["title"] == "T" and r1["lang"] == "en"
    assert r1["source"] == good and "question_source" not in r1
    assert r3["question_source"] == qwav and r3["question_source_len"] == 30
    assert r3["question_target"] == "spoken q" and r3["question_target_len"] == 2
    pairs = [json.loads(line) for line in res.pairs.read_text().splitlines()]
    assert pairs == [{"query": "question k1", "pos": ["The game was played."], "neg": []},
                     {"query": "spoken q", "pos": ["Other text here"], "neg": []}]
    skipped = [line.split("\t") for line in (tmp_path / "out" / "train.skipped.tsv").read_text().splitlines()]
    reasons = {row[0]: row[2] for row in skipped[1:]}
    assert reasons["k0"] == "no text"
    assert reasons["k2"].startswith("one_to_one")
    assert reasons["k4"].startswith("context audio unreadable: ") and "corrupt.wav" in reasons["k4"]
    assert reasons["k5"] == "context audio missing"
    assert reasons["k6"] == "context audio empty (0 samples)"
    assert reasons["k7"] == "question audio missing"
    st = json.loads((tmp_path / "out" / "train.stats.json").read_text())
    assert st["examples_read"] == 8 and st["written"] == 2 and st["skipped_audio"] == 4
    assert st["skip_reasons"]["context audio unreadable"] == 1
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_finalize_split_empty_and_threshold_errors(tmp_path):
    missing = [ex(f"k{i}", f"c{i}", source=str(tmp_path / f"m{i}.wav")) for i in range(3)]
    msg = r"split 'test': no usable pairs out of 3 .*m0.wav \(context audio missing\)"
    with pytest.raises(S.EmptySplitError, match=msg):
        S.finalize_split(missing, tmp_path / "o", "test", "en")
    assert (tmp_path / "o" / "test.skipped.tsv").read_text().count("missing") == 3
    assert not (tmp_path / "o" / "test.jsonl").exists()
    good = wav(tmp_path / "g.wav")
    with pytest.raises(S.DataPrepError, match=r"3 of 4 examples unusable \(> 50%\)"):
        S.finalize_split(missing + [ex("ok", "cx", source=good)], tmp_path / "o", "dev", "en", max_skipped_frac=0.5)
    with pytest.raises(S.DataPrepError, match="lang must be"):
        S.finalize_split([], tmp_path / "o", "x", "fr")


def test_chinese_targets_count_characters(tmp_path):
    good = wav(tmp_path / "g.wav")
    res = S.finalize_split([ex("z1", "p_0", "聯邦總理是政府首腦。", source=good)], tmp_path, "test", "zh")
    rec = json.loads(res.jsonl.read_text(encoding="utf-8"))
    assert rec["target"] == "聯邦總理是政府首腦。" and rec["target_len"] == 10
    assert "聯邦" in res.jsonl.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes


def test_write_jsonl_is_atomic_on_error(tmp_path):
    path = tmp_path / "a.jsonl"
    S.write_jsonl(path, [{"a": 1}])

    def broken():
        yield {"a": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        S.write_jsonl(path, broken())
    assert S.read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]


def test_find_files_walks_nested_folders(tmp_path):
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "x" / "y" / "0_1_2.wav").write_bytes(b"")
    (tmp_path / "0_1_3.WAV").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    found = S.find_files(tmp_path, (".wav",))
    assert sorted(found) == ["0_1_2", "0_1_3"]
    with pytest.raises(FileNotFoundError, match="audio directory not found"):
        S.find_files(tmp_path / "none", (".wav",))

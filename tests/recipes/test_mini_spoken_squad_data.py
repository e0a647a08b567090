"""Data side of recipes/mini_spoken_squad: text normalisation, subset selection, espeak-ng
synthesis (resumable), FunASR jsonl, data checks, the option parser and run.sh stages 0-1.

Tests that synthesise speech need the espeak-ng program (the recipe requires it); they are
skipped with a reason when it is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mini_spoken_squad"
sys.path.insert(0, str(RECIPE / "local"))

import check_data  # noqa: E402
import make_jsonl  # noqa: E402
import prepare_text  # noqa: E402
import synthesize  # noqa: E402
import textnorm  # noqa: E402

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


# --------------------------------------------------------------------------- textnorm
@pytest.mark.parametrize("n,words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"), (42, "forty two"),
    (100, "one hundred"), (105, "one hundred five"), (8000, "eight thousand"),
    (1_234_567, "one million two hundred thirty four thousand five hundred sixty seven"),
])
def test_cardinal(n, words):
    assert textnorm.cardinal(n) == words


@pytest.mark.parametrize("n,words", [(1, "first"), (2, "second"), (3, "third"), (12, "twelfth"),
                                     (20, "twentieth"), (21, "twenty first"), (100, "one hundredth")])
def test_ordinal(n, words):
    assert textnorm.ordinal(n) == words


@pytest.mark.parametrize("n,words", [(1842, "eighteen forty two"), (1905, "nineteen oh five"),
                                     (1900, "nineteen hundred"), (2008, "two thousand eight"),
                                     (2015, "twenty fifteen"), (2000, "two thousand")])
def test_year_words(n, words):
    assert textnorm.year_words(n) == words


@pytest.mark.parametrize("text,target", [
    ("In 1842, the school had 8,000 students.",
     "in eighteen forty two the school had eight thousand students"),
    ("It cost $12.5 million (25%).", "it cost twelve point five million dollars twenty five percent"),
    ("£5.50 and $1", "five pounds and fifty cents and one dollar"),
    ("the 21st-century, mid-1990s", "the twenty first century mid nineteen nineties"),
    ("World War II and Louis XIV", "world war two and louis fourteen"),
    ("Mr. Smith met Dr. J. K. Rowling in St. Louis, U.S.",
     "mister smith met doctor j k rowling in saint louis u s"),
    ("from 1643\u20131715 at 10:30 p.m.", "from sixteen forty three to seventeen fifteen at ten thirty p m"),
    ("Beyonc\u00e9's \u201cGold\u201d \u5317\u4eac Z\u00fcrich [citation needed]", "beyonce's gold zurich"),
    ("MP3 players, 3/4 of B-52s, \u22125 \u00b0C", "mp three players three quarters of b fifty two s minus five degrees celsius"),
    ("her weight.:110 He said so.\":54\u201357 :64", "her weight he said so"),  # page citations
    ("in the 880s and '60s", "in the eight eighties and sixties"),
])
def test_normalize_targets(text, target):
    n = textnorm.normalize(text)
    assert n.target == target
    assert re.fullmatch(r"[a-z' ]+", n.target)
    assert n.target == textnorm.to_target(n.tts)


def test_normalize_keeps_prosody_punctuation_and_case_for_tts():
    n = textnorm.normalize("Hello, world. NASA (the agency) said so!")
    assert n.tts == "Hello, world. NASA, the agency, said so!"
    assert n.target == "hello world nasa the agency said so"


def test_split_sentences_respects_abbreviations():
    text = ("He lived in the U.S. for years. Then Mr. Smith moved to St. Louis. J. K. Rowling wrote it "
            "in 1997. Was it 1990? Yes! Next.")
    assert textnorm.split_sentences(text) == [
        "He lived in the U.S. for years.", "Then Mr. Smith moved to St. Louis.",
        "J. K. Rowling wrote it in 1997.", "Was it 1990?", "Yes!", "Next."]


def test_chunk_words_limits_length_and_prefers_pauses():
    n = textnorm.normalize("one two three four five, six seven eight nine ten eleven twelve thirteen")
    pieces = textnorm.chunk_words(n, 8)
    assert [p.target for p in pieces] == ["one two three four five",
                                          "six seven eight nine ten eleven twelve thirteen"]
    assert " ".join(p.target for p in pieces) == n.target
    with pytest.raises(ValueError):
        textnorm.chunk_words(n, 0)
    # the character cap cuts even when the word count is fine
    by_chars = textnorm.chunk_words(n, 100, max_chars=30)
    assert len(by_chars) > 1 and all(len(p.tts) <= 30 for p in by_chars)
    assert " ".join(p.target for p in by_chars) == n.target


@needs_espeak
def test_espeak_audit_flags_expanded_words():
    found = textnorm.espeak_expansions(["hello", "ii", "world", "xiv"])
    assert set(found) == {"ii", "xiv"}  # espeak-ng says "roman two", "roman fourteen"
    # the normaliser rewrites them, so nothing is left to flag
    words = textnorm.normalize("World War II and Louis XIV").target.split()
    assert textnorm.espeak_expansions(words) == {}


# --------------------------------------------------------------------------- prepare_text
def _squad(articles: list[tuple[str, list[str]]]) -> dict:
    data = []
    for ai, (title, paras) in enumerate(articles):
        ps = []
        for pi, ctx in enumerate(paras):
            first = ctx.split(". ")[-1]
            qas = [{"id": f"q{ai}{pi}a", "question": f"What about {title} {pi}?",
                    "answers": [{"text": first[:12], "answer_start": ctx.index(first[:12])}]},
                   {"id": f"q{ai}{pi}b", "question": "Second question?", "answers": [{"text": "x", "answer_start": 0}]}]
            ps.append({"context": ctx, "qas": qas})
        data.append({"title": title, "paragraphs": ps})
    return {"data": data, "version": "1.1"}


TRAIN_ARTICLES = [
    ("Alpha", ["The alpha school opened in 1842 with 40 students. It grew quickly after the war. "
               "Today it has 8,000 students.", "Alpha is known for its library. The library has 3 floors."]),
    ("Beta", ["Beta is a small town in the north. Its 2nd mayor was elected in 1905.",
              "The town has a river. Fishing is popular there."]),
    ("Gamma", ["Gamma is a held out article. It is used for development data only.",
               "Gamma has two paragraphs. This is the second one."]),
]
TEST_ARTICLES = [("Delta", ["Delta won Super Bowl 50 in 2016. The game was played in California.",
                            "Delta fans celebrated for 3 days. The parade was large."])]


@pytest.fixture()
def src_dir(tmp_path):
    tr, te = tmp_path / "train.json", tmp_path / "test.json"
    tr.write_text(json.dumps(_squad(TRAIN_ARTICLES)))
    te.write_text(json.dumps(_squad(TEST_ARTICLES)))
    out = tmp_path / "data_src"
    assert prepare_text.main(["build-src", "--train-json", str(tr), "--test-json", str(te),
                              "--out-dir", str(out)]) == 0
    return out


def test_build_src_keeps_first_question_per_context(src_dir):
    rows = prepare_text.read_jsonl(src_dir / prepare_text.TRAIN_SRC)
    assert len(rows) == 6
    assert all(r["qid"].endswith("a") for r in rows)  # first question, never the second
    assert rows[0]["id"] == "sqtr-a00-p000" and rows[0]["title"] == "Alpha"
    assert set(rows[0]) == set(prepare_text.SRC_FIELDS)
    test = prepare_text.read_jsonl(src_dir / prepare_text.TEST_SRC)
    assert [r["id"] for r in test] == ["sqdev-a00-p000", "sqdev-a00-p001"]


def test_build_src_rejects_bad_input(tmp_path):
    with pytest.raises(prepare_text.DataError, match="no top-level 'data'"):
        prepare_text.one_question_per_context({"version": 1}, "x", "f.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert prepare_text.main(["build-src", "--train-json", str(bad), "--test-json", str(bad),
                              "--out-dir", str(tmp_path / "o")]) == 1


def test_read_jsonl_reports_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": 1}\n{"title": 2}\n')
    with pytest.raises(prepare_text.DataError, match=r"x.jsonl:2: missing field"):
        prepare_text.read_jsonl(p, ("id",))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        prepare_text.read_jsonl(tmp_path / "nope.jsonl")


def test_answer_sentence_anchor():
    ctx = "First sentence here. The answer is Paris. Last one."
    segs, anchor = prepare_text.normalize_context(ctx, ctx.index("Paris"))
    assert len(segs) == 3 and anchor == 1
    assert prepare_text.normalize_context(ctx, -1)[1] == 0


def _prepare(src_dir, out, **kw):
    args = {"qa-train-contexts": 0, "qa-dev-contexts": 0, "qa-test-contexts": 0, "asr-train-utts": 0,
            "asr-dev-utts": 0, "heldout-articles": 1, "voices": "en-us en-gb-x-rp+f3",
            "rates": "160 180", "pitches": "50"} | kw
    argv = ["prepare", "--src-dir", str(src_dir), "--out-dir", str(out)]
    for k, v in args.items():
        argv += [f"--{k}", str(v)]
    assert prepare_text.main(argv) == 0
    return {s: prepare_text.read_jsonl(out / "text" / f"{s}.jsonl")
            for s in ("qa_train", "qa_dev", "qa_test", "asr_train", "asr_dev")}


def test_prepare_splits_are_disjoint_and_deterministic(src_dir, tmp_path):
    sp = _prepare(src_dir, tmp_path / "d1")
    assert [len(sp[s]) for s in ("qa_train", "qa_dev", "qa_test")] == [4, 2, 2]
    assert {r["title"] for r in sp["qa_dev"]} == {"Gamma"}  # last article held out
    assert all(r["context_id"] < "sqtr-a02" for r in sp["qa_train"] + sp["asr_train"])
    assert all(r["context_id"].startswith("sqtr-a02") for r in sp["asr_dev"])
    assert len(sp["asr_train"]) == 9 and len(sp["asr_dev"]) == 4  # every sentence has >= 3 words
    for r in sp["qa_train"] + sp["qa_test"]:
        assert r["question_voice"] != r["voice"]
        assert r["question_target"] == textnorm.normalize(r["question"]).target
    assert "eighteen forty two" in sp["qa_train"][0]["segments"][0]["target"]
    # same inputs -> byte-identical outputs
    _prepare(src_dir, tmp_path / "d2")
    for name in ("qa_train", "asr_train", "synth_jobs"):
        a = (tmp_path / "d1" / "text" / f"{name}.jsonl").read_text().replace(str(tmp_path / "d1"), "")
        b = (tmp_path / "d2" / "text" / f"{name}.jsonl").read_text().replace(str(tmp_path / "d2"), "")
        assert a == b
    jobs = prepare_text.read_jsonl(tmp_path / "d1" / "text" / "synth_jobs.jsonl")
    assert len(jobs) == 2 * (4 + 2 + 2) + 9 + 4
    assert all(j["max_sec"] is None for j in jobs if j["key"].startswith("qa_test"))


def test_prepare_subset_sizes(src_dir, tmp_path):
    sp = _prepare(src_dir, tmp_path / "d", **{"qa-train-contexts": 2, "qa-test-contexts": 1,
                                              "asr-train-utts": 3, "asr-dev-utts": 1})
    assert [len(sp[s]) for s in ("qa_train", "qa_test", "asr_train", "asr_dev")] == [2, 1, 3, 1]


# --------------------------------------------------------------------------- synthesis
def _job(tmp_path, key, segs, voice="en-us", **kw):
    return {"key": key, "wav": str(tmp_path / "wav" / f"{key}.wav"), "segments": segs, "voice": voice,
            "rate": 175, "pitch": 50, "max_sec": None, "anchor": 0} | kw


def _write_jobs(path, jobs):
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))


@needs_espeak
def test_synthesize_resumes_and_reports_failures(tmp_path):
    jobs = [_job(tmp_path, "a", ["Hello world, this is a test."]),
            _job(tmp_path, "b", ["Another short sentence."], voice="en-gb-x-rp+f3"),
            _job(tmp_path, "bad", ["This voice does not exist."], voice="xx-nonexistent")]
    jp, rp = tmp_path / "jobs.jsonl", tmp_path / "res.jsonl"
    _write_jobs(jp, jobs)
    assert synthesize.main(["--jobs", str(jp), "--results", str(rp), "--nj", "2", "--no-progress"]) == 1
    fails = [json.loads(x) for x in (tmp_path / "res.jsonl.failures.jsonl").read_text().splitlines()]
    assert [f["key"] for f in fails] == ["bad"] and "espeak-ng" in fails[0]["error"]
    info = sf.info(jobs[0]["wav"])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert 1.0 < info.duration < 4.0
    stats = json.loads((tmp_path / "res.jsonl.stats.json").read_text())
    assert (stats["synthesized"], stats["failed"]) == (2, 1)

    # resume: valid wavs are skipped; a corrupted wav and a changed job are redone
    _write_jobs(jp, jobs[:2])
    Path(jobs[1]["wav"]).write_bytes(b"RIFF0000garbage")
    s = synthesize.run(jp, rp, nj=1, progress=False)
    assert (s["skipped_valid"], s["synthesized"], s["failed"]) == (1, 1, 0)
    assert not (tmp_path / "res.jsonl.failures.jsonl").exists()
    jobs[0]["rate"] = 140
    _write_jobs(jp, jobs[:2])
    s = synthesize.run(jp, rp, nj=1, progress=False)
    assert (s["skipped_valid"], s["synthesized"]) == (1, 1)
    assert sf.info(jobs[0]["wav"]).duration > info.duration  # slower rate -> longer audio
    assert set(synthesize.load_results(rp)) == {"a", "b"}
    # pruning removes wavs no job refers to (and leftovers of interrupted writes), nothing else
    (tmp_path / "wav" / "stale.wav").write_bytes(b"x")
    (tmp_path / "wav" / "a.wav.tmp123.wav").write_bytes(b"x")
    (tmp_path / "wav" / "notes.txt").write_text("keep")
    s = synthesize.run(jp, rp, nj=1, progress=False, prune=True)
    assert s["pruned_orphan_wavs"] == 2 and s["skipped_valid"] == 2
    assert sorted(p.name for p in (tmp_path / "wav").iterdir()) == ["a.wav", "b.wav", "notes.txt"]


def test_synthesize_rejects_bad_job_list(tmp_path):
    jp = tmp_path / "jobs.jsonl"
    jp.write_text('{"key": "a"}\n')
    with pytest.raises(ValueError, match=r"jobs.jsonl:1: job lacks field"):
        synthesize.load_jobs(jp)


def test_choose_window_contains_anchor():
    lens = [10, 10, 10, 10, 10]
    assert synthesize.choose_window(lens, 0, 5, 0, 25) == (0, 2)
    assert synthesize.choose_window(lens, 0, 5, 4, 25) == (3, 5)
    assert synthesize.choose_window(lens, 0, 5, 2, 5) == (2, 3)  # anchor alone, even if too long


@needs_espeak
def test_synthesize_truncates_long_context_around_anchor(tmp_path):
    segs = [f"This is sentence number {w} of a rather long paragraph about nothing at all."
            for w in ("one", "two", "three", "four", "five", "six")]
    job = _job(tmp_path, "long", segs, max_sec=9.0, anchor=4)
    r = synthesize.synth_job(job)
    assert r["duration"] <= 9.0
    assert r["seg_start"] <= 4 < r["seg_end"] and r["seg_end"] - r["seg_start"] < 6
    whole = synthesize.synth_job(_job(tmp_path, "whole", segs))
    assert (whole["seg_start"], whole["seg_end"]) == (0, 6) and whole["duration"] > 20


# --------------------------------------------------------------------------- jsonl + checks
@pytest.fixture()
def built(src_dir, tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp_path / "data"
    _prepare(src_dir, out, **{"qa-train-max-sec": 4.0, "asr-train-utts": 3, "asr-dev-utts": 2})
    s = synthesize.run(out / "text" / "synth_jobs.jsonl", out / "synth_results.jsonl", nj=2, progress=False)
    assert s["failed"] == 0
    assert make_jsonl.main(["--text-dir", str(out / "text"), "--results", str(out / "synth_results.jsonl"),
                            "--out-dir", str(out)]) == 0
    return out


def test_make_jsonl_funasr_fields(built):
    asr = [json.loads(x) for x in (built / "asr_train.jsonl").read_text().splitlines()]
    assert len(asr) == 3
    for r in asr:
        assert set(r) == {"key", "source", "source_len", "target", "target_len"}
        info = sf.info(r["source"])
        assert Path(r["source"]).is_absolute()
        assert r["source_len"] == int(info.frames * 100 / 16000)
        assert r["target_len"] == len(r["target"].split())
    qa = [json.loads(x) for x in (built / "qa_train.jsonl").read_text().splitlines()]
    assert len(qa) == 4
    for r in qa:
        assert r["question_source"] != r["source"] and Path(r["question_source"]).is_file()
        assert r["question_source_len"] == int(sf.info(r["question_source"]).frames * 100 / 16000)
        assert r["question"].startswith("What about")
        assert r["n_sentences"] <= r["n_sentences_total"]
    assert any(r["n_sentences"] < r["n_sentences_total"] for r in qa)  # 4 s limit cuts some contexts
    test = [json.loads(x) for x in (built / "qa_test.jsonl").read_text().splitlines()]
    assert all(r["n_sentences"] == r["n_sentences_total"] for r in test)  # test contexts kept whole
    clean = json.loads((built / "qa_test_clean.json").read_text())
    assert [c["context_id"] for c in clean] == [r["context_id"] for r in test]
    assert clean[0]["context"].startswith("Delta won Super Bowl 50")


def test_make_jsonl_fails_on_missing_wavs(built):
    res = built / "synth_results.jsonl"
    lines = res.read_text().splitlines()
    res.write_text("\n".join(lines[1:]) + "\n")
    assert make_jsonl.main(["--text-dir", str(built / "text"), "--results", str(res),
                            "--out-dir", str(built / "o")]) == 1
    assert make_jsonl.main(["--text-dir", str(built / "text"), "--results", str(res),
                            "--out-dir", str(built / "o"), "--allow-missing"]) == 0


def test_check_data_passes_then_catches_problems(built, capsys):
    assert check_data.main(["--data-dir", str(built), "--profile", "t"]) == 0
    summary = json.loads((built / "summary.json").read_text())
    assert summary["ok"] and summary["splits"]["qa_test"]["utterances"] == 2
    assert summary["total_hours"] > 0 and "synthesis" in summary and "text" in summary
    # a deleted wav and a wrong source_len are both reported
    rows = [json.loads(x) for x in (built / "asr_dev.jsonl").read_text().splitlines()]
    Path(rows[0]["source"]).unlink()
    rows[1]["source_len"] += 50
    (built / "asr_dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert check_data.main(["--data-dir", str(built)]) == 1
    err = capsys.readouterr().err
    assert "wav missing" in err and "source_len" in err
    assert json.loads((built / "summary.json").read_text())["n_errors"] == 2


# --------------------------------------------------------------------------- shell side
def _bash(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "test.sh", *args], capture_output=True, text=True)


PO = f"""set -euo pipefail
stage=0
dry_run=false
foo_bar=x
. {RECIPE}/utils/parse_options.sh
echo "stage=$stage dry_run=$dry_run foo_bar=$foo_bar rest=$*"
"""


def test_parse_options_sets_existing_variables():
    r = _bash(PO, "--stage", "-1", "--foo-bar", "a b", "--dry-run=true", "pos", "--x")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "stage=-1 dry_run=true foo_bar=a b rest=pos --x"


@pytest.mark.parametrize("args,msg", [(["--nope", "1"], "unknown option --nope"),
                                      (["--stage"], "needs a value"),
                                      (["--dry-run", "yes"], "takes true or false")])
def test_parse_options_errors(args, msg):
    r = _bash(PO, *args)
    assert r.returncode == 1 and msg in r.stderr and r.stdout == ""


def test_run_sh_help_lists_variables():
    r = subprocess.run(["bash", str(RECIPE / "run.sh"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert re.search(r"--stop-stage\s+100", r.stdout) and "--qa-test-contexts" in r.stdout
    assert "--joint-nce-weight 1.0" in r.stdout  # stage-4 defaults, sourced from conf/joint.sh


@needs_espeak
def test_run_sh_stages_0_1_tiny_and_idempotent(tmp_path):
    rec = tmp_path / "recipe"
    rec.mkdir()
    for name in ("run.sh", "local", "utils", "conf", "data_src", "release"):
        src = RECIPE / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, rec / name)
    cmd = ["bash", str(rec / "run.sh"), "--python", sys.executable, "--stop-stage", "1",
           "--qa-train-contexts", "3", "--qa-dev-contexts", "2", "--qa-test-contexts", "2",
           "--asr-train-utts", "4", "--asr-dev-utts", "2", "--voices", "en-us en-us+f3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((rec / "data" / "quick" / "summary.json").read_text())
    assert s["ok"] and {k: v["utterances"] for k, v in s["splits"].items()} == {
        "asr_train": 4, "asr_dev": 2, "qa_train": 3, "qa_dev": 2, "qa_test": 2}
    assert (rec / "exp" / "quick" / "logs" / "stage0_data.log").is_file()
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0 and "already done" in r2.stderr and "already checked" in r2.stderr

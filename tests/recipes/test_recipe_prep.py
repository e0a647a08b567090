"""Stage 0 of the four full-size recipes on fixtures in each dataset's real layout.

Per recipe: the preparation script runs in-process on the committed fixture files plus
placeholder audio written by the recipe's ``local/make_fixture_audio.py`` (one file corrupt,
one missing), and the resulting jsonl is checked; then ``bash run.sh --stage 0 --stop_stage 0
--download false`` runs twice (the second run must skip via the done-marker). The download
manifest runner is exercised against a local HTTP server.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from clsr_testing import load_script

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
FOUR = ("spoken_squad", "librisqa", "slue_sqa5", "drcd")


def load(recipe: str, rel: str):
    path = RECIPES / recipe / rel
    return load_script(path, f"_recipe_{recipe}_{path.stem}")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def skipped(path: Path) -> dict[str, tuple[str, str]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    return {r[0]: (r[1], r[2]) for r in rows}


def frames_10ms(path: str) -> int:
    info = sf.info(path)
    return int(info.frames * 100 // info.samplerate)


def check_common(recs: list[dict], one_to_one: bool = True):
    for r in recs:
        assert os.path.isabs(r["source"]) and os.path.isfile(r["source"])
        assert r["source_len"] == frames_10ms(r["source"]) > 0
        assert r["target"] and r["question"] and r["context_id"]
        if "question_source" in r:
            assert r["question_source_len"] == frames_10ms(r["question_source"])
            assert r["question_target"]
    assert len({r["key"] for r in recs}) == len(recs)
    if one_to_one:
        assert len({r["context_id"] for r in recs}) == len(recs)


# --------------------------------------------------------------------------- shared utils


def test_utils_are_shared_by_relative_symlinks():
    real = RECIPES / "spoken_squad" / "utils"
    assert (real / "parse_options.sh").is_file() and not real.is_symlink()
    for recipe in FOUR[1:]:
        link = RECIPES / recipe / "utils"
        assert link.is_symlink() and os.readlink(link) == "../spoken_squad/utils"
        assert (link / "parse_options.sh").resolve() == (real / "parse_options.sh").resolve()
    for recipe in FOUR:
        for name in ("run.sh", "README.md", "RESULTS.md"):
            assert (RECIPES / recipe / name).is_file(), f"{recipe}/{name}"
        assert "not been run to the end" in (RECIPES / recipe / "RESULTS.md").read_text()
        assert "paper, not reproduced here" in (RECIPES / recipe / "RESULTS.md").read_text()


PARSE_DEMO = """
stage=0
stop_stage=7
download=true
raw_dir=downloads
help_message="usage: demo"
. {po}
echo "stage=$stage stop=$stop_stage download=$download raw=$raw_dir rest=$*"
"""


def run_demo(tmp_path, *args, script=PARSE_DEMO):
    demo = tmp_path / "demo.sh"
    demo.write_text(script.format(po=RECIPES / "spoken_squad" / "utils" / "parse_options.sh"))
    return subprocess.run(["bash", str(demo), *args], capture_output=True, text=True)


def test_parse_options(tmp_path):
    out = run_demo(tmp_path, "--stage", "2", "--stop-stage=5", "--raw_dir", "a b", "pos", "--stage", "9")
    assert out.returncode == 0
    assert out.stdout.strip() == "stage=2 stop=5 download=true raw=a b rest=pos --stage 9"
    bad = run_demo(tmp_path, "--bogus", "1")
    assert bad.returncode == 1 and "unknown option --bogus" in bad.stderr
    assert run_demo(tmp_path, "--download", "yes").returncode == 1
    assert "needs a value" in run_demo(tmp_path, "--stage").stderr
    assert run_demo(tmp_path, "--help").stdout.strip() == "usage: demo"
    conf = tmp_path / "opts.conf"
    conf.write_text("stage=4\nraw_dir=/data\n")
    out = run_demo(tmp_path, "--config", str(conf), "--stage", "5")
    assert "stage=5 stop=7 download=true raw=/data" in out.stdout
    # a script with its own $config variable gets it set like any other option
    own = "config=a.yaml\n. {po}\necho \"config=$config\"\n"
    assert run_demo(tmp_path, "--config", "b.yaml", script=own).stdout.strip() == "config=b.yaml"


# --------------------------------------------------------------------------- Spoken-SQuAD


@pytest.fixture(scope="module")
def ssq_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("ssq") / "raw"
    load("spoken_squad", "local/make_fixture_audio.py").main(["--out", str(raw), "--corrupt", "0_1_2",
                                                              "--omit", "1_0_0"])
    return raw


def test_spoken_squad_sentence_pairs(ssq_raw, tmp_path):
    prep = load("spoken_squad", "local/prepare_spoken_squad.py")
    assert prep.main(["--raw-dir", str(ssq_raw), "--out-dir", str(tmp_path)]) == 0
    train, test = jsonl(tmp_path / "train.jsonl"), jsonl(tmp_path / "test.jsonl")
    check_common(train)
    check_common(test)
    squad = json.loads((ssq_raw / "train-v1.1.json").read_text())
    questions = {q["id"]: q["question"] for a in squad["data"] for p in a["paragraphs"] for q in p["qas"]}
    for r in train:
        a, p, s = map(int, r["context_id"].split("_"))
        assert r["source"].endswith(f"Spoken-SQuAD_audio/train_wav/{a}_{p}_{s}.wav")
        assert r["target"] in " ".join(squad["data"][a]["paragraphs"][p]["context"].split())
        assert r["question"] == questions[r["key"]] and r["target_len"] == len(r["target"].split())
    by_ctx = {r["context_id"]: r for r in train}
    # the first question (file order) answered in sentence 1 of Super Bowl 50's first paragraph
    assert by_ctx["0_0_1"]["key"] == "56be4db0acb8001400a502ec"
    assert by_ctx["0_0_1"]["target"].startswith("The American Football Conference (AFC) champion Denver")
    assert by_ctx["0_0_1"]["asr_text"].startswith("the american football conference a f c c champion")
    assert all(r["source"].endswith(f"dev_wav/{r['context_id']}.wav") for r in test)
    stats = json.loads((tmp_path / "train.stats.json").read_text())
    skips = skipped(tmp_path / "train.skipped.tsv")
    corrupt = [k for k, (path, why) in skips.items() if path.endswith("0_1_2.wav")]
    assert corrupt and all(skips[k][1].startswith("context audio unreadable") for k in corrupt)
    assert stats["skip_reasons"]["context audio unreadable"] == len(corrupt)
    assert [why for path, why in skips.values() if path.endswith("1_0_0.wav")][0] == "context audio missing"
    assert stats["paragraphs_aligned_by_words"] >= 1  # Super Bowl paragraph 3 ("U.S." split)
    assert stats["paragraphs_not_aligned"] == 0
    assert stats["written"] == len(train) and stats["one_to_one"] is True
    pairs = jsonl(tmp_path / "train.pairs.jsonl")
    assert pairs[0] == {"query": train[0]["question"], "pos": [train[0]["target"]], "neg": []}


def test_spoken_squad_all_questions_and_paragraph_unit(ssq_raw, tmp_path):
    prep = load("spoken_squad", "local/prepare_spoken_squad.py")
    prep.main(["--raw-dir", str(ssq_raw), "--out-dir", str(tmp_path / "all"), "--one-to-one", "false",
               "--splits", "train"])
    every = jsonl(tmp_path / "all" / "train.jsonl")
    assert len(every) == json.loads((tmp_path / "all" / "train.stats.json").read_text())["questions_with_audio"]
    assert len({r["context_id"] for r in every}) < len(every)  # several questions share a sentence

    prep.main(["--raw-dir", str(ssq_raw), "--out-dir", str(tmp_path / "par"), "--context-unit", "paragraph"])
    recs = jsonl(tmp_path / "par" / "train.jsonl")
    check_common(recs)
    wav_dir = ssq_raw / "Spoken-SQuAD_audio" / "train_wav"
    r = next(x for x in recs if x["context_id"] == "0_0")
    pieces = sorted(wav_dir.glob("0_0_*.wav"))
    assert sf.info(r["source"]).samplerate == 16000
    assert abs(sf.info(r["source"]).duration - sum(sf.info(str(p)).duration for p in pieces)) < 0.01
    spoken = json.loads((ssq_raw / "train-v1.1.json").read_text())
    assert r["target"] == " ".join(spoken["data"][0]["paragraphs"][0]["context"].split())
    assert "0_1" not in {x["context_id"] for x in recs}  # its sentence 2 recording is corrupt
    reasons = {why for _, why in skipped(tmp_path / "par" / "train.skipped.tsv").values()}
    assert any("0_1_2.wav" in why and why.startswith("context audio unreadable") for why in reasons)


def test_spoken_squad_extra_recording_is_not_guessed(ssq_raw, tmp_path):
    raw = tmp_path / "raw"
    for name in ("spoken_test-v1.1.json", "dev-v1.1.json"):
        raw.mkdir(exist_ok=True)
        (raw / name).write_bytes((ssq_raw / name).read_bytes())
    wav_dir = raw / "Spoken-SQuAD_audio" / "dev_wav"
    wav_dir.mkdir(parents=True)
    for src in (ssq_raw / "Spoken-SQuAD_audio" / "dev_wav").glob("*.wav"):
        (wav_dir / src.name).write_bytes(src.read_bytes())
    (wav_dir / "0_0_7.wav").write_bytes((wav_dir / "0_0_0.wav").read_bytes())  # paragraph 0 has 4 sentences
    prep = load("spoken_squad", "local/prepare_spoken_squad.py")
    prep.main(["--raw-dir", str(raw), "--out-dir", str(tmp_path / "o"), "--splits", "test"])
    assert not [r for r in jsonl(tmp_path / "o" / "test.jsonl") if r["context_id"].startswith("0_0_")]
    reasons = [why for _, why in skipped(tmp_path / "o" / "test.skipped.tsv").values()]
    assert "sentence count mismatch: 8 recordings but 4 ASR sentences" in reasons


def test_spoken_squad_mismatched_files_fail_clearly(ssq_raw, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("spoken_train-v1.1.json", "dev-v1.1.json"):
        (raw / name).write_bytes((ssq_raw / name).read_bytes())
    (raw / "train-v1.1.json").write_bytes((ssq_raw / "dev-v1.1.json").read_bytes())  # wrong split
    prep = load("spoken_squad", "local/prepare_spoken_squad.py")
    from funasr_clsr.data_prep.squad_format import SquadFormatError

    with pytest.raises(SquadFormatError, match="are these the same split"):
        prep.main(["--raw-dir", str(raw), "--out-dir", str(tmp_path / "o"), "--splits", "train"])


# --------------------------------------------------------------------------- LibriSQA


def test_librisqa_pairs_and_librispeech_asr(tmp_path):
    raw = tmp_path / "raw"
    load("librisqa", "local/make_fixture_audio.py").main(["--out", str(raw), "--corrupt", "2094-142345-0004",
                                                          "--omit", "16-122827-0003"])
    prep = load("librisqa", "local/prepare_librisqa.py")
    out = tmp_path / "data"
    assert prep.main(["--raw-dir", str(raw), "--out-dir", str(out), "--librispeech-asr", "train-clean-360"]) == 0
    train, test = jsonl(out / "train.jsonl"), jsonl(out / "test.jsonl")
    check_common(train)
    check_common(test)
    assert [r["key"] for r in train] == ["14-208-0000", "14-208-0001", "16-122827-0002"]
    assert train[0]["source"] == str(raw / "LibriSpeech/train-clean-360/14/208/14-208-0000.flac")
    assert train[0]["target"] == "THE MILLER KEPT HIS GRAIN IN THE LOFT ABOVE THE GREAT WHEEL"
    assert train[0]["answer"].startswith("The miller kept") and train[0]["duration"] == 3.9
    skips = skipped(out / "train.skipped.tsv")
    assert skips["14-208-0001-q1"][1].startswith("one_to_one")
    assert skips["16-122827-0003"] == (str(raw / "LibriSpeech/train-clean-360/16/122827/16-122827-0003.flac"),
                                       "context audio missing")
    assert skipped(out / "test.skipped.tsv")["2094-142345-0004"][1].startswith("context audio unreadable")
    asr = jsonl(out / "librispeech_asr.jsonl")
    assert {r["key"] for r in asr} == {"14-208-0000", "14-208-0001", "16-122827-0002"}
    assert set(asr[0]) == {"key", "source", "source_len", "target", "target_len"}


def test_librisqa_unknown_fields_are_listed(tmp_path):
    prep = load("librisqa", "local/prepare_librisqa.py")
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps([{"audio": "x.flac", "question": "q", "answer": "a"}]))
    with pytest.raises(prep.LibriSQAFormatError,
                       match=r"record 0 lacks \['speech_path', 'text'\]; expected LibriSQA Part I fields"):
        prep.read_records(bad)
    part2 = tmp_path / "p2.json"
    part2.write_text(json.dumps({"data": [{"speech_path": "a.flac", "question_and_option": "q", "answer": "A"}]}))
    with pytest.raises(prep.LibriSQAFormatError, match="Part II"):
        prep.read_records(part2)
    lines = tmp_path / "l.jsonl"
    lines.write_text("\n".join(json.dumps({"speech_path": f"{i}-1-1.flac", "question": "q", "answer": "a",
                                           "text": "t"}) for i in range(2)))
    assert len(prep.read_records(lines)) == 2


# --------------------------------------------------------------------------- SLUE-SQA-5


def test_slue_sqa5_spoken_question_pairs(tmp_path):
    raw = tmp_path / "raw"
    load("slue_sqa5", "local/make_fixture_audio.py").main(["--out", str(raw), "--corrupt", "q_ft_003",
                                                           "--omit", "d_school"])
    prep = load("slue_sqa5", "local/prepare_slue_sqa5.py")
    out = tmp_path / "data"
    assert prep.main(["--raw-dir", str(raw), "--out-dir", str(out)]) == 0
    train = jsonl(out / "train.jsonl")
    check_common(train, one_to_one=False)
    assert [r["question_id"] for r in train] == ["q_ft_001", "q_ft_002", "q_ft_004"]
    assert train[0]["context_id"] == train[1]["context_id"] == "d_lighthouse"  # shared document kept twice
    r = train[0]
    assert r["source"] == str(raw / "slue-sqa5/fine-tune/document/d_lighthouse.wav")
    assert r["question_source"] == str(raw / "slue-sqa5/fine-tune/question/q_ft_001.wav")
    assert r["target"].startswith("the lighthouse on the northern cape was built in eighteen seventy one")
    assert r["question_target"] == "when was the lighthouse built"
    assert r["question"] == "When was the lighthouse built?"
    assert r["answer_spans"] == '[["eighteen seventy one", 1.25, 1.80]]'
    assert skipped(out / "train.skipped.tsv")["q_ft_003_d_river"][1].startswith("question audio unreadable")
    assert [why for _, why in skipped(out / "test.skipped.tsv").values()] == ["context audio missing"]
    assert jsonl(out / "train.pairs.jsonl")[0]["query"] == "when was the lighthouse built"
    prep.main(["--raw-dir", str(raw), "--out-dir", str(tmp_path / "o2o"), "--one-to-one", "true", "--splits", "train"])
    assert len(jsonl(tmp_path / "o2o" / "train.jsonl")) == 2


def test_slue_sqa5_missing_columns_are_listed(tmp_path):
    prep = load("slue_sqa5", "local/prepare_slue_sqa5.py")
    tsv = tmp_path / "slue-sqa5_dev.tsv"
    tsv.write_text("question_id\tquestion\tdocument_id\nq1\twhat\td1\n")
    with pytest.raises(prep.SlueFormatError, match=r"missing column\(s\) \['normalized_question_text\|"):
        prep.read_tsv(tsv)


# --------------------------------------------------------------------------- DRCD / ODSQA


def tone_tts_cmd() -> str:
    return f"{sys.executable} {RECIPES / 'drcd' / 'local' / 'tone_tts.py'} {{text_file}} {{wav}}"


def test_drcd_tts_training_and_odsqa_test(tmp_path):
    raw = tmp_path / "raw"
    load("drcd", "local/make_fixture_audio.py").main(["--out", str(raw), "--corrupt", "1185-2_1",
                                                      "--omit", "1190-6-2"])
    prep = load("drcd", "local/prepare_drcd.py")
    out, tts = tmp_path / "data", tmp_path / "tts"
    from funasr_clsr.data_prep.squad_format import DataPrepError

    with pytest.raises(DataPrepError, match="set --tts_cmd"):
        prep.main(["all", "--raw-dir", str(raw), "--out-dir", str(out), "--tts-dir", str(tts)])
    assert prep.main(["all", "--raw-dir", str(raw), "--out-dir", str(out), "--tts-dir", str(tts),
                      "--tts-cmd", tone_tts_cmd(), "--nj", "2"]) == 0
    manifest = (out / "train.tts.tsv").read_text(encoding="utf-8").splitlines()
    train = jsonl(out / "train.jsonl")
    check_common(train)
    assert len(manifest) == 2 * len(train) == 24
    r = train[0]
    assert r["lang"] == "zh" and r["target_len"] == len(r["target"].replace(" ", ""))
    assert Path(r["source"]).name == f"c_{r['context_id']}.wav"
    assert Path(r["question_source"]).name == f"q_{r['key']}.wav"
    assert r["question_target"] == r["question"]

    test = jsonl(out / "test.jsonl")
    check_common(test)
    dev = json.loads((raw / "DRCD_dev.json").read_text(encoding="utf-8"))
    text = {p["id"]: p["context"] for a in dev["data"] for p in a["paragraphs"]}
    for r in test:
        pid, k = r["context_id"].rsplit("_", 1)
        assert r["target"] in text[pid] and Path(r["source"]).name == f"{pid}_{k}.wav"
        assert Path(r["question_source"]).name == f"{r['key']}.wav"
        assert r["question_asr"] and r["context_asr"]  # ODSQA's ASR text kept, not used as target
    first = next(r for r in test if r["key"] == "1147-5-1")
    assert first["target"] == "在歐洲，梵語的學術研究，由德國學者陸特和漢斯雷頓開創。"
    skips = skipped(out / "test.skipped.tsv")
    assert skips["1185-2-1"][1].startswith("context audio unreadable")
    assert skips["1190-6-2"][1] == "question audio missing"
    assert any(why.startswith("one_to_one") for _, why in skips.values())

    # a paragraph with more recordings than DRCD sentences cannot be paired: listed, not guessed
    audio = raw / "odsqa_audio" / "audio_data"
    (audio / "1147-5_9.wav").write_bytes((audio / "1147-5_0.wav").read_bytes())
    odsqa_args = ["odsqa", "--odsqa-json", str(raw / "ODSQA_spokenq_test-v1.1.json"), "--drcd-dev",
                  str(raw / "DRCD_dev.json"), "--audio-dir", str(raw / "odsqa_audio")]
    prep.main(odsqa_args + ["--out-dir", str(tmp_path / "extra")])
    assert "1147-5-1" not in {r["key"] for r in jsonl(tmp_path / "extra" / "test.jsonl")}
    assert skipped(tmp_path / "extra" / "test.skipped.tsv")["1147-5-1"][1].startswith("recording count mismatch")

    with pytest.raises(DataPrepError, match=r"no ODSQA context recording matches .*e\.g\. \['1147-5-1'"):
        prep.main(["odsqa", "--odsqa-json", str(raw / "ODSQA_spokenq_test-v1.1.json"), "--drcd-dev",
                   str(raw / "DRCD_dev.json"), "--audio-dir", str(raw / "odsqa_audio"), "--out-dir",
                   str(tmp_path / "x"), "--context-name", "{pid}-sent{k1}"])


def test_tts_failures_are_listed(tmp_path):
    tts = load("drcd", "local/tts_synthesize.py")
    manifest = tmp_path / "m.tsv"
    manifest.write_text("c_1\t第一句。\nq_2\tbad\n", encoding="utf-8")
    script = tmp_path / "tts.sh"
    script.write_text(f'grep -q bad "$1" && exit 3\n{sys.executable} {RECIPES}/drcd/local/tone_tts.py "$1" "$2"\n')
    rc = tts.main(["--manifest", str(manifest), "--out-dir", str(tmp_path / "w"), "--cmd",
                   f"bash {script} {{text_file}} {{wav}}", "--nj", "1"])
    assert rc == 0
    assert (tmp_path / "w" / "c_1.wav").is_file() and not (tmp_path / "w" / "q_2.wav").exists()
    assert (tmp_path / "w" / "failed.tsv").read_text().startswith("q_2\texit 3")
    assert tts.main(["--manifest", str(manifest), "--out-dir", str(tmp_path / "w2"), "--cmd",
                     "false {wav} {text}"]) == 1


# --------------------------------------------------------------------------- run.sh stage 0


def fixture_tree(recipe: str, raw: Path) -> list[str]:
    """Write the fixture tree; return run.sh options specific to the recipe."""
    load(recipe, "local/make_fixture_audio.py").main(["--out", str(raw)])
    if recipe == "drcd":
        return ["--tts_cmd", tone_tts_cmd(), "--nj", "2"]
    if recipe == "librisqa":
        return ["--librispeech_asr_subsets", "train-clean-360,test-clean"]
    return []


@pytest.mark.parametrize("recipe", FOUR)
def test_run_sh_stage0_on_fixtures_is_idempotent(recipe, tmp_path):
    raw = tmp_path / "raw"
    extra = fixture_tree(recipe, raw)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    cmd = ["bash", str(RECIPES / recipe / "run.sh"), "--stage", "0", "--stop_stage", "0", "--download", "false",
           "--raw_dir", str(raw), "--data_dir", str(tmp_path / "data"), "--exp_dir", str(tmp_path / "exp"), *extra]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    data = tmp_path / "data"
    assert (data / ".stage0.done").is_file()
    for split in ("train", "test"):
        recs = jsonl(data / f"{split}.jsonl")
        assert recs and (data / f"{split}.stats.json").is_file() and (data / f"{split}.pairs.jsonl").is_file()
    assert (tmp_path / "exp" / "logs" / "stage0_prepare.log").read_text().count("pairs written") >= 2
    mtime = (data / "train.jsonl").stat().st_mtime_ns

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 0 and "stage 0: already done" in second.stdout
    assert (data / "train.jsonl").stat().st_mtime_ns == mtime

    typo = subprocess.run(cmd + ["--stop-stag", "0"], capture_output=True, text=True, env=env, timeout=60)
    assert typo.returncode == 1 and "unknown option --stop_stag" in typo.stderr


# --------------------------------------------------------------------------- download manifest


def test_download_manifest_against_local_server(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.json").write_text('{"data": []}')
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("0_0_0.wav", b"RIFF")
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("Audio/train_wav.zip", inner.getvalue())
    (site / "audio.zip").write_bytes(outer.getvalue())
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tf:
        info = tarfile.TarInfo("LibriSpeech/test-clean/1/2/1-2-3.flac")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    (site / "t.tar.gz").write_bytes(tgz.getvalue())
    md5 = hashlib.md5((site / "t.tar.gz").read_bytes()).hexdigest()
    manifest = tmp_path / "m.tsv"
    manifest.write_text(
        "# comment\n"
        f"json\t{{base_url}}/a.json\ta.json\t-\t-\t-\n"
        f"audio\t{{base_url}}/audio.zip\taudio.zip\t-\t-\t.\n"
        f"audio_inner\t-\tAudio/train_wav.zip\t-\t-\tAudio/train_wav\n"
        f"ls\t{{base_url}}/t.tar.gz\tt.tar.gz\t{md5}\t-\t.\n")

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    runner = load("spoken_squad", "utils/download_manifest.py")
    raw = tmp_path / "raw"
    try:
        assert runner.main([str(manifest), "--raw-dir", str(raw), "--base-url", base, "--quiet",
                            "--remove-archives"]) == 0
        assert (raw / "a.json").read_text() == '{"data": []}'
        assert (raw / "Audio/train_wav/0_0_0.wav").read_bytes() == b"RIFF"
        assert (raw / "LibriSpeech/test-clean/1/2/1-2-3.flac").read_bytes() == b"abc"
        assert not (raw / "audio.zip").exists() and not (raw / "t.tar.gz").exists()
        httpd.shutdown()  # a second run must not need the network
        assert runner.main([str(manifest), "--raw-dir", str(raw), "--base-url", base, "--quiet"]) == 0
        with pytest.raises(ValueError, match="no row named"):
            runner.main([str(manifest), "--raw-dir", str(raw), "--only", "nope"])
    finally:
        httpd.server_close()


# --------------------------------------------------------------------------- pretrained Paraformer (stages 1-2)


def _python_shim(bin_dir: Path, calls: Path) -> None:
    """A ``python`` on PATH that records training calls (and succeeds) and runs everything else for real."""
    bin_dir.mkdir()
    shim = bin_dir / "python"
    shim.write_text(f'#!/usr/bin/env bash\nif [ "$1 $2" = "-m funasr_clsr.bin.train" ]; then\n'
                    f'  printf "%s\\n" "$*" >> {calls}; exit 0\nfi\nexec {sys.executable} "$@"\n')
    shim.chmod(0o755)


def test_run_sh_starts_stage2_from_the_pretrained_paraformer_and_its_cmvn(tmp_path):
    raw = tmp_path / "raw"
    fixture_tree("spoken_squad", raw)
    calls = tmp_path / "train_calls.txt"
    _python_shim(tmp_path / "bin", calls)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
               f"{os.environ['PATH']}", OMP_NUM_THREADS="1")
    tiny_te = REPO / "tests" / "fixtures" / "tiny_text_encoder"
    base = ["bash", str(RECIPES / "spoken_squad" / "run.sh"), "--download", "false", "--raw_dir", str(raw),
            "--data_dir", str(tmp_path / "data"), "--text_encoder", str(tiny_te), "--ngpu", "0"]

    # the default (raw_dir/paraformer-en) is absent: stage 1 stops with one line naming it and the way out
    out = subprocess.run(base + ["--exp_dir", str(tmp_path / "exp0"), "--stage", "0", "--stop_stage", "1"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 1
    err = [line for line in out.stdout.splitlines() if "error:" in line]
    assert len(err) == 1 and f"{raw}/paraformer-en: no model.pt there" in err[0] and "--init_paraformer none" in err[0]

    para = tmp_path / "paraformer-en"  # a pretrained Paraformer as ModelScope ships it (model.pt, am.mvn, ...)
    para.mkdir()
    (para / "model.pt").write_bytes(b"weights")
    (para / "am.mvn").write_text("<Nnet>\n<AddShift> 560 560\n</Nnet>\n")
    out = subprocess.run(base + ["--exp_dir", str(tmp_path / "exp"), "--stage", "1", "--stop_stage", "2",
                                 "--init_paraformer", str(para)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "data" / "am.mvn").read_text() == (para / "am.mvn").read_text()  # not recomputed
    (call,) = calls.read_text().splitlines()
    assert f"++init_param={para}/model.pt" in call and f"++frontend_conf.cmvn_file={tmp_path}/data/am.mvn" in call

    # none: CMVN from this corpus and no init_param
    calls.unlink()
    out = subprocess.run(base + ["--exp_dir", str(tmp_path / "exp2"), "--stage", "1", "--stop_stage", "2",
                                 "--init_paraformer", "none", "--force", "true"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (call,) = calls.read_text().splitlines()
    assert "init_param" not in call
    assert (tmp_path / "data" / "am.mvn").read_text() != (para / "am.mvn").read_text()

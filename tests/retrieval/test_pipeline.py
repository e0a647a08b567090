"""Long-form retrieval with a tiny exported CLSR: index once, query many, clips, bad input, AutoModel.generate."""
from __future__ import annotations

import inspect
import json
import logging
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from clsr_testing import QUESTIONS, export_tiny_model_dir, window_clip

SR = 16000
W = 2.0  # window length in the tests: every context clip is padded to exactly one window


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_tiny_model_dir(tmp_path_factory.mktemp("clsr_model"))


@pytest.fixture(scope="module")
def retriever(model_dir):
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    return LongFormRetriever(str(model_dir), window_s=W, batch_size=3)


def clip(i: int) -> np.ndarray:
    return window_clip(i, W, SR)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """long.wav: the 8 contexts one per 2 s window (16 s); c<i>.wav: each window alone."""
    d = tmp_path_factory.mktemp("audio")
    sf.write(d / "long.wav", np.concatenate([clip(i) for i in range(8)]), SR)
    for i in range(8):
        sf.write(d / f"c{i}.wav", clip(i), SR)
    return d


def test_index_then_spoken_and_text_questions_find_exact_segments(retriever, audio, tmp_path):
    from funasr_clsr.retrieval import LanceSegmentStore

    report = retriever.index_recordings([audio / "long.wav"], tmp_path / "idx", progress=False)
    assert report["failed"] == [] and report["num_segments"] == 8
    index = LanceSegmentStore.load(tmp_path / "idx")  # the default store
    segs = index.segments
    assert [(s["start"], s["end"], s["start_sample"], s["end_sample"]) for s in segs] == \
        [(2.0 * i, 2.0 * i + 2.0, 32000 * i, 32000 * (i + 1)) for i in range(8)]
    m = retriever.model
    assert [s["transcript"] for s in segs] == m.transcribe([clip(i) for i in range(8)])
    # a spoken question identical to window i must find window i, with cosine 1
    hits = retriever.query(index, question_wavs=[audio / f"c{i}.wav" for i in (5, 1)], top_k=3)
    for i, qhits in zip((5, 1), hits):
        assert (qhits[0]["start"], qhits[0]["end"]) == (2.0 * i, 2.0 * i + 2.0)
        assert qhits[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert qhits[0]["question_transcript"] == segs[i]["transcript"]
    # text questions: the scores are the cosines of the two encoders, best first
    hits = retriever.query(index, QUESTIONS[:2], top_k=8)
    q = m.encode_text(QUESTIONS[:2])
    c = m.encode_speech([clip(i) for i in range(8)])
    expect = (q @ c.T).numpy()
    for qi, qhits in enumerate(hits):
        assert qhits[0]["question"] == QUESTIONS[qi]
        assert [h["rank"] for h in qhits] == list(range(1, 9))
        got = {int(h["start"] // 2): h["score"] for h in qhits}
        np.testing.assert_allclose([got[i] for i in range(8)], expect[qi], atol=1e-4)
        assert qhits[0]["recording_id"] == str((audio / "long.wav").resolve())


def test_saved_after_each_recording_resumable_and_replace(retriever, audio, tmp_path, monkeypatch):
    from funasr_clsr.retrieval import LanceSegmentStore

    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, np.concatenate([clip(0), clip(1)]), SR)
    sf.write(b, np.concatenate([clip(2), clip(3), clip(4)]), SR)
    real = retriever.model.encode_speech
    calls = {"n": 0}

    def crash_on_b(inputs, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:  # a is one batch (2 windows); the first batch of b crashes
            raise KeyboardInterrupt
        return real(inputs, *args, **kwargs)

    monkeypatch.setattr(retriever.model, "encode_speech", crash_on_b)
    with pytest.raises(KeyboardInterrupt):
        retriever.index_recordings([a, b], tmp_path / "idx", progress=False)
    assert LanceSegmentStore.load(tmp_path / "idx").recordings() == {str(a.resolve()): str(a.resolve())}
    monkeypatch.setattr(retriever.model, "encode_speech", real)
    report = retriever.index_recordings([a, b], tmp_path / "idx", progress=False)  # resumes
    assert [x["path"] for x in report["skipped"]] == [str(a)]
    assert [(x["path"], x["segments"]) for x in report["indexed"]] == [(str(b), 3)]
    assert report["num_segments"] == 5
    report = retriever.index_recordings([("talk-a", a)], tmp_path / "idx", progress=False)
    assert report["num_recordings"] == 3  # a new id for the same file is a new recording
    report = retriever.index_recordings([("talk-a", a)], tmp_path / "idx", progress=False, replace=True)
    assert report["indexed"][0]["segments"] == 2 and report["num_segments"] == 7


def test_bad_recordings_get_one_line_errors_and_the_rest_is_indexed(retriever, audio, tmp_path, caplog):
    from funasr_clsr.retrieval import LanceSegmentStore

    d = tmp_path
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 3)
    (d / "notaudio.wav").write_text("this is not audio\n" * 50)
    sf.write(d / "empty.wav", np.zeros(0, np.float32), SR)
    sf.write(d / "silent.wav", np.zeros(SR * 5, np.float32), SR)
    sf.write(d / "short.wav", clip(3)[:SR], SR)  # 1 s, shorter than a window
    sf.write(d / "four_samples.wav", clip(3)[:4], SR)  # found by benchmarks/robustness.py: was a 0.25 ms segment
    sf.write(d / "rate_100hz.wav", clip(3)[:30], 100)  # a header rate no speech has: was 0.3 s "indexed"
    sf.write(d / "full.wav", np.concatenate([clip(6), clip(7), clip(5)]), SR, subtype="PCM_16")
    raw = (d / "full.wav").read_bytes()
    (d / "truncated.wav").write_bytes(raw[:44 + 2 * int(3.2 * SR)])  # cut at 3.2 s of 6 s
    names = ["missing.wav", "corrupt.wav", "notaudio.wav", "empty.wav", "four_samples.wav", "rate_100hz.wav",
             "silent.wav", "short.wav", "truncated.wav", "full.wav"]
    with caplog.at_level(logging.WARNING):
        report = retriever.index_recordings([d / n for n in names], d / "idx", progress=False)
    failed = {x["path"].rsplit("/", 1)[-1]: x["error"] for x in report["failed"]}
    assert set(failed) == {"missing.wav", "corrupt.wav", "notaudio.wav", "empty.wav", "four_samples.wav",
                           "rate_100hz.wav"}
    for name, err in failed.items():
        assert "\n" not in err and name in err, err
    assert "not found" in failed["missing.wav"] and "empty" in failed["empty.wav"]
    assert "corrupt, truncated or not audio" in failed["notaudio.wav"]
    assert "shorter than one 25 ms analysis window" in failed["four_samples.wav"]
    assert "100 Hz is below 4000 Hz" in failed["rate_100hz.wav"]
    assert [x["path"] for x in report["skipped"]] == [str(d / "silent.wav")]
    assert "silent" in caplog.text and "truncated: the header announces 6.00 s" in caplog.text
    index = LanceSegmentStore.load(d / "idx")
    by_rec = {}
    for s in index.segments:
        by_rec.setdefault(s["path"].rsplit("/", 1)[-1], []).append((s["start"], s["end"]))
    assert by_rec == {"short.wav": [(0.0, 1.0)], "truncated.wav": [(0.0, 2.0), (2.0, 3.2)],
                      "full.wav": [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]}


def test_windows_are_streamed_not_loaded_whole(retriever, audio, monkeypatch, tmp_path):
    from funasr_clsr.audio import iter_blocks as real_blocks
    from funasr_clsr.retrieval import segmentation as segmod

    read = {"blocks": 0, "at_first_encode": None}

    def small_blocks(path, block_seconds, target_sr):
        for item in real_blocks(path, 1.0, target_sr=target_sr):  # 1 s blocks of the 16 s file
            read["blocks"] += 1
            yield item

    real = retriever.model.encode_speech

    def spy(inputs, *a, **k):
        if read["at_first_encode"] is None:
            read["at_first_encode"] = read["blocks"]
        return real(inputs, *a, **k)

    monkeypatch.setattr(segmod, "iter_blocks", small_blocks)
    monkeypatch.setattr(retriever.model, "encode_speech", spy)
    retriever.index_recordings([audio / "long.wav"], tmp_path / "idx", progress=False)
    assert read["blocks"] == 16 and read["at_first_encode"] <= 7  # 3 windows (6 s) + lookahead


def test_index_from_another_model_or_version_is_refused(retriever, model_dir, audio, tmp_path):
    from funasr_clsr.retrieval import IndexMismatchError
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    retriever.index_recordings([audio / "c0.wav"], tmp_path / "idx", progress=False)
    other_version = LongFormRetriever(retriever.model, window_s=W, model_id=retriever.model_id,
                                      model_version="9.9/format1")
    with pytest.raises(IndexMismatchError, match="version"):
        other_version.query(tmp_path / "idx", QUESTIONS[0])
    with pytest.raises(IndexMismatchError, match="version"):
        other_version.index_recordings([audio / "c1.wav"], tmp_path / "idx", progress=False)
    # a copy of the same model elsewhere is the same model; a changed am.mvn is another one
    moved = shutil.copytree(model_dir, tmp_path / "renamed_model")
    same = LongFormRetriever(retriever.model, window_s=W, model_id=None, model_version=None)
    from funasr_clsr.hub import model_identity

    assert model_identity(moved) == (retriever.model_id, retriever.model_version)
    assert same.model_id.startswith("clsr-state-")  # in-memory model: identity from its weights
    (moved / "am.mvn").write_text((moved / "am.mvn").read_text().replace("<Rescale>", "<Rescale> ", 1))
    other = LongFormRetriever(retriever.model, window_s=W, model_id=model_identity(moved)[0],
                              model_version=model_identity(moved)[1])
    with pytest.raises(IndexMismatchError, match="model"):
        other.open_index(tmp_path / "idx")


def test_question_checks_and_top_k(retriever, audio, tmp_path, caplog):
    index = retriever.new_index()
    retriever.index_recording(audio / "long.wav", index, progress=False)
    with pytest.raises(ValueError, match="question 2 is empty"):
        retriever.query(index, [QUESTIONS[0], "  "])
    with pytest.raises(ValueError, match="characters long"):
        retriever.query(index, "king " * 2000)
    with pytest.raises(ValueError, match="no question"):
        retriever.query(index, None)
    with pytest.raises(ValueError, match="top_k"):
        retriever.query(index, QUESTIONS[0], top_k=0)
    with caplog.at_level(logging.WARNING):
        hits = retriever.query(index, " ".join(["king"] * 300), top_k=2)  # over 128 tokens: truncated
    assert "truncated" in caplog.text and len(hits[0]) == 2
    with pytest.warns(UserWarning, match="larger than the 8 segments"):
        hits = retriever.query(index, QUESTIONS[0], top_k=50)
    assert len(hits[0]) == 8
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        retriever.query(index, question_wavs=[tmp_path / "nope.wav"])
    assert retriever.query(retriever.new_index(), QUESTIONS[0]) == [[]]


def test_write_clips_reads_the_original_samples(retriever, audio, tmp_path):
    from funasr_clsr.retrieval.pipeline import MANIFEST_FORMAT

    long16 = np.concatenate([clip(i) for i in range(4)])
    import librosa

    orig = librosa.resample(long16, orig_sr=SR, target_sr=22050).astype(np.float32)
    src = tmp_path / "talk22k.wav"
    sf.write(src, np.stack([orig, orig], axis=1), 22050, subtype="FLOAT")  # stereo, 22.05 kHz
    index = retriever.new_index()
    retriever.index_recording(src, index, recording_id="talk", progress=False)
    hits = retriever.query(index, question_wavs=[audio / "c2.wav"], top_k=2)
    manifest = retriever.write_clips(hits, tmp_path / "clips")
    doc = json.loads(manifest.read_text())
    assert doc["format"] == MANIFEST_FORMAT and doc["model_id"] == retriever.model_id
    first = doc["questions"][0]["clips"][0]
    assert (first["start"], first["end"], first["rank"], first["recording_id"]) == (4.0, 6.0, 1, "talk")
    assert first["source"] == str(src.resolve()) and (tmp_path / "clips" / first["file"]).is_file()
    data, sr = sf.read(first["path"], dtype="float32")
    assert sr == 22050 and data.shape == (2 * 22050, 2)
    np.testing.assert_array_equal(data[:, 0], orig[4 * 22050:6 * 22050])
    src.unlink()
    with pytest.raises(FileNotFoundError, match="moved or deleted"):
        retriever.write_clips(hits, tmp_path / "clips2")


def test_vad_segmenter_uses_speech_regions(retriever, audio, tmp_path):
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    class FakeVAD:  # FunASR's offline VAD output: [{"value": [[beg_ms, end_ms], ...]}] per block
        def generate(self, input, **kwargs):
            return [{"value": [[100, 1400], [2100, 3500], [4100, 5300]]}]

    src = tmp_path / "three.wav"
    sf.write(src, np.concatenate([clip(0), clip(1), clip(2)]), SR)
    vad = LongFormRetriever(retriever.model, window_s=W, segmenter="vad", vad_model=FakeVAD(),
                            model_id=retriever.model_id, model_version=retriever.model_version)
    index = vad.new_index()
    assert vad.index_recording(src, index, progress=False) == 3
    assert [(s["start"], s["end"], s["start_sample"]) for s in index.segments] == \
        [(0.1, 1.4, 1600), (2.1, 3.5, 33600), (4.1, 5.3, 65600)]
    x = np.concatenate([clip(0), clip(1), clip(2)])
    expect = retriever.model.encode_speech([x[33600:56000]])
    np.testing.assert_allclose(index.vectors[1], expect[0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="segmenter"):
        LongFormRetriever(retriever.model, segmenter="words")


def test_automodel_generate_with_question(model_dir, audio, tmp_path):
    """FunASR's own entry point: AutoModel(model=DIR).generate(input=wav, question=..., top_k=...)."""
    from funasr import AutoModel

    from funasr_clsr import longform
    from funasr_clsr.models.clsr.model import CLSR

    am = AutoModel(model=str(model_dir), device="cpu", disable_update=True, log_level="ERROR", disable_pbar=True)
    if "question" not in inspect.unwrap(CLSR.inference).__code__.co_consts:
        # the hook the lead adds to CLSR.inference; until then, the same two lines here
        original = CLSR.inference

        def inference(self, data_in, data_lengths=None, key=None, tokenizer=None, frontend=None, **kwargs):
            if kwargs.get("question") is not None:
                return longform.retrieve(self, data_in, key, **kwargs)
            return original(self, data_in, data_lengths, key, tokenizer, frontend, **kwargs)

        am.model.inference = inference.__get__(am.model)
    res = am.generate(input=str(audio / "long.wav"), question=QUESTIONS[:2], top_k=3, window_s=W,
                      clip_dir=str(tmp_path / "clips"))
    assert [(r["key"], r["question"]) for r in res] == [("long", QUESTIONS[0]), ("long", QUESTIONS[1])]
    direct, _ = longform.retrieve(am.model, [str(audio / "long.wav")], ["long"], question=QUESTIONS[:2], top_k=3,
                                 window_s=W)
    for r, d in zip(res, direct):
        assert [(s["start"], s["end"]) for s in r["segments"]] == [(s["start"], s["end"]) for s in d["segments"]]
        np.testing.assert_allclose([s["score"] for s in r["segments"]], [s["score"] for s in d["segments"]],
                                   atol=1e-5)
        for s in r["segments"]:
            assert s["start"] % 2.0 == 0 and s["end"] == s["start"] + 2.0
            assert sf.info(s["clip"]).frames == 2 * SR
    res = am.generate(input=str(audio / "c0.wav"), question=QUESTIONS[0], top_k=5, window_s=40.0)
    assert len(res) == 1 and len(res[0]["segments"]) == 1  # shorter than a window; top_k > #segments
    plain = am.generate(input=str(audio / "c0.wav"))  # without a question: ASR + embedding as before
    assert "text" in plain[0] and "embedding" in plain[0]
    with torch.no_grad(), pytest.raises(ValueError, match="empty"):
        am.generate(input=str(audio / "c0.wav"), question="")


def test_metadata_where_delete_and_the_faiss_store(retriever, audio, tmp_path):
    from funasr_clsr.retrieval import FilterError, LanceSegmentStore, RecordingNotFoundError, SegmentIndex
    from funasr_clsr.retrieval.pipeline import read_list_file

    lst = tmp_path / "talks.scp"
    lst.write_text(f'c2 {audio / "c2.wav"} {{"title": "Two", "date": "2026-02-01", "speaker": "Ada"}}\n'
                   f'c5 {audio / "c5.wav"}\n'
                   f'{audio / "c6.wav"} {{"speaker": "Bob", "tags": ["x"]}}\n')
    items = read_list_file(lst)
    assert [(r, m) for r, _, m in items] == [("c2", {"title": "Two", "date": "2026-02-01", "speaker": "Ada"}),
                                             ("c5", None), (None, {"speaker": "Bob", "tags": ["x"]})]
    report = retriever.index_recordings(items, tmp_path / "idx", progress=False, meta={"speaker": "Cy"})
    assert report["num_recordings"] == 3 and report["failed"] == []
    store = LanceSegmentStore.load(tmp_path / "idx")
    assert [r["meta"].get("speaker") for r in store.list_recordings()] == ["Ada", "Cy", "Bob"]
    hits = retriever.query(store, question_wavs=[audio / "c2.wav"], top_k=3, where="speaker != 'Ada'")[0]
    assert {h["recording_id"] for h in hits} == {"c5", str((audio / "c6.wav").resolve())}
    top = retriever.query(tmp_path / "idx", question_wavs=[audio / "c2.wav"], top_k=1)[0][0]
    assert (top["recording_id"], top["meta"]["title"], top["score"]) == ("c2", "Two", pytest.approx(1.0, abs=1e-4))
    with pytest.raises(FilterError, match="no column 'room'"):
        retriever.query(store, QUESTIONS[0], where="room = 1")
    assert retriever.delete(tmp_path / "idx", ["c2"]) == 1 and "c2" not in store
    with pytest.raises(RecordingNotFoundError, match="'c2'"):
        retriever.delete(store, ["c5", "c2"])
    assert "c5" in store
    bad = tmp_path / "bad.scp"
    bad.write_text(f"c1 {audio / 'c1.wav'} {{not json}}\n")
    with pytest.raises(ValueError, match="bad.scp:1: the last column looks like metadata but is not a JSON"):
        read_list_file(bad)
    # the FAISS store, by explicit choice: same results, saved after each recording
    report = retriever.index_recordings(items[:2], tmp_path / "faiss", progress=False, store="faiss")
    faiss = retriever.open_index(tmp_path / "faiss", store="faiss")
    assert isinstance(faiss, SegmentIndex) and report["num_segments"] == 2 and faiss.recording_meta["c2"]["title"] == "Two"
    assert retriever.query(faiss, question_wavs=[audio / "c2.wav"], top_k=1)[0][0]["recording_id"] == "c2"
    assert retriever.delete(tmp_path / "faiss", "c5", store="faiss") == 1
    assert len(SegmentIndex.load(tmp_path / "faiss")) == 1

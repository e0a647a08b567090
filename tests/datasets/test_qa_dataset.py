import json

import pytest
import torch

from clsr_testing import TINY_TE
from funasr_clsr.datasets.qa_dataset import AudioQADataset, IndexDSJsonlQA
from funasr_clsr.tokenizer import WordPieceTokenizer


def _frontend():
    from funasr.frontends.wav_frontend import WavFrontend

    return WavFrontend(n_mels=80, lfr_m=7, lfr_n=6, dither=0.0)


def test_text_and_spoken_questions_reach_the_batch(pair_dir):
    tok = WordPieceTokenizer(TINY_TE / "vocab.txt")
    ds = AudioQADataset(str(pair_dir / "text_q.jsonl"), index_ds="IndexDSJsonlQA", frontend=_frontend(), tokenizer=tok)
    batch = ds.collator([ds[0], ds[1]])
    assert batch["question"] == ["who was the king of the city", "which river was in the war"]
    assert batch["speech"].shape[-1] == 560 and batch["text"].shape[0] == 2
    assert tok.decode(batch["text"][0][batch["text"][0] >= 0].tolist()) == "the king of the city"

    ds = AudioQADataset(str(pair_dir / "speech_q.jsonl"), index_ds="IndexDSJsonlQA", frontend=_frontend(), tokenizer=tok)
    batch = ds.collator([ds[0], ds[1]])
    assert batch["question_speech"].shape[0] == 2 and batch["question_speech_lengths"].shape == (2, 1)
    q_ids = batch["question_text"][1][batch["question_text"][1] >= 0].tolist()
    assert tok.decode(q_ids) == "which river was in the war"


def test_question_kind_picks_the_question_of_lines_that_have_both(tmp_path, pair_dir):
    text = [json.loads(l) for l in (pair_dir / "text_q.jsonl").read_text().splitlines()]
    speech = [json.loads(l) for l in (pair_dir / "speech_q.jsonl").read_text().splitlines()]
    both = tmp_path / "both.jsonl"
    both.write_text("".join(json.dumps({**t, **s}) + "\n" for t, s in zip(text, speech)))
    tok = WordPieceTokenizer(TINY_TE / "vocab.txt")

    def first_batch(path, kind):
        ds = AudioQADataset(str(path), index_ds="IndexDSJsonlQA", frontend=_frontend(), tokenizer=tok,
                            question_kind=kind)
        return ds.collator([ds[0], ds[1]])

    assert "question_speech" in first_batch(both, "auto")  # the spoken one when the line has it
    assert "question_speech" in first_batch(both, "speech")
    as_text = first_batch(both, "text")
    assert as_text["question"] == ["who was the king of the city", "which river was in the war"]
    assert "question_speech" not in as_text
    with pytest.raises(ValueError, match="question_kind=speech but the pair has no question_source"):
        first_batch(pair_dir / "text_q.jsonl", "speech")
    with pytest.raises(ValueError, match="question_kind=text but the pair has no question"):
        first_batch(pair_dir / "speech_q.jsonl", "text")
    with pytest.raises(ValueError, match="must be one of"):
        first_batch(both, "spoken")


def test_index_reports_bad_lines_and_skips_missing_audio(tmp_path, pair_dir, caplog):
    lines = [json.loads(l) for l in (pair_dir / "text_q.jsonl").read_text().splitlines()]
    lines[1]["source"] = str(tmp_path / "gone.wav")
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    idx = IndexDSJsonlQA(str(f))
    assert len(idx) == 7 and idx.skipped_missing == [str(tmp_path / "gone.wav")]
    assert "missing" in caplog.text

    f.write_text('{"key": "x", "source": "a.wav"}\n')
    with pytest.raises(ValueError, match="missing field"):
        IndexDSJsonlQA(str(f))
    f.write_text("{not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        IndexDSJsonlQA(str(f))
    f.write_text("")
    with pytest.raises(ValueError, match="no usable pairs"):
        IndexDSJsonlQA(str(f))


def test_pairs_the_funasr_batch_sampler_would_skip_are_reported(tmp_path, pair_dir, caplog):
    from funasr.datasets.audio_datasets.samplers import CustomDistributedBufferDynamicBatchSampler

    lines = [json.loads(l) for l in (pair_dir / "text_q.jsonl").read_text().splitlines()]
    for i, item in enumerate(lines):
        item["source_len"] = 3000 if i < 3 else 500  # three 30-second contexts
    f = tmp_path / "long.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    tok = WordPieceTokenizer(TINY_TE / "vocab.txt")

    def kept(**conf) -> int:
        ds = AudioQADataset(str(f), index_ds="IndexDSJsonlQA", frontend=_frontend(), tokenizer=tok,
                            max_source_length=6000, **conf)
        sampler = CustomDistributedBufferDynamicBatchSampler(ds, batch_size=6000, batch_type="length",
                                                             shuffle=False, **conf)
        return sum(len(b) for b in sampler)

    # FunASR's sampler really drops them at its default limit, and the index says so ...
    assert kept() == 5
    assert "3 of 8 pairs have source_len > max_token_length=2048" in caplog.text
    # ... and keeps them once dataset_conf.max_token_length is raised (as conf/*_mini_en.yaml do)
    caplog.clear()
    assert kept(max_token_length=8000) == 8
    assert "skipped by" not in caplog.text


def _mixed_jsonl(tmp_path, pair_dir):
    """Plain ASR lines, text-question pairs and spoken-question pairs in one file."""
    text = [json.loads(l) for l in (pair_dir / "text_q.jsonl").read_text().splitlines()]
    speech = [json.loads(l) for l in (pair_dir / "speech_q.jsonl").read_text().splitlines()]
    asr = {k: v for k, v in text[2].items() if k != "question"}
    lines = [asr, text[0], speech[1], text[3], {k: v for k, v in text[4].items() if k != "question"}, speech[5]]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_collator_says_which_rows_hold_each_kind_of_question(tmp_path, pair_dir):
    tok = WordPieceTokenizer(TINY_TE / "vocab.txt")
    ds = AudioQADataset(str(_mixed_jsonl(tmp_path, pair_dir)), index_ds="IndexDSJsonlQA", frontend=_frontend(),
                        tokenizer=tok)
    batch = ds.collator([ds[i] for i in range(len(ds))])
    assert batch["speech"].shape[0] == 6
    assert batch["question"] == ["who was the king of the city", "what is school law"]
    assert batch["question_index"].tolist() == [1, 3]
    assert batch["question_speech_index"].tolist() == [2, 5]
    assert batch["question_speech"].shape[0] == 2


def test_batch_budget_counts_the_spoken_question_it_loads(tmp_path, pair_dir):
    line = json.loads((pair_dir / "speech_q.jsonl").read_text().splitlines()[0])
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({**line, "question": "q", "source_len": 300, "question_source_len": 120}) + "\n")
    tok = WordPieceTokenizer(TINY_TE / "vocab.txt")
    for kind, frames in (("auto", 420), ("speech", 420), ("text", 300)):
        ds = AudioQADataset(str(path), index_ds="IndexDSJsonlQA", frontend=_frontend(), tokenizer=tok,
                            question_kind=kind)
        assert ds.get_source_len(0) == frames, kind


def test_funasr_preprocessors_apply_to_audio_and_asr_targets(tmp_path, pair_dir):
    from funasr.register import tables

    calls = []

    @tables.register("preprocessor_classes", "TestDoubleGain")
    class DoubleGain:
        def __init__(self, gain):
            self.gain = gain

        def __call__(self, wav, fs=16000):
            calls.append(fs)
            return wav * self.gain

    @tables.register("preprocessor_classes", "TestKingToRiver")
    class KingToRiver:
        def __call__(self, text):
            return text.replace("king", "river")

    tok = WordPieceTokenizer(TINY_TE / "vocab.txt")
    kw = dict(index_ds="IndexDSJsonlQA", frontend=_frontend(), tokenizer=tok)
    plain = AudioQADataset(str(pair_dir / "speech_q.jsonl"), **kw)
    pre = AudioQADataset(str(pair_dir / "speech_q.jsonl"), preprocessor_speech="TestDoubleGain",
                         preprocessor_speech_conf={"gain": 2.0}, preprocessor_text="TestKingToRiver",
                         preprocessor_text_conf={}, **kw)
    a, b = plain[0], pre[0]
    assert a["speech"].shape == b["speech"].shape and not torch.allclose(a["speech"], b["speech"])
    assert len(calls) == 2  # context and spoken question
    assert tok.decode(a["text"].tolist()) == "the king of the city"
    assert tok.decode(b["text"].tolist()) == "the river of the city"
    assert tok.decode(b["question_text"].tolist()) == "who was the river of the city"

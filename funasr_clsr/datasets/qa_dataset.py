"""jsonl question-context pairs -> FunASR batches (registered index and dataset classes).

One line per pair, FunASR's layout plus the question::

    {"key", "source": ctx.wav, "source_len", "target": ctx transcript, "target_len",
     "question": text}                                  # text question
    {..., "question_source": q.wav, "question_target": q transcript}   # spoken question
"""
from __future__ import annotations

import json
import logging
import os

import torch

from funasr.datasets.audio_datasets.datasets import AudioDataset
from funasr.datasets.audio_datasets.index_ds import IndexDSJsonlRankFull
from funasr.register import tables
from funasr.utils.load_utils import extract_fbank

from funasr_clsr.audio import load_audio

REQUIRED_FIELDS = ("source", "target")
SAMPLER_MAX_TOKEN_LENGTH = 2048  # funasr.datasets.audio_datasets.samplers' default


def _jsonl_files(path: str) -> list[str]:
    """A jsonl file, or a list file naming jsonl files (FunASR's convention)."""
    if path.endswith((".jsonl", ".json")):
        return [path]
    with open(path, encoding="utf-8") as fin:
        return [line.strip() for line in fin if line.strip()]


@tables.register("index_ds_classes", "IndexDSJsonlQA")
class IndexDSJsonlQA(IndexDSJsonlRankFull):
    """FunASR's jsonl index keeping the question fields (the stock one drops unknown keys)."""

    def __init__(self, path: str, **kwargs):  # noqa: D401 - replaces the parent's reader
        torch.utils.data.Dataset.__init__(self)
        self.max_source_length = kwargs.get("max_source_length", 2048)
        self.min_source_length = kwargs.get("min_source_length", 0)
        self.max_target_length = kwargs.get("max_target_length", 2048)
        self.min_target_length = kwargs.get("min_target_length", 0)
        self.max_token_length = kwargs.get("max_token_length", 1_000_000)
        check_files = kwargs.get("check_audio_files", True)
        contents, dropped, missing = [], 0, []
        for file_json in _jsonl_files(path):
            if not os.path.isfile(file_json):
                raise FileNotFoundError(f"data list {file_json} does not exist")
            with open(file_json, encoding="utf-8") as fin:
                for lineno, line in enumerate(fin, 1):
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{file_json}:{lineno}: not valid JSON ({exc.msg})") from None
                    absent = [f for f in REQUIRED_FIELDS if f not in item]
                    if absent:
                        raise ValueError(f"{file_json}:{lineno}: missing field(s) {absent}")
                    if "question_source" in item and "question_target" not in item:
                        raise ValueError(f"{file_json}:{lineno}: question_source needs question_target")
                    src_len = item.get("source_len", 1)
                    tgt_len = item.get("target_len", 0)
                    if not (self.min_source_length <= src_len <= self.max_source_length
                            and self.min_target_length <= tgt_len <= self.max_target_length
                            and src_len + tgt_len <= self.max_token_length):
                        dropped += 1
                        continue
                    if check_files:
                        wavs = [item["source"]] + ([item["question_source"]] if "question_source" in item else [])
                        bad = [w for w in wavs if not os.path.isfile(w)]
                        if bad:
                            missing.append(bad[0])
                            continue
                    contents.append(item)
        if missing:
            logging.warning("%s: skipped %d pairs whose audio is missing, e.g. %s", path, len(missing),
                            ", ".join(missing[:3]))
        if dropped:
            logging.info("%s: %d pairs outside the configured length limits", path, dropped)
        # FunASR's length batch sampler skips, without a word, every utterance whose source_len
        # exceeds dataset_conf.max_token_length (its default: 2048 frames, about 20 s)
        sampler_limit = kwargs.get("max_token_length", SAMPLER_MAX_TOKEN_LENGTH)
        too_long = sum(1 for item in contents if item.get("source_len", 0) > sampler_limit)
        if too_long:
            logging.warning("%s: %d of %d pairs have source_len > max_token_length=%d and will be skipped by "
                            "FunASR's batch sampler; raise dataset_conf.max_token_length", path, too_long,
                            len(contents), sampler_limit)
        if not contents:
            raise ValueError(f"{path}: no usable pairs (dropped {dropped} by length, {len(missing)} missing audio)")
        # a spoken question is loaded with its context: the batch budget counts both
        self.count_question_audio = kwargs.get("question_kind", "auto") != "text"
        self.contents = contents
        self.skipped_missing = missing
        logging.info("%s: %d pairs", path, len(contents))

    def get_source_len(self, data_dict):
        """The frames a batch sampler charges for a line: context plus spoken question, if loaded."""
        n = data_dict.get("source_len", 1)
        if self.count_question_audio and "question_source" in data_dict:
            n += data_dict.get("question_source_len", data_dict.get("source_len", 1))
        return n


QUESTION_KINDS = ("auto", "text", "speech")


@tables.register("dataset_classes", "AudioQADataset")
class AudioQADataset(AudioDataset):
    """AudioDataset that also yields the paired question (text, or speech + transcript).

    ``question_kind`` (``dataset_conf.question_kind``) picks the question a pair trains with
    when its line has both: ``text`` (Spoken-SQuAD, LibriSQA: text questions against spoken
    contexts), ``speech`` (SLUE-SQA-5, DRCD*: spoken questions), or ``auto`` (the spoken one
    when the line has it). Training with the other kind than the evaluation asks for trains
    a different task. Lines without any question are plain ASR utterances.
    """

    def __init__(self, path, question_kind: str = "auto", **kwargs):
        if question_kind not in QUESTION_KINDS:
            raise ValueError(f"dataset_conf.question_kind must be one of {QUESTION_KINDS}, not {question_kind!r}")
        super().__init__(path, question_kind=question_kind, **kwargs)  # the index reads it too
        self.question_kind = question_kind

    def _fbank(self, source):
        wav = torch.from_numpy(load_audio(source, target_sr=self.fs))
        if self.preprocessor_speech:  # FunASR's dataset_conf.preprocessor_speech, as AudioDataset applies it
            wav = self.preprocessor_speech(wav, fs=self.fs)
        feats, lengths = extract_fbank(wav, data_type=self.data_type, frontend=self.frontend, is_final=True)
        return feats[0], lengths

    def _target_ids(self, target: str) -> list[int]:
        if self.preprocessor_text:  # dataset_conf.preprocessor_text: ASR targets only, not text questions
            target = self.preprocessor_text(target)
        return self.tokenizer.encode(target)

    def collator(self, samples: list = None):
        """FunASR's padding collator, plus where in the batch each question's context is.

        A batch may mix plain ASR lines, text questions and spoken questions:
        ``question_index`` / ``question_speech_index`` give the batch row of each text / spoken
        question's context, in the order of ``question`` / ``question_speech``.
        """
        out = super().collator(samples)
        text_rows = [i for i, s in enumerate(samples) if "question" in s]
        speech_rows = [i for i, s in enumerate(samples) if "question_speech" in s]
        if text_rows:
            out["question_index"] = torch.tensor(text_rows, dtype=torch.int64)
        if speech_rows:
            out["question_speech_index"] = torch.tensor(speech_rows, dtype=torch.int64)
        return out

    def __getitem__(self, index):
        item = self.index_ds[index]
        speech, speech_lengths = self._fbank(item["source"])
        ids = self._target_ids(item["target"])
        out = {
            "speech": speech,
            "speech_lengths": speech_lengths,
            "text": torch.tensor(ids, dtype=torch.int64),
            "text_lengths": torch.tensor([len(ids)], dtype=torch.int32),
        }
        needed = {"text": "question", "speech": "question_source"}.get(self.question_kind)
        has_question = "question" in item or "question_source" in item  # else a plain ASR utterance
        if needed and has_question and needed not in item:
            raise ValueError(f"{item.get('key', index)}: dataset_conf.question_kind={self.question_kind} but the "
                             f"pair has no {needed}")
        spoken = "question_source" in item and self.question_kind != "text"
        if spoken:
            q_speech, q_lengths = self._fbank(item["question_source"])
            q_ids = self._target_ids(item["question_target"])
            out.update(question_speech=q_speech, question_speech_lengths=q_lengths,
                       question_text=torch.tensor(q_ids, dtype=torch.int64),
                       question_text_lengths=torch.tensor([len(q_ids)], dtype=torch.int32))
        elif "question" in item:
            out["question"] = item["question"]
        if "teacher_text" in item:  # a teacher transcript of the context (ParaBGE's distill_weight)
            out["teacher_text"] = item["teacher_text"]
        return out

#!/usr/bin/env python3
"""LibriSQA Part I (+ LibriSpeech audio) -> FunASR jsonl for CLSR (stage 0 of recipes/librisqa).

Expected layout under ``--raw-dir`` (what stage 0's download produces):

    LibriSQA-PartI/LibriSQA-PartI-train.json   Hugging Face dataset ZihanZhao/LibriSQA
    LibriSQA-PartI/LibriSQA-PartI-test.json
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac   openslr.org/12
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

LibriSQA Part I fields, per its dataset card: ``speech_path`` (path to the speech),
``question``, ``answer`` (a complete sentence), ``text`` (the authentic transcript), ``duration``.
The card does not show a record or say how ``speech_path`` is written, so the audio is found by
its LibriSpeech utterance id (the file name in ``speech_path``) anywhere under ``LibriSpeech/``.
A file without these fields is rejected with the list of fields expected and found.

Context = one LibriSpeech utterance, question = LibriSQA's text question, target = ``text``.
Part I has one question per utterance (104,014 train / 2,620 test = train-clean-360 /
test-clean utterance counts, the paper's Table 1); ``--one-to-one`` (default true) only guards
against a repeated utterance - identical question texts over different utterances are kept.

``--librispeech-asr train-clean-100,train-clean-360`` also writes ``librispeech_asr.jsonl``
(key/source/source_len/target/target_len from the ``.trans.txt`` files): the paper's 460 h of
clean LibriSpeech for ASR pre-training (recipe stage 2).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from funasr_clsr.data_prep import squad_format as sf

PART1_FIELDS = ("speech_path", "question", "answer", "text")
SPLIT_FILES = {"train": "LibriSQA-PartI-train.json", "test": "LibriSQA-PartI-test.json"}
UTT_ID = re.compile(r"^\d+-\d+-\d+$")


class LibriSQAFormatError(sf.DataPrepError):
    """A LibriSQA file without the Part I fields."""


def read_records(path: str | os.PathLike) -> list[dict]:
    """Records of a LibriSQA json file: a JSON list, an object holding one list, or JSON lines."""
    path = os.fspath(path)
    try:
        obj = sf.load_json(path)
    except sf.DataPrepError:
        obj = sf.read_jsonl(path)  # JSON lines (what Hugging Face json loaders also accept)
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise LibriSQAFormatError(f"{path}: expected a JSON list of records (or an object with one list), "
                                      f"found an object with keys {sorted(obj)[:8]}")
        obj = lists[0]
    if not isinstance(obj, list) or not obj:
        raise LibriSQAFormatError(f"{path}: no records (expected a non-empty JSON list)")
    for i, rec in enumerate(obj):
        if not isinstance(rec, dict):
            raise LibriSQAFormatError(f"{path}: record {i} is {type(rec).__name__}, not an object")
        missing = [f for f in PART1_FIELDS if f not in rec]
        if missing:
            hint = (" - this looks like LibriSQA Part II (multiple choice); the paper uses Part I"
                    if "question_and_option" in rec else "")
            raise LibriSQAFormatError(
                f"{path}: record {i} lacks {missing}; expected LibriSQA Part I fields "
                f"{list(PART1_FIELDS)} (+ optional 'duration'), found {sorted(rec)}{hint}")
    return obj


def utterance_id(speech_path: str) -> str:
    name = re.split(r"[\\/]", str(speech_path).strip())[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def expected_path(speech_path: str, utt: str, librispeech_dir: Path) -> str:
    """Where an utterance that was not found should be (reported as missing audio)."""
    if os.path.isabs(speech_path) and os.path.isfile(speech_path):
        return speech_path
    m = re.search(r"((?:train|dev|test)-(?:clean|other)(?:-\d+)?)[\\/](\d+)[\\/](\d+)[\\/]", speech_path)
    if m:
        return os.path.abspath(librispeech_dir / m.group(1) / m.group(2) / m.group(3) / f"{utt}.flac")
    return os.path.abspath(librispeech_dir / speech_path.lstrip("/\\"))


def index_librispeech(root: Path) -> dict[str, str]:
    """LibriSpeech utterance id -> audio path, over every subset under ``root``."""
    if not root.is_dir():
        return {}
    return sf.find_files(root, (".flac", ".wav"), match=lambda stem: bool(UTT_ID.match(stem)))


def build_examples(records: list[dict], audio: dict[str, str], librispeech_dir: Path):
    examples, pre_skipped = [], []
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        utt = utterance_id(rec["speech_path"])
        text, question = sf.clean_text(rec["text"]), sf.clean_text(rec["question"])
        n = seen.get(utt, 0)
        seen[utt] = n + 1
        key = utt if n == 0 else f"{utt}-q{n}"
        if not utt or not text or not question:
            pre_skipped.append((key or f"record{i}", str(rec["speech_path"]),
                                "empty field: speech_path, text or question"))
            continue
        source = audio.get(utt) or expected_path(str(rec["speech_path"]), utt, librispeech_dir)
        extra = {"answer": sf.clean_text(rec["answer"]), "speech_path": str(rec["speech_path"])}
        if "duration" in rec:
            extra["duration"] = rec["duration"]
        examples.append(sf.Example(key=key, context_id=utt, source=source, target=text, question=question,
                                   question_id=key, extra=extra))
    return examples, pre_skipped


def librispeech_asr(root: Path, subsets: list[str], out_dir: Path, probe: sf.AudioProbe, nj: int = 1) -> dict:
    """ASR pre-training jsonl from LibriSpeech ``.trans.txt`` files (missing audio listed)."""
    utts = []
    for subset in subsets:
        sub = root / subset
        if not sub.is_dir():
            raise FileNotFoundError(f"{sub}: LibriSpeech subset not found (download it in stage 0)")
        for trans in sorted(sub.glob("*/*/*.trans.txt")):
            for line in trans.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    utt, _, text = line.strip().partition(" ")
                    utts.append((utt, str((trans.parent / f"{utt}.flac").resolve()), text))
    probe.prefetch([path for _, path, _ in utts], nj)
    records, skipped = [], []
    for utt, path, text in utts:
        n, why = probe.frames(path)
        if n is None:
            skipped.append((utt, path, f"audio {why}"))
            continue
        records.append({"key": utt, "source": path, "source_len": n, "target": text,
                        "target_len": sf.target_length(text, "en")})
    sf.atomic_write_text(out_dir / "librispeech_asr.skipped.tsv",
                         "".join("\t".join(r) + "\n" for r in [("key", "path", "reason")] + skipped))
    if not records:
        raise sf.EmptySplitError(f"{root}: no LibriSpeech utterances with audio in {subsets}")
    sf.write_jsonl(out_dir / "librispeech_asr.jsonl", records)
    stats = {"subsets": subsets, "written": len(records), "skipped": len(skipped),
             "hours": round(sum(r["source_len"] for r in records) / 360000.0, 2)}
    sf.atomic_write_text(out_dir / "librispeech_asr.stats.json", json.dumps(stats, indent=2) + "\n")
    return stats


def find_split_file(raw: Path, name: str) -> Path:
    for cand in (raw / "LibriSQA-PartI" / name, raw / name):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{raw / 'LibriSQA-PartI' / name}: LibriSQA file not found")


def bool_arg(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--splits", default="train,test", help="comma list from: train, test")
    ap.add_argument("--one-to-one", type=bool_arg, default=True)
    ap.add_argument("--librispeech-asr", default="", help="comma list of LibriSpeech subsets for ASR jsonl")
    ap.add_argument("--nj", type=int, default=1, help="threads reading audio headers")
    ap.add_argument("--max-skipped-frac", type=float, default=None)
    args = ap.parse_args(argv)

    raw, out = Path(args.raw_dir), Path(args.out_dir)
    ls_dir = raw / "LibriSpeech"
    audio = index_librispeech(ls_dir)
    if not audio:
        print(f"warning: no LibriSpeech audio found under {ls_dir}", file=sys.stderr)
    probe = sf.AudioProbe()
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        if split not in SPLIT_FILES:
            raise sf.DataPrepError(f"unknown split {split!r}; choose from {sorted(SPLIT_FILES)}")
        path = find_split_file(raw, SPLIT_FILES[split])
        examples, pre_skipped = build_examples(read_records(path), audio, ls_dir)
        # identical ChatGPT questions over different utterances stay: Part I pairs every utterance
        res = sf.finalize_split(examples, out, split, "en", one_to_one_filter=args.one_to_one, dedupe_text=False,
                                pre_skipped=pre_skipped, max_skipped_frac=args.max_skipped_frac,
                                probe=probe, nj=args.nj,
                                extra_stats={"source": str(path)})
        st = res.stats
        print(f"{split}: {st['written']} pairs written ({st['examples_read']} read); "
              f"skipped: {st['skip_reasons'] or 'none'} -> {res.jsonl}")
    if args.librispeech_asr:
        subsets = [s.strip() for s in args.librispeech_asr.split(",") if s.strip()]
        st = librispeech_asr(ls_dir, subsets, out, probe, args.nj)
        print(f"librispeech_asr: {st['written']} utterances ({st['hours']} h), {st['skipped']} skipped")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (sf.DataPrepError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

#!/usr/bin/env python3
"""SLUE-SQA-5 -> FunASR jsonl for CLSR with spoken questions (stage 0 of recipes/slue_sqa5).

Expected layout under ``--slue-dir`` (the unpacked SLUE-SQA-5 release, as read by ESPnet's
and SLUE's own preparation scripts):

    slue-sqa5_fine-tune.tsv  slue-sqa5_dev.tsv  slue-sqa5_test.tsv
    {fine-tune,dev,test}/question/<question_id>.wav     recorded questions
    {fine-tune,dev,test}/document/<document_id>.wav     Spoken Wikipedia passages
    {fine-tune,dev,test}/word2time/<document_id>.txt    word alignments (not used here)

The tsv files have a header row. Columns read by name: ``question_id``, ``document_id``, the
question text (``normalized_question_text``, else ``question_text`` / ``raw_question_text``)
and the document text (``normalized_document_text``, else ``document_text`` /
``raw_document_text``); optional ``question_speaker_id``, ``document_speaker_id``,
``answer_spans``. These names come from the dataset's Hugging Face features and its licence
text; the column order was not confirmed (no tsv was reachable), so nothing depends on it. A
file missing a required column fails with the lists of expected and found columns.

Both sides are speech: ``source``/``target`` = document audio / normalized document text,
``question_source``/``question_target`` = question audio / normalized question text,
``question`` = the written question when the tsv has it. Several questions share a document;
the paper trains and tests on all of them (46,186 / 1,939 / 2,382 pairs = the full SLUE-SQA-5
splits), so ``--one-to-one`` defaults to false here.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from funasr_clsr.data_prep import squad_format as sf

SPLITS = {"train": "fine-tune", "dev": "dev", "test": "test"}  # our name -> SLUE's name
QUESTION_TEXT = ("normalized_question_text", "question_text", "raw_question_text")
DOCUMENT_TEXT = ("normalized_document_text", "document_text", "raw_document_text")
WRITTEN_QUESTION = ("question_text", "raw_question_text")
REQUIRED = ("question_id", "document_id")


class SlueFormatError(sf.DataPrepError):
    """A SLUE-SQA-5 tsv without the expected columns."""


def read_tsv(path: str | os.PathLike) -> list[dict]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: SLUE-SQA-5 tsv not found")
    csv.field_size_limit(1 << 30)  # documents are long
    with open(path, encoding="utf-8", newline="") as fin:
        reader = csv.DictReader(fin, delimiter="\t")
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if not any(c in header for c in QUESTION_TEXT):
            missing.append("|".join(QUESTION_TEXT))
        if not any(c in header for c in DOCUMENT_TEXT):
            missing.append("|".join(DOCUMENT_TEXT))
        if missing:
            raise SlueFormatError(f"{path}: missing column(s) {missing}; expected a tab-separated header with "
                                  f"{list(REQUIRED)} + question text {list(QUESTION_TEXT)} + document text "
                                  f"{list(DOCUMENT_TEXT)}, found {header}")
        rows = []
        for lineno, row in enumerate(reader, 2):
            if None in row:  # more fields than the header: a tab inside an unquoted field
                raise SlueFormatError(f"{path}:{lineno}: {len(header) + len(row[None])} fields for "
                                      f"{len(header)} columns")
            rows.append(row)
    if not rows:
        raise sf.EmptySplitError(f"{path}: header only, no rows")
    return rows


def first(row: dict, names: tuple[str, ...]) -> str:
    for name in names:
        if row.get(name):
            return row[name]
    return ""


def build_examples(rows: list[dict], slue_dir: Path, slue_split: str):
    examples, pre_skipped = [], []
    seen: dict[str, int] = {}
    q_dir = slue_dir / slue_split / "question"
    d_dir = slue_dir / slue_split / "document"
    for row in rows:
        qid, did = row["question_id"].strip(), row["document_id"].strip()
        q_text = sf.clean_text(first(row, QUESTION_TEXT))
        d_text = sf.clean_text(first(row, DOCUMENT_TEXT))
        base = f"{qid}_{did}"
        n = seen.get(base, 0)
        seen[base] = n + 1
        key = base if n == 0 else f"{base}-{n}"
        if not qid or not did or not q_text or not d_text:
            pre_skipped.append((key, str(d_dir / f"{did}.wav"), "empty field: id or text in the tsv"))
            continue
        extra = {k: row[k] for k in ("question_speaker_id", "document_speaker_id", "answer_spans") if row.get(k)}
        examples.append(sf.Example(
            key=key, context_id=did, source=os.path.abspath(d_dir / f"{did}.wav"), target=d_text,
            question=sf.clean_text(first(row, WRITTEN_QUESTION)) or q_text, question_id=qid,
            question_source=os.path.abspath(q_dir / f"{qid}.wav"), question_target=q_text, extra=extra))
    return examples, pre_skipped


def find_slue_dir(raw: Path) -> Path:
    for cand in (raw / "slue-sqa5", raw):
        if any((cand / f"slue-sqa5_{s}.tsv").is_file() for s in SPLITS.values()):
            return cand
    raise FileNotFoundError(f"{raw}: no slue-sqa5_<split>.tsv here or in {raw / 'slue-sqa5'}")


def bool_arg(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw-dir", required=True, help="holds slue-sqa5/ (or the tsv files directly)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--splits", default="train,dev,test", help="comma list from: train (fine-tune), dev, test")
    ap.add_argument("--one-to-one", type=bool_arg, default=False)
    ap.add_argument("--nj", type=int, default=1, help="threads reading audio headers")
    ap.add_argument("--max-skipped-frac", type=float, default=None)
    args = ap.parse_args(argv)
    slue_dir = find_slue_dir(Path(args.raw_dir))
    probe = sf.AudioProbe()
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        if split not in SPLITS:
            raise sf.DataPrepError(f"unknown split {split!r}; choose from {sorted(SPLITS)}")
        tsv = slue_dir / f"slue-sqa5_{SPLITS[split]}.tsv"
        examples, pre_skipped = build_examples(read_tsv(tsv), slue_dir, SPLITS[split])
        res = sf.finalize_split(examples, args.out_dir, split, "en", one_to_one_filter=args.one_to_one,
                                pre_skipped=pre_skipped, max_skipped_frac=args.max_skipped_frac,
                                probe=probe, nj=args.nj,
                                extra_stats={"source": str(tsv)})
        st = res.stats
        print(f"{split}: {st['written']} pairs written ({st['examples_read']} read, {st['contexts']} documents); "
              f"skipped: {st['skip_reasons'] or 'none'} -> {res.jsonl}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (sf.DataPrepError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

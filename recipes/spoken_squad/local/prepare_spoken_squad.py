#!/usr/bin/env python3
"""Spoken-SQuAD -> FunASR jsonl for CLSR (stage 0 of recipes/spoken_squad).

Expected layout under ``--raw-dir`` (what stage 0's download produces):

    spoken_train-v1.1.json            Spoken-SQuAD train: Sphinx ASR of the TTS audio + questions
    spoken_test-v1.1.json             Spoken-SQuAD test (SQuAD v1.1 dev articles)
    train-v1.1.json, dev-v1.1.json    SQuAD v1.1: the written text the TTS read
    Spoken-SQuAD_audio/train_wav/**/<article>_<paragraph>_<sentence>.wav
    Spoken-SQuAD_audio/dev_wav/**/<article>_<paragraph>_<sentence>.wav

The audio is one file per *sentence* (Spoken-SQuAD README: "TopicIndex_ParagraphIndex_
SentenceIndex.wav", following the SQuAD json order). The ASR transcript of a paragraph is the
sentence transcripts joined by ". ", so sentence k of the transcript belongs to recording k.

Context unit (``--context-unit``):
* ``sentence`` (default): one recording = one context; its target is the matching sentence of
  the SQuAD text (cut to the recordings with :func:`segment_like_reference`). A question is
  paired with the sentence that holds its answer. This reproduces the paper's Spoken-SQuAD*
  sizes (29,227 / 3,884 pairs for 37,107 / 5,351 questions), which a paragraph-level
  one-question-per-context filter cannot (the test set has only 1,896 paragraphs with
  questions) - an inference, the paper does not describe its filter.
* ``paragraph``: the sentence recordings of a paragraph are joined into one 16 kHz wav under
  ``--concat-dir``; the target is the whole SQuAD paragraph.

Outputs per split in ``--out-dir``: ``<split>.jsonl``, ``<split>.pairs.jsonl`` (clean text pairs
for text-encoder pre-training), ``<split>.stats.json``, ``<split>.skipped.tsv``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

from funasr_clsr.data_prep import squad_format as sf

# split name -> (spoken json, squad json, audio folder) in the dataset's real layout
LAYOUT = {
    "train": ("spoken_train-v1.1.json", "train-v1.1.json", "Spoken-SQuAD_audio/train_wav"),
    "test": ("spoken_test-v1.1.json", "dev-v1.1.json", "Spoken-SQuAD_audio/dev_wav"),
}
WAV_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)$")


def asr_sentences(asr_context: str) -> list[str]:
    """Per-recording transcripts: Spoken-SQuAD joins them with ". " (Sphinx adds no periods)."""
    parts = [p.strip() for p in asr_context.strip().split(". ")]
    if parts and parts[-1].endswith("."):
        parts[-1] = parts[-1][:-1]
    return [p for p in parts if p] or [asr_context.strip()]


def asr_sentence_of(asr_context: str, qa: sf.QA) -> int | None:
    """Sentence (recording) index holding the question's answer in the ASR transcript."""
    start = qa.answer_start
    if not (0 <= start and asr_context[start:start + len(qa.answer)] == qa.answer):
        start = asr_context.find(qa.answer) if qa.answer else -1
    if start < 0:
        return None
    return asr_context.count(". ", 0, start)


def index_wavs(wav_dir: str) -> tuple[dict[tuple[int, int], dict[int, str]], int]:
    """(article, paragraph) -> {sentence: path}; also the number of unrelated files ignored."""
    index: dict[tuple[int, int], dict[int, str]] = defaultdict(dict)
    files = sf.find_files(wav_dir, (".wav",))
    ignored = 0
    for stem, path in files.items():
        m = WAV_NAME.match(stem)
        if not m:
            ignored += 1
            continue
        a, p, s = map(int, m.groups())
        index[(a, p)][s] = path
    return index, ignored


def concat_paragraph(paths: list[str], out_path: Path) -> str | None:
    """Join sentence recordings into one 16 kHz mono wav (skipped when it exists); None if ok."""
    if out_path.exists():
        return None
    import numpy as np
    import soundfile as sfile

    from funasr_clsr.audio import load_audio

    pieces = []
    for path in paths:
        try:
            pieces.append(load_audio(path, target_sr=16000))
        except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
            return f"sentence recording {path}: {' '.join(str(exc).split())[:160]}"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.wav")
    sfile.write(tmp, np.concatenate(pieces), 16000, subtype="PCM_16")
    os.replace(tmp, out_path)
    return None


def build_examples(joined: list[sf.JoinedParagraph], wav_dir: str, unit: str, concat_dir: Path | None,
                   progress: bool = True):
    """Examples (one per Spoken-SQuAD question) + rows skipped before the audio check + counts."""
    index, ignored = index_wavs(wav_dir)
    examples: list[sf.Example] = []
    pre_skipped: list[tuple[str, str, str]] = []
    counts = {"paragraphs": len(joined), "paragraphs_split_directly": 0, "paragraphs_aligned_by_words": 0,
              "paragraphs_not_aligned": 0, "unrelated_files_ignored": ignored, "questions": 0}
    seq = joined
    if progress and len(joined) > 500:
        from tqdm import tqdm

        seq = tqdm(joined, desc="paragraphs", unit="par", mininterval=5)
    for jp in seq:
        a, p = jp.text.article_index, jp.text.paragraph_index
        counts["questions"] += len(jp.asr_qas)
        if not jp.asr_qas:
            continue
        refs = asr_sentences(jp.asr_context)
        recs = index.get((a, p), {})
        # recordings missing at the end still count: they are reported as missing audio below
        n_rec = max(max(recs) + 1, len(refs)) if recs else len(refs)
        expected = [recs.get(s) or os.path.abspath(os.path.join(wav_dir, f"{a}_{p}_{s}.wav")) for s in range(n_rec)]
        text = jp.text.context
        title = jp.text.title
        if unit == "paragraph":
            ctx_id = f"{a}_{p}"
            source = os.path.abspath(concat_dir / f"{ctx_id}.wav")
            if n_rec != len(refs):
                why = f"sentence count mismatch: {n_rec} recordings but {len(refs)} ASR sentences"
                pre_skipped += [(qa.id, expected[0], why) for qa in jp.asr_qas]
                continue
            missing = [e for e in expected if not os.path.isfile(e)]
            if missing:  # let finalize_split report it as missing audio
                source = missing[0]
            else:
                err = concat_paragraph(expected, Path(source))
                if err:
                    pre_skipped += [(qa.id, source, f"context audio unreadable: {err}") for qa in jp.asr_qas]
                    continue
            for qa in jp.asr_qas:
                examples.append(sf.Example(
                    key=qa.id, context_id=ctx_id, source=source, target=sf.clean_text(text),
                    question=sf.clean_text(qa.question), question_id=qa.id,
                    extra={"title": title, "answer": qa.answer, "asr_text": sf.clean_text(jp.asr_context)}))
            continue

        if n_rec != len(refs):
            why = f"sentence count mismatch: {n_rec} recordings but {len(refs)} ASR sentences"
            pre_skipped += [(qa.id, expected[-1], why) for qa in jp.asr_qas]
            counts["paragraphs_not_aligned"] += 1
            continue
        natural = sf.split_sentences(text, "en")
        spans = sf.segment_like_reference(text, refs, "en")
        if spans is None:
            why = f"alignment failed: the written paragraph does not fit its {n_rec} sentence recordings"
            pre_skipped += [(qa.id, expected[0], why) for qa in jp.asr_qas]
            counts["paragraphs_not_aligned"] += 1
            continue
        counts["paragraphs_split_directly" if len(natural) == n_rec else "paragraphs_aligned_by_words"] += 1
        for qa in jp.asr_qas:
            k = asr_sentence_of(jp.asr_context, qa)
            if k is None and qa.answer_start >= 0:
                text_qa = next((q for q in jp.text.qas if q.id == qa.id), None)
                if text_qa is not None and text_qa.answer_start >= 0:
                    k = sf.sentence_index(spans, text_qa.answer_start)
            if k is None or k >= n_rec:
                pre_skipped.append((qa.id, expected[0], "not paired: answer not found in the transcript"))
                continue
            s0, s1 = spans[k]
            examples.append(sf.Example(
                key=qa.id, context_id=f"{a}_{p}_{k}", source=expected[k], target=sf.clean_text(text[s0:s1]),
                question=sf.clean_text(qa.question), question_id=qa.id,
                extra={"title": title, "answer": qa.answer, "asr_text": refs[k]}))
    return examples, pre_skipped, counts


def bool_arg(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw-dir", required=True, help="downloaded Spoken-SQuAD + SQuAD files (layout above)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--splits", default="train,test", help="comma list from: train, test")
    ap.add_argument("--context-unit", choices=("sentence", "paragraph"), default="sentence")
    ap.add_argument("--one-to-one", type=bool_arg, default=True,
                    help="one question per context (paper's Spoken-SQuAD*)")
    ap.add_argument("--concat-dir", default=None, help="paragraph wavs (paragraph unit); default <out-dir>/wav")
    ap.add_argument("--heldout-articles", type=int, default=0,
                    help="move the last N train articles into a 'dev' split (0: the paper's setup, no dev)")
    ap.add_argument("--nj", type=int, default=1, help="threads reading audio headers")
    ap.add_argument("--max-skipped-frac", type=float, default=None,
                    help="fail when more than this fraction of a split lacks usable audio")
    args = ap.parse_args(argv)

    raw = Path(args.raw_dir)
    out = Path(args.out_dir)
    concat_root = Path(args.concat_dir) if args.concat_dir else out / "wav"
    probe = sf.AudioProbe()
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        if split not in LAYOUT:
            raise sf.DataPrepError(f"unknown split {split!r}; choose from {sorted(LAYOUT)}")
        spoken_name, squad_name, wav_sub = LAYOUT[split]
        spoken_path, squad_path = raw / spoken_name, raw / squad_name
        joined = sf.join_spoken_squad(sf.load_squad(spoken_path), sf.load_squad(squad_path),
                                      str(spoken_path), str(squad_path))
        wav_dir = raw / wav_sub
        if not wav_dir.is_dir():
            raise FileNotFoundError(f"{wav_dir}: Spoken-SQuAD audio folder not found (stage 0 extracts "
                                    "Spoken-SQuAD_audio.zip there)")
        groups = {split: joined}
        if split == "train" and args.heldout_articles > 0:
            n_art = 1 + max(j.text.article_index for j in joined)
            cut = n_art - args.heldout_articles
            groups = {"train": [j for j in joined if j.text.article_index < cut],
                      "dev": [j for j in joined if j.text.article_index >= cut]}
        for name, part in groups.items():
            examples, pre_skipped, counts = build_examples(part, str(wav_dir), args.context_unit,
                                                           concat_root / name)
            res = sf.finalize_split(examples, out, name, "en", one_to_one_filter=args.one_to_one,
                                    pre_skipped=pre_skipped, max_skipped_frac=args.max_skipped_frac,
                                    probe=probe, nj=args.nj, extra_stats={"context_unit": args.context_unit, **counts})
            st = res.stats
            print(f"{name}: {st['written']} pairs written ({st['questions_with_audio']} questions with audio, "
                  f"{st['examples_read']} read); skipped: {st['skip_reasons'] or 'none'} -> {res.jsonl}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (sf.DataPrepError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

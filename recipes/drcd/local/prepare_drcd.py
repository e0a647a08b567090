#!/usr/bin/env python3
"""DRCD (TTS training set) and ODSQA (human-read DRCD dev, test set) -> FunASR jsonl for CLSR.

DRCD* in the paper: Traditional Chinese, spoken questions and spoken contexts. The training
pairs come from DRCD's training set, filtered one-to-one and synthesised with a TTS model; the
test pairs are ODSQA, DRCD dev paragraphs and questions read by 20 speakers.

Subcommands (stage 0 of recipes/drcd runs them in this order):

``tts-manifest``  DRCD json -> one-to-one sentence pairs -> ``<out>/<split>.tts.tsv`` listing
                  every text to synthesise (``c_<paragraph id>_<sentence>`` and ``q_<question id>``).
``build``         DRCD json + synthesised wavs (``<wav-dir>/<utt>.wav``) -> ``<split>.jsonl``.
``odsqa``         ODSQA json + DRCD_dev.json + ODSQA audio -> ``<split>.jsonl``.
``all``           the three above plus the TTS run (``local/tts_synthesize.py``) in one process.

Context unit: the sentence that holds the answer (``。！？`` boundaries). With that rule ODSQA's
1,465 spoken questions give 1,426 one-to-one pairs - the paper's DRCD* test set has 1,425 -
while one question per paragraph would give at most 586. Targets are the DRCD text (characters;
``target_len`` counts characters), never the iFLYTEK ASR transcripts in the ODSQA files (those
are kept as ``question_asr`` / ``context_asr`` for cascade baselines).

ODSQA audio: the archive's internal layout is **not documented** anywhere reachable. Files are
found by name anywhere under ``--audio-dir`` with the templates ``--context-name`` (default
``{pid}_{k}``: paragraph id + 0-based sentence index; ``{k1}`` is 1-based) and
``--question-name`` (default ``{qid}``). When no file matches, the error lists a sample of the
names that are there, so the templates can be set from it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from funasr_clsr.data_prep import squad_format as sf

AUDIO_EXT = (".wav", ".flac", ".mp3", ".ogg")


def context_utt(pid: str, k: int) -> str:
    return f"c_{pid}_{k}"


def question_utt(qid: str) -> str:
    return f"q_{qid}"


def select_pairs(drcd_json: str):
    """One-to-one sentence pairs of a DRCD file, deterministic (first question per sentence)."""
    paragraphs = sf.iter_paragraphs(sf.load_squad(drcd_json), drcd_json)
    pairs, unplaced = sf.answer_sentence_pairs(paragraphs, "zh")
    candidates = [sf.Example(key=qa.id, context_id=f"{par.paragraph_id}_{k}", source="",
                             target=sf.clean_text(par.context[s0:s1]), question=sf.clean_text(qa.question),
                             question_id=qa.id, extra={"paragraph_id": par.paragraph_id, "sentence": k,
                                                       "title": par.title, "answer": qa.answer})
                  for par, k, (s0, s1), qa in pairs]
    kept, dropped = sf.one_to_one(candidates, "zh")
    skipped = [(qa.id, drcd_json, f"not paired: {why}") for _, qa, why in unplaced]
    skipped += [(ex.key, drcd_json, why) for ex, why in dropped]
    return kept, skipped, len(candidates) + len(unplaced)


def cmd_tts_manifest(args) -> int:
    kept, skipped, total = select_pairs(args.drcd_json)
    if not kept:
        raise sf.EmptySplitError(f"{args.drcd_json}: no question could be paired with a sentence")
    lines, seen = [], set()
    for ex in kept:
        for utt, text in ((context_utt(ex.extra["paragraph_id"], ex.extra["sentence"]), ex.target),
                          (question_utt(ex.question_id), ex.question)):
            if utt not in seen:
                seen.add(utt)
                lines.append(f"{utt}\t{' '.join(text.split())}\n")
    out = Path(args.out_dir) / f"{args.split}.tts.tsv"
    sf.atomic_write_text(out, "".join(lines))
    print(f"{args.split}: {len(kept)} one-to-one pairs from {total} questions; {len(lines)} texts to "
          f"synthesise -> {out}")
    return 0


def cmd_build(args) -> int:
    kept, skipped, total = select_pairs(args.drcd_json)
    wav_dir = Path(args.wav_dir)
    examples = []
    for ex in kept:
        pid, k = ex.extra["paragraph_id"], ex.extra["sentence"]
        ex.source = os.path.abspath(wav_dir / f"{context_utt(pid, k)}.wav")
        ex.question_source = os.path.abspath(wav_dir / f"{question_utt(ex.question_id)}.wav")
        ex.question_target = ex.question
        examples.append(ex)
    res = sf.finalize_split(examples, args.out_dir, args.split, "zh", one_to_one_filter=True,
                            pre_skipped=skipped, max_skipped_frac=args.max_skipped_frac,
                            extra_stats={"source": args.drcd_json, "audio": "TTS", "wav_dir": str(wav_dir)})
    report(res)
    return 0


def _name(template: str, **fields) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise sf.DataPrepError(f"bad name template {template!r} ({exc}); fields: {sorted(fields)}") from None


def cmd_odsqa(args) -> int:
    dev = {p.paragraph_id: p for p in sf.iter_paragraphs(sf.load_squad(args.drcd_dev), args.drcd_dev)}
    odsqa = sf.iter_paragraphs(sf.load_squad(args.odsqa_json), args.odsqa_json)
    audio = sf.find_files(args.audio_dir, AUDIO_EXT)
    examples, skipped = [], []
    matched_context = matched_question = 0
    for par in odsqa:
        text_par = dev.get(par.paragraph_id)
        if text_par is None:
            raise sf.SquadFormatError(f"{args.odsqa_json}: paragraph {par.paragraph_id} is not in {args.drcd_dev}; "
                                      "ODSQA is DRCD dev read aloud - is this DRCD v1.3 dev?")
        text_qas = {q.id: q for q in text_par.qas}
        spans = sf.split_sentences(text_par.context, "zh")
        pid = par.paragraph_id
        art, _, pnum = pid.partition("-")
        names = [_name(args.context_name, pid=pid, k=k, k1=k + 1, article=art, paragraph=pnum)
                 for k in range(len(spans) + 3)]
        present = [n in audio for n in names]
        extra_files = any(present[len(spans):])
        whole = _name(args.paragraph_name, pid=pid, article=art, paragraph=pnum)
        matched_context += (whole in audio) if args.context_unit == "paragraph" else sum(present)
        for qa in par.qas:
            tq = text_qas.get(qa.id)
            if tq is None:
                raise sf.SquadFormatError(f"{args.odsqa_json}: question {qa.id} is not in paragraph {pid} of "
                                          f"{args.drcd_dev}")
            q_name = _name(args.question_name, qid=qa.id, pid=pid)
            matched_question += q_name in audio
            q_source = audio.get(q_name) or os.path.abspath(os.path.join(args.audio_dir, q_name + ".wav"))
            pos = sf.locate_answer(text_par.context, tq)
            if args.context_unit == "paragraph":
                ctx_id, target = pid, sf.clean_text(text_par.context)
                source = audio.get(whole) or os.path.abspath(os.path.join(args.audio_dir, whole + ".wav"))
            else:
                if pos < 0 or not spans:
                    skipped.append((qa.id, args.drcd_dev, "not paired: answer text not found in the DRCD context"))
                    continue
                if extra_files:
                    why = f"recording count mismatch: more recordings than the {len(spans)} DRCD sentences"
                    skipped.append((qa.id, names[len(spans)], why))
                    continue
                k = sf.sentence_index(spans, pos)
                ctx_id, target = f"{pid}_{k}", sf.clean_text(text_par.context[spans[k][0]:spans[k][1]])
                source = audio.get(names[k]) or os.path.abspath(os.path.join(args.audio_dir, names[k] + ".wav"))
            examples.append(sf.Example(
                key=qa.id, context_id=ctx_id, source=source, target=target, question=sf.clean_text(tq.question),
                question_id=qa.id, question_source=q_source, question_target=sf.clean_text(tq.question),
                extra={"title": text_par.title, "answer": tq.answer, "question_asr": sf.clean_text(qa.question),
                       "context_asr": sf.clean_text(par.context)}))
    if examples and (matched_context == 0 or matched_question == 0):
        sample = sorted(audio)[:8]
        raise sf.DataPrepError(
            f"{args.audio_dir}: no ODSQA {'question' if matched_question == 0 else 'context'} recording matches "
            f"the name templates (--context-name {args.context_name!r}, --paragraph-name {args.paragraph_name!r}, "
            f"--question-name {args.question_name!r}); "
            f"{len(audio)} audio files found, e.g. {sample}")
    res = sf.finalize_split(examples, args.out_dir, args.split, "zh", one_to_one_filter=args.one_to_one,
                            pre_skipped=skipped, max_skipped_frac=args.max_skipped_frac,
                            extra_stats={"source": args.odsqa_json, "audio": "ODSQA speakers",
                                         "context_unit": args.context_unit})
    report(res)
    return 0


def cmd_all(args) -> int:
    """Stage 0 in one process: TTS manifest -> synthesis (skips finished files) -> train jsonl -> ODSQA."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tts_synthesize

    raw, out = Path(args.raw_dir), Path(args.out_dir)
    train_json = str(raw / "DRCD_training.json")
    cmd_tts_manifest(argparse.Namespace(drcd_json=train_json, split=args.train_split, out_dir=str(out)))
    manifest = out / f"{args.train_split}.tts.tsv"
    tts_dir = Path(args.tts_dir)
    missing = [u for u, _ in tts_synthesize.read_manifest(str(manifest)) if not (tts_dir / f"{u}.wav").exists()]
    if missing and not args.tts_cmd:
        raise sf.DataPrepError(
            f"{len(missing)} texts in {manifest} have no synthesised audio in {tts_dir}, and no TTS command "
            "was given: DRCD* training speech is synthesised from the DRCD text (the paper used a TTS model); "
            "set --tts_cmd, e.g. \"mytts --in {text_file} --out {wav}\" (see README.md)")
    if missing:
        rc = tts_synthesize.main(["--manifest", str(manifest), "--out-dir", str(tts_dir), "--cmd", args.tts_cmd,
                                  "--nj", str(args.nj)])
        if rc != 0:
            raise sf.DataPrepError(f"TTS failed for every text (or too many); see {tts_dir / 'failed.tsv'}")
    cmd_build(argparse.Namespace(drcd_json=train_json, split=args.train_split, out_dir=str(out),
                                 wav_dir=str(tts_dir), max_skipped_frac=args.max_skipped_frac))
    cmd_odsqa(argparse.Namespace(
        odsqa_json=str(raw / "ODSQA_spokenq_test-v1.1.json"), drcd_dev=str(raw / "DRCD_dev.json"),
        audio_dir=args.odsqa_audio_dir or str(raw / "odsqa_audio"), split=args.test_split, out_dir=str(out),
        context_unit=args.context_unit, context_name=args.context_name, paragraph_name=args.paragraph_name,
        question_name=args.question_name, one_to_one=args.one_to_one, max_skipped_frac=args.max_skipped_frac))
    return 0


def report(res: sf.SplitResult) -> None:
    st = res.stats
    print(f"{st['split']}: {st['written']} pairs written ({st['examples_read']} read); "
          f"skipped: {st['skip_reasons'] or 'none'} -> {res.jsonl}")


def bool_arg(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("tts-manifest", "build"):
        p = sub.add_parser(name)
        p.add_argument("--drcd-json", required=True, help="DRCD_training.json (or another DRCD file)")
        p.add_argument("--split", default="train")
        p.add_argument("--out-dir", required=True)
        if name == "build":
            p.add_argument("--wav-dir", required=True, help="synthesised <utt>.wav files")
            p.add_argument("--max-skipped-frac", type=float, default=None)
    p = sub.add_parser("odsqa")
    p.add_argument("--odsqa-json", required=True, help="ODSQA_spokenq_test-v1.1.json")
    p.add_argument("--drcd-dev", required=True, help="DRCD_dev.json (the text ODSQA's speakers read)")
    p.add_argument("--audio-dir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--context-unit", choices=("sentence", "paragraph"), default="sentence")
    p.add_argument("--context-name", default="{pid}_{k}", help="sentence recording name (no extension)")
    p.add_argument("--paragraph-name", default="{pid}", help="paragraph recording name (paragraph unit)")
    p.add_argument("--question-name", default="{qid}", help="question recording name (no extension)")
    p.add_argument("--one-to-one", type=bool_arg, default=True)
    p.add_argument("--max-skipped-frac", type=float, default=None)
    p = sub.add_parser("all", help="tts-manifest + synthesis + build + odsqa (what run.sh stage 0 calls)")
    p.add_argument("--raw-dir", required=True, help="DRCD_training.json, DRCD_dev.json, ODSQA json, odsqa_audio/")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--tts-dir", required=True, help="synthesised training speech (<utt>.wav)")
    p.add_argument("--tts-cmd", default="", help="TTS command template (see local/tts_synthesize.py)")
    p.add_argument("--nj", type=int, default=4)
    p.add_argument("--odsqa-audio-dir", default="", help="default: <raw-dir>/odsqa_audio")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--context-unit", choices=("sentence", "paragraph"), default="sentence")
    p.add_argument("--context-name", default="{pid}_{k}")
    p.add_argument("--paragraph-name", default="{pid}")
    p.add_argument("--question-name", default="{qid}")
    p.add_argument("--one-to-one", type=bool_arg, default=True)
    p.add_argument("--max-skipped-frac", type=float, default=None)
    args = ap.parse_args(argv)
    return {"tts-manifest": cmd_tts_manifest, "build": cmd_build, "odsqa": cmd_odsqa,
            "all": cmd_all}[args.cmd](args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (sf.DataPrepError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

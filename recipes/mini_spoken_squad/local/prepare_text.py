#!/usr/bin/env python3
"""Text side of the mini Spoken-SQuAD recipe.

Two sub-commands:

``build-src``  (maintainers only, run once): SQuAD v1.1 JSON -> compact one-question-per-context
    JSONL committed in ``data_src/``.  One-to-one filtering as in the CLSR paper: the *first*
    question of every paragraph is kept (deterministic), so in-batch negatives are true negatives.

``prepare``  (recipe stage 0): ``data_src/*.jsonl`` -> per-profile text manifests and a synthesis
    job list under ``data/<profile>/text/``.  It picks the subsets, splits contexts into sentences,
    normalises every sentence for TTS/targets (see ``textnorm.py``), cuts short ASR utterances and
    assigns a voice/rate/pitch to every utterance deterministically from ``--seed`` and its key.

Splits (all disjoint at article level except qa_train/asr_train, which share the train articles):
    qa_train / asr_train : train articles minus the last ``--heldout-articles``
    qa_dev   / asr_dev   : the last ``--heldout-articles`` train articles
    qa_test              : SQuAD dev part 1 (never used for training)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from textnorm import (ESPEAK_CHARS_PER_WORD, Normalized, chunk_words, clean_unicode,  # noqa: E402
                      espeak_expansions, normalize, split_sentences)

TRAIN_SRC = "squad_train_du2017_1q.jsonl"
TEST_SRC = "squad_dev_part1_1q.jsonl"
SRC_FIELDS = ("id", "title", "context", "qid", "question", "answer", "answer_start")


class DataError(ValueError):
    """Input file is missing fields or malformed."""


# --------------------------------------------------------------------------- build-src
def one_question_per_context(squad: dict, prefix: str, path: str = "<squad>") -> list[dict]:
    """Flatten SQuAD JSON to one record per paragraph holding its first question and first answer."""
    if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
        raise DataError(f"{path}: not SQuAD layout (no top-level 'data' list)")
    out = []
    for ai, art in enumerate(squad["data"]):
        title = art.get("title")
        paras = art.get("paragraphs")
        if not isinstance(title, str) or not isinstance(paras, list):
            raise DataError(f"{path}: article {ai} lacks 'title' or 'paragraphs'")
        for pi, para in enumerate(paras):
            qas = para.get("qas") or []
            ctx = para.get("context")
            if not isinstance(ctx, str) or not ctx.strip():
                raise DataError(f"{path}: article {ai} paragraph {pi} has no context")
            if not qas:
                continue  # no question -> unusable for retrieval pairs
            q = qas[0]
            ans = (q.get("answers") or [{}])[0]
            out.append({
                "id": f"{prefix}-a{ai:02d}-p{pi:03d}",
                "title": title,
                "context": ctx,
                "qid": q.get("id"),
                "question": q.get("question"),
                "answer": ans.get("text", ""),
                "answer_start": ans.get("answer_start", -1),
            })
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)  # atomic: a crash never leaves a half-written manifest


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{ln}: invalid JSON ({e.msg})") from None
            missing = [k for k in required if k not in r]
            if missing:
                raise DataError(f"{path}:{ln}: missing field(s) {missing}")
            rows.append(r)
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cmd_build_src(a: argparse.Namespace) -> None:
    out = Path(a.out_dir)
    info = {}
    for src, name, prefix in ((a.train_json, TRAIN_SRC, "sqtr"), (a.test_json, TEST_SRC, "sqdev")):
        p = Path(src)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: SQuAD JSON not found")
        try:
            squad = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: invalid JSON ({e.msg})") from None
        rows = one_question_per_context(squad, prefix, str(p))
        write_jsonl(out / name, rows)
        info[name] = {"source": str(p), "source_sha256": sha256(p), "sha256": sha256(out / name),
                      "articles": len({r["title"] for r in rows}), "contexts": len(rows)}
    print(json.dumps(info, indent=2))


# --------------------------------------------------------------------------- prepare
def _rng(seed: int, *parts: str) -> random.Random:
    # str seeds are hashed with SHA-512 by `random`, so this is stable across runs/platforms
    return random.Random(f"{seed}/" + "/".join(parts))


def pick_voice(seed: int, key: str, voices: list[str], rates: list[int], pitches: list[int],
               avoid: str | None = None) -> dict:
    r = _rng(seed, key)
    pool = [v for v in voices if v != avoid] or voices
    return {"voice": r.choice(pool), "rate": r.choice(rates), "pitch": r.choice(pitches)}


def normalize_context(ctx: str, answer_start: int = -1) -> tuple[list[Normalized], int]:
    """Sentences of a context, normalised (empty ones dropped), and the index of the sentence
    that holds character ``answer_start`` of the original context (0 if unknown)."""
    sents = split_sentences(ctx)
    flat = re.sub(r"\s+", " ", clean_unicode(ctx)).strip()
    pos = len(re.sub(r"\s+", " ", clean_unicode(ctx[:answer_start])).lstrip()) if answer_start >= 0 else 0
    segs, anchor, cursor = [], 0, 0
    for sent in sents:
        start = flat.find(sent, cursor)
        start = cursor if start < 0 else start
        cursor = start + len(sent)
        n = normalize(sent)
        if not n.target:
            continue
        if answer_start >= 0 and start <= pos:
            anchor = len(segs)
        segs.append(n)
    return segs, anchor


def _subset(rows: list[dict], n: int, seed: int, name: str) -> list[dict]:
    """Seeded random subset (spread over all articles), kept in source order. n<=0 -> all."""
    if n <= 0 or n >= len(rows):
        return list(rows)
    idx = sorted(_rng(seed, "subset", name).sample(range(len(rows)), n))
    return [rows[i] for i in idx]


def asr_pieces(contexts: list[dict], max_words: int, min_words: int, n: int = 0,
               rng: random.Random | None = None, max_chars: int = 0) -> list[dict]:
    """Short ASR utterances: every sentence of the contexts, cut to <= max_words words at pauses,
    pieces under min_words dropped.  With n > 0, contexts are visited in rng-shuffled order and
    only until n pieces are collected (normalising all 2k contexts would cost ~10 s), then n
    pieces are drawn from those."""
    order = list(contexts)
    if rng is not None:
        rng.shuffle(order)
    out = []
    for c in order:
        for si, seg in enumerate(normalize_context(c["context"])[0]):
            for ci, piece in enumerate(chunk_words(seg, max_words, max_chars)):
                if len(piece.target.split()) >= min_words:
                    out.append({"context_id": c["id"], "key": f"{c['id']}-s{si:02d}c{ci}",
                                "tts": piece.tts, "target": piece.target})
        if n > 0 and len(out) >= 2 * n:  # 2x: the sample still mixes sentences of many contexts
            break
    if rng is not None:
        rng.shuffle(out)
    return out[:n] if n > 0 else out


def cmd_prepare(a: argparse.Namespace) -> dict:
    t0 = time.time()
    src = Path(a.src_dir)
    out = Path(a.out_dir).resolve()
    wav_root = Path(a.wav_dir).resolve() if a.wav_dir else out / "wav"
    train = read_jsonl(src / TRAIN_SRC, SRC_FIELDS)
    test = read_jsonl(src / TEST_SRC, SRC_FIELDS)
    voices = a.voices.split()
    test_voices = (a.test_voices or a.voices).split()
    rates = [int(x) for x in a.rates.split()]
    test_rates = [int(x) for x in (a.test_rates or a.rates).split()]
    pitches = [int(x) for x in a.pitches.split()]
    if not voices or not rates or not pitches:
        raise DataError("--voices, --rates and --pitches must each list at least one value")

    titles = list(dict.fromkeys(r["title"] for r in train))
    if not 0 <= a.heldout_articles < len(titles):
        raise DataError(f"--heldout-articles must be in [0, {len(titles) - 1}]")
    held = set(titles[len(titles) - a.heldout_articles:]) if a.heldout_articles else set()
    pool_train = [r for r in train if r["title"] not in held]
    pool_held = [r for r in train if r["title"] in held]

    splits: dict[str, list[dict]] = {}
    jobs: list[dict] = []

    def add_job(split: str, key: str, segs: list[Normalized], vc: dict, max_sec: float | None,
                anchor: int = 0) -> str:
        wav = str(wav_root / split / f"{key}.wav")
        jobs.append({"key": key, "wav": wav, "segments": [s.tts for s in segs], **vc,
                     "max_sec": max_sec, "anchor": anchor})
        return wav

    # ---- QA splits: one spoken context + one spoken question per context
    # the test split may add voices and rates training never hears (seen/unseen rows in the evaluation)
    qa_specs = (("qa_train", pool_train, a.qa_train_contexts, a.qa_train_max_sec, voices, rates),
                ("qa_dev", pool_held, a.qa_dev_contexts, a.qa_train_max_sec, voices, rates),
                ("qa_test", test, a.qa_test_contexts, None, test_voices, test_rates))
    skipped = Counter()
    for split, pool, n, max_sec, vpool, rpool in qa_specs:
        items = []
        for c in _subset(pool, n, a.seed, split):
            segs, anchor = normalize_context(c["context"], int(c.get("answer_start", -1)))
            q = normalize(c["question"])
            if not segs or not q.target:
                skipped[split] += 1
                continue
            key = f"{split}-{c['id']}"
            cv = pick_voice(a.seed, key, vpool, rpool, pitches)
            qv = pick_voice(a.seed, key + "-q", vpool, rpool, pitches, avoid=cv["voice"])
            max_sec = max_sec if max_sec and max_sec > 0 else None
            wav = add_job(split, key, segs, cv, max_sec, anchor)
            qwav = add_job(split, key + "-q", [q], qv, None)
            items.append({
                "key": key, "context_id": c["id"], "title": c["title"], "context": c["context"],
                "qid": c["qid"], "question": c["question"], "answer": c["answer"],
                "segments": [{"tts": s.tts, "target": s.target} for s in segs],
                "answer_sentence": anchor, "wav": wav, **cv, "max_sec": max_sec,
                "question_key": key + "-q", "question_tts": q.tts, "question_target": q.target,
                "question_wav": qwav, "question_voice": qv["voice"], "question_rate": qv["rate"],
                "question_pitch": qv["pitch"],
            })
        splits[split] = items

    # ---- ASR splits: short utterances (sentences / chunks) synthesised on their own.
    # Character cap so that even the slowest rate stays under --asr-max-sec (conservative speed).
    max_chars = int(a.asr_max_sec * min(rates) / 60.0 * (ESPEAK_CHARS_PER_WORD - 0.6)) if a.asr_max_sec > 0 else 0
    for split, pool, n in (("asr_train", pool_train, a.asr_train_utts),
                           ("asr_dev", pool_held, a.asr_dev_utts)):
        pieces = asr_pieces(pool, a.asr_max_words, a.asr_min_words, n, _rng(a.seed, "asr", split),
                            max_chars)
        pieces.sort(key=lambda p: p["key"])
        items = []
        for p in pieces:
            key = f"{split}-{p['key']}"
            vc = pick_voice(a.seed, key, voices, rates, pitches)
            wav = add_job(split, key, [Normalized(p["tts"], p["target"])], vc, None)
            items.append({"key": key, "context_id": p["context_id"], "tts": p["tts"],
                          "target": p["target"], "wav": wav, **vc})
        splits[split] = items

    text_dir = out / "text"
    for split, items in splits.items():
        write_jsonl(text_dir / f"{split}.jsonl", items)
    write_jsonl(text_dir / "synth_jobs.jsonl", jobs)

    words = Counter()
    for items in splits.values():
        for it in items:
            for t in ([s["target"] for s in it["segments"]] + [it["question_target"]]
                      if "segments" in it else [it["target"]]):
                words.update(t.split())
    summary = {
        "train_articles": len(titles) - len(held), "heldout_articles": sorted(held),
        "pool_contexts": {"train": len(pool_train), "heldout": len(pool_held), "test": len(test)},
        "counts": {k: len(v) for k, v in splits.items()},
        "skipped_empty": dict(skipped),
        "synthesis_jobs": len(jobs),
        "target_words": sum(words.values()), "target_vocab": len(words),
        "asr_max_words": a.asr_max_words, "asr_max_chars": max_chars,
        "voices": voices, "test_voices": test_voices, "rates": rates, "test_rates": test_rates, "pitches": pitches,
        "seed": a.seed, "seconds": round(time.time() - t0, 2),
    }
    if a.audit_espeak:
        exp = espeak_expansions(sorted(words))
        summary["espeak_audit"] = {
            "word_types_checked": len(words), "expanded_types": len(exp),
            "expanded_token_share": round(sum(words[w] for w in exp) / max(1, sum(words.values())), 6),
            "examples": dict(sorted(exp.items(), key=lambda kv: -words[kv[0]])[:20]),
        }
    (out / "text" / "text_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-src", help="SQuAD JSON -> one-question-per-context JSONL (maintainers)")
    b.add_argument("--train-json", required=True)
    b.add_argument("--test-json", required=True)
    b.add_argument("--out-dir", required=True)
    p = sub.add_parser("prepare", help="data_src -> per-profile text manifests + synthesis jobs")
    p.add_argument("--src-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--wav-dir", default="", help="default: <out-dir>/wav")
    p.add_argument("--qa-train-contexts", type=int, default=400, help="0 = all")
    p.add_argument("--qa-dev-contexts", type=int, default=50, help="0 = all")
    p.add_argument("--qa-test-contexts", type=int, default=0, help="0 = all")
    p.add_argument("--qa-train-max-sec", type=float, default=60.0,
                   help="train/dev contexts longer than this are cut at a sentence boundary (0 = never)")
    p.add_argument("--asr-train-utts", type=int, default=2000, help="0 = all")
    p.add_argument("--asr-dev-utts", type=int, default=100, help="0 = all")
    p.add_argument("--asr-max-words", type=int, default=24)
    p.add_argument("--asr-min-words", type=int, default=3)
    p.add_argument("--asr-max-sec", type=float, default=12.0,
                   help="ASR pieces are also cut by characters to stay under about this long (0 = off)")
    p.add_argument("--heldout-articles", type=int, default=2)
    p.add_argument("--voices", default="en-us en-us+f3 en-gb-x-rp+m3 en-029+f2")
    p.add_argument("--test-voices", default="", help="default: same as --voices")
    p.add_argument("--rates", default="140 150 160 170 180 190")
    p.add_argument("--test-rates", default="", help="default: same as --rates")
    p.add_argument("--pitches", default="40 45 50 55 60")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--audit-espeak", action="store_true",
                   help="also list target words that espeak-ng expands into several words (~1 s/1k words)")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build-src":
            cmd_build_src(a)
        else:
            cmd_prepare(a)
    except (DataError, FileNotFoundError) as e:
        print(f"prepare_text.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

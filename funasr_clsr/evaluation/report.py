"""results.json schema, atomic per-system merging, and RESULTS.md rendering.

Schema (recall and MRR in percent, see ``metrics.py``)::

    {"profile": str, "command": str,
     "systems": {NAME: {"wer": float | None,            # optional, missing == None
                        "q2c": {"r1", "r5", "r10", "mrr"},  # required
                        "c2q": {"r1", "r5", "r10", "mrr"} | None,  # optional
                        ...extra keys allowed: "note": str, "n": int, "command": str,
                        "q2c_curve": [recall@1..k] (percent, used for plots)}}}

NAME is a short identifier (clsr, clean_text, cascade, cascade_whisper, parabge, clap, bm25,
clsr_no_vq, clsr_no_sampler, clsr_no_pretrain, ...).  Stages add one row at a time with
:func:`merge_system`, which rewrites the file atomically under a lock.

CLI::

    python -m funasr_clsr.evaluation.report results.json [--out RESULTS.md]
        [--anchors anchors.json | --paper-anchors spoken_squad] [--plots DIR] [--notes TEXT]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import numbers
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "METRIC_KEYS",
    "SYSTEM_ORDER",
    "validate_metrics",
    "validate_system",
    "validate_results",
    "validate_anchors",
    "load_results",
    "merge_system",
    "compute_claims",
    "render_markdown",
    "paper_anchors",
    "make_plots",
    "main",
]

METRIC_KEYS = ("r1", "r5", "r10", "mrr")
_EXTRA_RECALL = re.compile(r"^r[0-9]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
_TOL = 1e-6

# Display order: upper bound, the method, cascades, end-to-end baselines, lexical, ablations.
SYSTEM_ORDER = (
    "clean_text",
    "clsr",
    "cascade",
    "cascade_whisper",
    "parabge",
    "speechdpr",
    "clap",
    "bm25",
    "clsr_no_vq",
    "clsr_no_sampler",
    "clsr_no_pretrain",
)

DESCRIPTIONS = {
    "clean_text": "text encoder on ground-truth text (upper bound)",
    "clsr": "CLSR: speech branch (ASR encoder, CIF, decoder) -> VQ -> text encoder",
    "cascade": "same-budget ASR transcript -> text encoder",
    "cascade_whisper": "Whisper transcript -> text encoder",
    "parabge": "speech encoder (mean-pooled) + text encoder dual encoder",
    "speechdpr": "speech encoder (mean-pooled) distilled from an ASR cascade's text embeddings",
    "clap": "CLAP audio-text embeddings",
    "bm25": "BM25 over ASR transcripts",
    "clsr_no_vq": "ablation: no VQ adaptor",
    "clsr_no_sampler": "ablation: no glancing sampler",
    "clsr_no_pretrain": "ablation: no pre-training",
}


class ResultsError(ValueError):
    """A results/anchors object or file breaks the schema."""


# --------------------------------------------------------------------------- validation


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def validate_metrics(m: Any, where: str, partial: bool = False) -> None:
    """Check one ``{"r1","r5","r10","mrr"}`` dict (percentages, consistent with each other).

    ``partial=True`` (anchors) allows missing keys and ``None`` values.
    """
    if not isinstance(m, Mapping):
        raise ResultsError(f"{where}: metrics must be a dict with keys {list(METRIC_KEYS)}, got {type(m).__name__}")
    for key in m:
        if key not in METRIC_KEYS and not (isinstance(key, str) and _EXTRA_RECALL.match(key)):
            raise ResultsError(f"{where}: unknown metric key {key!r} (allowed: r1, r5, r10, mrr, r<k>)")
    if not partial:
        missing = [k for k in METRIC_KEYS if k not in m]
        if missing:
            raise ResultsError(f"{where}: missing metric keys {missing}")
    vals: dict[str, float] = {}
    for key, v in m.items():
        if v is None and partial:
            continue
        if not _is_number(v) or not math.isfinite(float(v)):
            raise ResultsError(f"{where}.{key}: must be a finite number, got {v!r}")
        if not (-_TOL <= float(v) <= 100 + _TOL):
            raise ResultsError(f"{where}.{key}: {v} is outside [0, 100] (metrics are percentages)")
        vals[key] = float(v)
    # Recall can only grow with k, and MRR >= R@1 (each rank-1 hit adds 1 to the sum).
    ks = sorted((int(k[1:]), v) for k, v in vals.items() if k != "mrr")
    for (k_a, v_a), (k_b, v_b) in zip(ks, ks[1:]):
        if v_a > v_b + _TOL:
            raise ResultsError(f"{where}: r{k_a}={v_a} > r{k_b}={v_b}; recall must not drop as k grows")
    if "mrr" in vals and "r1" in vals and vals["mrr"] + _TOL < vals["r1"]:
        raise ResultsError(f"{where}: mrr={vals['mrr']} < r1={vals['r1']}; impossible (mixed-up keys or units?)")


def _validate_wer(v: Any, where: str) -> None:
    if v is None:
        return
    if not _is_number(v) or not math.isfinite(float(v)) or float(v) < 0:
        raise ResultsError(f"{where}.wer: must be a non-negative number (percent) or null, got {v!r}")


def validate_system(name: Any, entry: Any, where: str = "systems") -> None:
    """Check one system row of results.json."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ResultsError(f"{where}: system name {name!r} must be a non-empty [A-Za-z0-9_.+-] identifier")
    here = f"{where}.{name}"
    if not isinstance(entry, Mapping):
        raise ResultsError(f"{here}: must be a dict, got {type(entry).__name__}")
    _validate_wer(entry.get("wer"), here)
    if "q2c" not in entry:
        raise ResultsError(f"{here}: missing 'q2c' metrics")
    validate_metrics(entry["q2c"], f"{here}.q2c")
    if entry.get("c2q") is not None:
        validate_metrics(entry["c2q"], f"{here}.c2q")
    if "n" in entry and entry["n"] is not None:
        if not isinstance(entry["n"], numbers.Integral) or isinstance(entry["n"], bool) or entry["n"] < 1:
            raise ResultsError(f"{here}.n: must be a positive integer (number of queries), got {entry['n']!r}")
    for key in ("note", "command"):
        if key in entry and entry[key] is not None and not isinstance(entry[key], str):
            raise ResultsError(f"{here}.{key}: must be a string, got {type(entry[key]).__name__}")
    if entry.get("q2c_curve") is not None:
        curve = entry["q2c_curve"]
        if not isinstance(curve, (list, tuple)) or not curve or not all(_is_number(v) for v in curve):
            raise ResultsError(f"{here}.q2c_curve: must be a non-empty list of recall@k percentages")
        if any(not (-_TOL <= float(v) <= 100 + _TOL) for v in curve):
            raise ResultsError(f"{here}.q2c_curve: values must lie in [0, 100]")
        if any(float(a) > float(b) + _TOL for a, b in zip(curve, curve[1:])):
            raise ResultsError(f"{here}.q2c_curve: recall@k must not decrease with k")


def validate_results(obj: Any) -> Any:
    """Raise :class:`ResultsError` (a ValueError) naming the first schema violation; return ``obj``."""
    if not isinstance(obj, Mapping):
        raise ResultsError(f"results must be a JSON object, got {type(obj).__name__}")
    for key in ("profile", "command"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise ResultsError(f"results.{key}: must be a non-empty string, got {obj.get(key)!r}")
    systems = obj.get("systems")
    if not isinstance(systems, Mapping):
        raise ResultsError(f"results.systems: must be a dict of system name -> metrics, got {type(systems).__name__}")
    for name, entry in systems.items():
        validate_system(name, entry)
    return obj


def validate_anchors(anchors: Any) -> Any:
    """Anchors: ``{"source": str, "rows": {label: {"wer", "q2c", "c2q", "source"?}}, "note"?: str}``.

    Metric dicts may be partial (papers rarely give MRR)."""
    if not isinstance(anchors, Mapping):
        raise ResultsError(f"anchors must be a JSON object, got {type(anchors).__name__}")
    if not isinstance(anchors.get("source"), str) or not anchors["source"].strip():
        raise ResultsError("anchors.source: must say where the numbers are quoted from")
    rows = anchors.get("rows")
    if not isinstance(rows, Mapping) or not rows:
        raise ResultsError("anchors.rows: must be a non-empty dict of label -> numbers")
    for label, row in rows.items():
        here = f"anchors.rows.{label}"
        if not isinstance(label, str) or not label.strip() or "|" in label:
            raise ResultsError(f"{here}: label must be a non-empty string without '|'")
        if not isinstance(row, Mapping):
            raise ResultsError(f"{here}: must be a dict")
        _validate_wer(row.get("wer"), here)
        for side in ("q2c", "c2q"):
            if row.get(side) is not None:
                validate_metrics(row[side], f"{here}.{side}", partial=True)
    return anchors


# --------------------------------------------------------------------------- I/O


def _plain(v: Any) -> Any:
    """numpy scalars/arrays and tuples -> JSON-native types (without importing numpy)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return _plain(v.tolist())
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return v


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate a results.json; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: results file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from None
    try:
        return validate_results(obj)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None


def _load_anchors(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: anchors file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from None
    try:
        return validate_anchors(obj)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None


@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive advisory lock beside ``path`` so concurrent stages don't lose each other's rows."""
    try:
        import fcntl
    except ImportError:  # non-POSIX: atomic rename still protects the file itself
        yield
        return
    lock_path = path.with_name(f".{path.name}.lock")  # hidden, left in place (removing it would race)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:  # mkstemp makes 0600 files; give the usual umask-based mode instead
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def merge_system(
    results_path: str | os.PathLike,
    name: str,
    metrics: Mapping[str, Any],
    profile: str | None = None,
    command: str | None = None,
) -> dict:
    """Add or replace system ``name`` in ``results_path`` atomically; return the merged object.

    ``metrics`` is one system row (``{"wer", "q2c", "c2q", ...}``).  A new file needs
    ``profile`` and ``command``.  An existing file that is unreadable or of another profile
    is left untouched and an error is raised, so finished rows are never lost.  When
    ``command`` is given it becomes the file's command and is stored on the row too.
    """
    path = Path(results_path)
    row = _plain(copy.deepcopy(dict(metrics))) if isinstance(metrics, Mapping) else metrics
    if isinstance(row, dict) and command is not None:
        row.setdefault("command", command)
    try:
        validate_system(name, row)
    except ResultsError as e:
        raise ResultsError(f"{path}: refusing to write: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        if path.exists():
            obj = load_results(path)
            if profile is not None and obj["profile"] != profile:
                raise ResultsError(
                    f"{path}: holds profile {obj['profile']!r}, not {profile!r}; use another results file"
                )
        else:
            if not profile or not command:
                raise ResultsError(f"{path}: does not exist yet; profile= and command= are needed to create it")
            obj = {"profile": profile, "command": command, "systems": {}}
        if command is not None:
            obj["command"] = command
        obj["systems"][name] = row
        validate_results(obj)
        _atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return obj


# --------------------------------------------------------------------------- claims


def _r1(obj: Mapping, name: str) -> float | None:
    sysd = obj.get("systems", {}).get(name)
    if not sysd or not isinstance(sysd.get("q2c"), Mapping):
        return None
    v = sysd["q2c"].get("r1")
    return None if v is None else float(v)


def compute_claims(obj: Mapping) -> list[dict]:
    """Check the paper's headline claims against these numbers (Q->C R@1).

    Each item: ``{"id", "claim", "status": "met"|"missed"|"skipped", "margin": points|None,
    "detail"}``; margin > = 0 means met.  A claim whose rows are missing is "skipped".
    """
    out = []

    def add(cid: str, claim: str, needed: tuple[str, ...], fn):
        vals = {n: _r1(obj, n) for n in needed}
        missing = [n for n, v in vals.items() if v is None]
        if missing:
            out.append({"id": cid, "claim": claim, "status": "skipped", "margin": None,
                        "detail": "no row for " + ", ".join(f"`{m}`" for m in missing)})
            return
        margin, detail = fn(vals)
        out.append({"id": cid, "claim": claim, "status": "met" if margin >= 0 else "missed",
                    "margin": margin, "detail": detail})

    def vs_clean(v):
        bound = 0.8 * v["clean_text"]
        ratio = f" ({100 * v['clsr'] / v['clean_text']:.1f}% of it)" if v["clean_text"] > 0 else ""
        return v["clsr"] - bound, (
            f"clsr {v['clsr']:.2f} vs 0.8 x clean_text {v['clean_text']:.2f} = {bound:.2f}{ratio}")

    def vs_parabge(v):
        gap = v["clsr"] - v["parabge"]
        return gap - 20.0, f"clsr {v['clsr']:.2f} - parabge {v['parabge']:.2f} = {gap:.2f} points (need >= 20)"

    def vs_cascade(v):
        return v["clsr"] - v["cascade"], f"clsr {v['clsr']:.2f} vs cascade {v['cascade']:.2f}"

    add("clsr_vs_clean_text", "CLSR Q->C R@1 is at least 80% of the clean-text upper bound",
        ("clsr", "clean_text"), vs_clean)
    add("clsr_vs_parabge", "CLSR Q->C R@1 beats ParaBGE by at least 20 points", ("clsr", "parabge"), vs_parabge)
    add("clsr_vs_cascade", "CLSR Q->C R@1 is at least the same-budget cascade's",
        ("clsr", "cascade"), vs_cascade)
    add("clsr_vs_cascade_whisper", "CLSR Q->C R@1 is at least the Whisper-base cascade's (the paper's claim "
        "on a comparable acoustic model)", ("clsr", "cascade_whisper"),
        lambda v: (v["clsr"] - v["cascade_whisper"],
                   f"clsr {v['clsr']:.2f} vs cascade_whisper {v['cascade_whisper']:.2f}"))
    add("clsr_vs_no_vq", "CLSR Q->C R@1 is above the no-VQ ablation's", ("clsr", "clsr_no_vq"),
        lambda v: (v["clsr"] - v["clsr_no_vq"], f"clsr {v['clsr']:.2f} vs clsr_no_vq {v['clsr_no_vq']:.2f}"))
    add("clsr_vs_clap", "CLSR Q->C R@1 beats the CLAP-style dual encoder (the paper's ordering)",
        ("clsr", "clap"), lambda v: (v["clsr"] - v["clap"], f"clsr {v['clsr']:.2f} vs clap {v['clap']:.2f}"))
    return out


# --------------------------------------------------------------------------- markdown


def _order_key(name: str) -> tuple[int, str]:
    if name in SYSTEM_ORDER:
        return (SYSTEM_ORDER.index(name), "")
    if name.startswith("cascade"):
        return (SYSTEM_ORDER.index("cascade_whisper"), name)
    if name.startswith("clsr_"):
        return (len(SYSTEM_ORDER) + 1, name)  # unknown ablations after the known ones
    return (SYSTEM_ORDER.index("bm25"), name)  # other baselines just after bm25


def _fmt(v: Any) -> str:
    if v is None or not _is_number(v):
        return "-"
    return f"{float(v):.1f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _metric_cells(row: Mapping) -> list[str]:
    cells = [_fmt(row.get("wer"))]
    for side in ("q2c", "c2q"):
        m = row.get(side) or {}
        cells += [_fmt(m.get(k)) for k in METRIC_KEYS]
    return cells


_HEAD = ["WER", "Q->C R@1", "Q->C R@5", "Q->C R@10", "Q->C MRR",
         "C->Q R@1", "C->Q R@5", "C->Q R@10", "C->Q MRR"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(
    obj: Mapping,
    anchors: Mapping | None = None,
    notes: str | None = None,
    images: Mapping[str, str] | None = None,
) -> str:
    """RESULTS.md text: header (profile, command), results table, anchors, claims, notes.

    ``images`` maps a caption to a path (relative to the markdown file) to embed.
    """
    validate_results(obj)
    if anchors is not None:
        validate_anchors(anchors)
    systems = obj["systems"]
    names = sorted(systems, key=_order_key)
    has_n = any(systems[n].get("n") is not None for n in names)
    has_note = any(systems[n].get("note") for n in names)

    parts = [f"# Results: profile `{obj['profile']}`", "", "Produced by:", "", "```", obj["command"], "```", ""]
    parts.append("Recall@k and MRR are percentages (ties ranked pessimistically); WER is percent "
                 "after lowercasing and stripping punctuation; '-' = not measured.")
    parts.append("")
    header = ["System", "What"] + _HEAD + (["n"] if has_n else []) + (["Note"] if has_note else [])
    rows = []
    for n in names:
        s = systems[n]
        r = [f"`{n}`", _cell(DESCRIPTIONS.get(n, ""))] + _metric_cells(s)
        if has_n:
            r.append(str(s["n"]) if s.get("n") is not None else "-")
        if has_note:
            r.append(_cell(s.get("note") or ""))
        rows.append(r)
    parts += ["## Measured", "", _table(header, rows) if rows else "_No systems recorded yet._", ""]

    voice_rows = []
    for n in names:
        groups = systems[n].get("by_voice") or {}
        for g in ("seen", "unseen"):
            if isinstance(groups.get(g), Mapping):
                m = groups[g]
                voice_rows.append([f"`{n}`", g, _fmt(m.get("wer")), _fmt(m.get("r1")), _fmt(m.get("r5")),
                                   _fmt(m.get("mrr")), str(m.get("n", "-"))])
    if voice_rows:
        parts += ["## Seen and unseen voices", "",
                  "Q->C over the whole candidate pool, for questions whose context was read by a voice and rate "
                  "that training used (seen) or not (unseen).", "",
                  _table(["System", "Voices", "WER", "Q->C R@1", "Q->C R@5", "Q->C MRR", "n"], voice_rows), ""]

    other_cmds = [(n, systems[n]["command"]) for n in names
                  if systems[n].get("command") and systems[n]["command"] != obj["command"]]
    if other_cmds:
        parts += ["Rows produced by a different command:", ""]
        parts += [f"- `{n}`: `{c}`" for n, c in other_cmds]
        parts.append("")

    if anchors is not None:
        parts += ["## Anchors (not from this run)", "",
                  f"Source: {anchors['source']}. These rows were not produced by the command above: each "
                  "names where it comes from (another command in this repository, or a publication on its own "
                  "data and hardware); they are for orientation only.", ""]
        arows = []
        for label, row in anchors["rows"].items():
            label_txt = f"{label}, {row['source']}" if row.get("source") else label
            arows.append([_cell(label_txt)] + _metric_cells(row))
        parts += [_table(["Quoted row"] + _HEAD, arows), ""]
        if anchors.get("note"):
            parts += [str(anchors["note"]), ""]

    parts += ["## Claims checked (computed from the measured table)", ""]
    for c in compute_claims(obj):
        if c["status"] == "skipped":
            parts.append(f"- {c['claim']}: **skipped** ({c['detail']})")
        else:
            parts.append(f"- {c['claim']}: **{c['status']}** (margin {c['margin']:+.2f} points; {c['detail']})")
    parts.append("")

    if images:
        parts += ["## Figures", ""]
        parts += [f"![{_cell(cap)}]({p})" for cap, p in images.items()]
        parts.append("")
    if notes:
        parts += ["## Notes", "", notes.strip(), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- paper anchors

# CLSR paper (arXiv 2511.09282) Table 2 and Table 4: (wer, q2c r1/r5/r10, c2q r1/r5/r10).
_PAPER = {
    "spoken_squad": ("Spoken-SQuAD* (one-to-one filtered)", {
        "BGE on clean text": (0.0, (67.12, 85.20, 89.44), (65.63, 84.14, 89.06), "Table 2"),
        "CLAP": (None, (2.93, 9.92, 14.84), (3.20, 10.15, 15.23), "Table 2"),
        "Whisper+BGE": (19.39, (69.93, 86.61, 90.53), (67.97, 85.76, 89.65), "Table 2"),
        "CLSR": (15.14, (70.03, 86.90, 90.68), (67.84, 85.69, 90.17), "Table 2"),
        "ParaBGE (unfiltered Spoken-SQuAD)": (None, (17.79, 38.68, 48.35), (17.03, 38.31, 48.91), "Table 4"),
        "CLSR (unfiltered Spoken-SQuAD)": (15.01, (49.82, 79.63, 85.83), (50.63, 77.69, 84.56), "Table 4"),
    }),
    "librisqa": ("LibriSQA part I", {
        "BGE on clean text": (0.0, (86.91, 94.31, 95.92), (86.87, 94.73, 96.60), "Table 2"),
        "CLAP": (None, (0.04, 0.19, 0.38), (0.08, 0.19, 0.50), "Table 2"),
        "Whisper+BGE": (4.32, (83.70, 93.28, 94.92), (85.15, 93.40, 95.27), "Table 2"),
        "CLSR": (4.09, (85.04, 93.36, 95.04), (85.53, 94.01, 95.57), "Table 2"),
        "ParaBGE": (None, (29.31, 50.27, 59.70), (20.57, 39.28, 49.28), "Table 4"),
    }),
    "slue_sqa5": ("SLUE-SQA-5", {
        "BGE on clean text": (0.0, (38.71, 72.26, 84.34), (35.68, 70.11, 82.28), "Table 2"),
        "CLAP": (None, (11.17, 28.67, 38.16), (11.21, 28.59, 38.12), "Table 2"),
        "Whisper+BGE": (36.41, (29.98, 60.41, 72.71), (29.85, 60.75, 73.47), "Table 2"),
        "CLSR": (16.69, (30.65, 62.19, 74.43), (29.89, 62.18, 73.05), "Table 2"),
        "ParaBGE": (None, (7.31, 21.83, 32.75), (7.52, 21.96, 33.12), "Table 4"),
    }),
    "drcd": ("DRCD* (WER column is CER)", {
        "BGE on clean text": (0.0, (90.67, 97.12, 98.74), (89.26, 97.75, 98.39), "Table 2"),
        "CLAP": (None, (0.35, 1.33, 2.95), (0.35, 1.12, 1.61), "Table 2"),
        "CLSR": (5.56, (76.21, 87.79, 90.03), (75.23, 88.21, 91.51), "Table 2"),
    }),
}


def paper_anchors(dataset: str) -> dict:
    """Anchors quoted from the CLSR paper for ``dataset`` (spoken_squad, librisqa, slue_sqa5, drcd)."""
    if dataset not in _PAPER:
        raise ValueError(f"no paper anchors for {dataset!r}; known: {sorted(_PAPER)}")
    title, rows = _PAPER[dataset]
    out_rows = {}
    for label, (wer, q, c, table) in rows.items():
        out_rows[f"{label} (paper)"] = {
            "wer": wer,
            "q2c": dict(zip(("r1", "r5", "r10"), q)),
            "c2q": dict(zip(("r1", "r5", "r10"), c)),
            "source": table,
        }
    return validate_anchors({
        "source": f"CLSR paper (arXiv 2511.09282), {title}, Paraformer-large 220M + BGE-base, full training data",
        "rows": out_rows,
    })


# --------------------------------------------------------------------------- plots + CLI


def make_plots(obj: Mapping, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write the figures the results support; return ``{caption: path}``.

    WER vs R@1 needs at least one system with a WER; recall curves need ``q2c_curve`` rows.
    """
    from . import plots

    validate_results(obj)
    out_dir = Path(out_dir)
    systems = obj["systems"]
    written: dict[str, str] = {}
    points = {n: (s.get("wer"), s["q2c"]["r1"]) for n, s in systems.items() if s.get("wer") is not None}
    if points:
        written["WER vs Q->C R@1"] = plots.plot_wer_vs_recall(points, out_dir / "wer_vs_r1.png")
    curves = {n: s["q2c_curve"] for n, s in sorted(systems.items(), key=lambda kv: _order_key(kv[0]))
              if s.get("q2c_curve")}
    if curves:
        written["Q->C recall@k"] = plots.plot_recall_curves(curves, out_dir / "recall_at_k.png",
                                                            title="Q->C recall@k")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m funasr_clsr.evaluation.report",
                                 description="Render results.json as RESULTS.md.")
    ap.add_argument("results", help="results.json written by the recipe stages")
    ap.add_argument("--out", help="markdown file to write (default: print to stdout)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--anchors", help="anchors.json with quoted reference numbers")
    g.add_argument("--paper-anchors", choices=sorted(_PAPER), help="quote the CLSR paper's numbers for this dataset")
    ap.add_argument("--plots", help="directory for PNG figures (embedded when --out is given)")
    ap.add_argument("--notes", help="free text appended under 'Notes'")
    args = ap.parse_args(argv)
    try:
        obj = load_results(args.results)
        anchors = None
        if args.anchors:
            anchors = _load_anchors(args.anchors)
        elif args.paper_anchors:
            anchors = paper_anchors(args.paper_anchors)
        images = None
        if args.plots:
            written = make_plots(obj, args.plots)
            for p in written.values():
                print(f"wrote {p}", file=sys.stderr)
            if args.out and written:
                base = Path(args.out).resolve().parent
                images = {cap: Path(os.path.relpath(Path(p).resolve(), base)).as_posix()
                          for cap, p in written.items()}
        text = render_markdown(obj, anchors=anchors, notes=args.notes, images=images)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

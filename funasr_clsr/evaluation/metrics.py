"""Retrieval and ASR metrics for CLSR evaluation (numpy only; torch tensors are accepted).

Conventions (shared by every recipe and by ``report.py``):

* Recall@k and MRR are returned as **percentages** (0-100), like the paper's tables.
  MRR is the mean reciprocal rank of the first correct item, times 100.
* Ranks are 1-based and ties are broken **pessimistically**: a correct item's rank is
  ``1 + (number of wrong items whose score is >= the correct item's score)``.  So a model
  that gives every item the same score (e.g. collapsed or all-zero embeddings) gets the
  worst rank, never a free R@1 of 100%.  ``ties="optimistic"`` (only strictly greater
  scores count) is available for comparison with tools that break ties that way.
* WER is a percentage over the whole corpus (sum of edits / sum of reference words).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "normalize_text",
    "to_numpy",
    "ranks_from_similarity",
    "retrieval_metrics",
    "retrieval_metrics_from_labels",
    "bidirectional_metrics",
    "recall_at_k_curve",
    "word_error_rate",
]

# Rows per chunk when ranking, so an (N, N) boolean temporary is never built for large N.
_CHUNK_ROWS = 1024


# --------------------------------------------------------------------------- text


_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`]")
_SPACES = re.compile(r"\s+")


def normalize_text(s: str) -> str:
    """Normalise text for WER and BM25: lowercase, strip accents, drop punctuation.

    Mirrors what an uncased WordPiece vocabulary can express, so ASR output (decoded
    from such a vocabulary, WordPiece ``##`` joins already done upstream) and SQuAD-style
    reference text compare fairly:

    * Unicode NFKD, accents removed (``Beyoncé`` -> ``beyonce``), lowercase;
    * apostrophes are deleted so contractions stay one word (``don't`` -> ``dont``);
    * every other punctuation or symbol character becomes a space
      (``U.S.-based`` -> ``u s based``, ``$5`` -> ``5``);
    * runs of whitespace collapse to one space, ends are stripped.
    """
    if s is None:
        return ""
    if not isinstance(s, str):
        raise TypeError(f"normalize_text expects str, got {type(s).__name__}")
    s = unicodedata.normalize("NFKD", s)
    s = _APOSTROPHES.sub("", s)
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        if cat == "Mn":  # combining accent left by NFKD
            continue
        if cat[0] in "PS" or cat[0] == "C" and not ch.isspace():
            out.append(" ")
        else:
            out.append(ch)
    s = "".join(out).lower()
    return _SPACES.sub(" ", s).strip()


# --------------------------------------------------------------------------- retrieval


def to_numpy(x: Any, name: str = "array") -> np.ndarray:
    """Return ``x`` as a float64 numpy array; accepts numpy, lists and torch tensors."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().float().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric (a numpy array, list or tensor): {e}") from None


def _check_similarity(similarity: Any) -> np.ndarray:
    sim = to_numpy(similarity, "similarity")
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a 2-d (queries, candidates) matrix, got shape {sim.shape}")
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"similarity is empty (shape {sim.shape}); nothing to evaluate")
    if not np.all(np.isfinite(sim)):
        bad = int(np.size(sim) - np.count_nonzero(np.isfinite(sim)))
        raise ValueError(f"similarity has {bad} non-finite entries (NaN/inf); check the embeddings")
    return sim


def _normalise_positives(positives: Any, n_queries: int, n_cands: int) -> list[np.ndarray]:
    """Turn a 1-d int array or a list of int sets into one index array per query."""
    if isinstance(positives, np.ndarray) or (
        hasattr(positives, "detach") and hasattr(positives, "cpu")
    ):
        arr = to_numpy(positives, "positives") if not isinstance(positives, np.ndarray) else positives
        if arr.ndim != 1:
            raise ValueError(f"positives array must be 1-d (one index per query), got shape {arr.shape}")
        if arr.size and not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError("positives array must hold integer candidate indices")
        groups = [np.array([int(v)], dtype=np.int64) for v in arr]
    else:
        groups = []
        for i, p in enumerate(positives):
            if isinstance(p, (int, np.integer)):
                idx = [int(p)]
            elif isinstance(p, Iterable) and not isinstance(p, (str, bytes)):
                idx = sorted({int(v) for v in p})
            else:
                raise ValueError(f"positives[{i}] must be an int or a set of ints, got {type(p).__name__}")
            if not idx:
                raise ValueError(f"query {i} has no positive candidate; every query needs at least one")
            groups.append(np.array(idx, dtype=np.int64))
    if len(groups) != n_queries:
        raise ValueError(f"got positives for {len(groups)} queries but similarity has {n_queries} rows")
    for i, g in enumerate(groups):
        if g.min() < 0 or g.max() >= n_cands:
            raise ValueError(
                f"query {i} has positive index {int(g.min() if g.min() < 0 else g.max())} "
                f"outside [0, {n_cands - 1}]"
            )
    return groups


def ranks_from_similarity(
    similarity: Any, positives: Any | None = None, ties: str = "pessimistic"
) -> np.ndarray:
    """1-based rank of the best-ranked correct candidate for each query.

    ``positives`` defaults to the diagonal (query i's answer is candidate i).  With several
    positives the rank is that of the first correct hit: other positives never push it
    down.  See the module docstring for the tie rule.
    """
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    sim = _check_similarity(similarity)
    n_q, n_c = sim.shape
    if positives is None:
        if n_q != n_c:
            raise ValueError(
                f"similarity is {n_q}x{n_c}; the diagonal (one-to-one) form needs a square matrix, "
                "pass positives= for many-to-one data"
            )
        ranks = np.empty(n_q, dtype=np.int64)
        for start in range(0, n_q, _CHUNK_ROWS):
            block = sim[start : start + _CHUNK_ROWS]
            rows = np.arange(block.shape[0])
            pos = block[rows, rows + start][:, None]
            beat = block >= pos if ties == "pessimistic" else block > pos
            n_beat = beat.sum(axis=1)
            if ties == "pessimistic":
                n_beat -= 1  # the positive itself is >= itself
            ranks[start : start + block.shape[0]] = 1 + n_beat
        return ranks

    groups = _normalise_positives(positives, n_q, n_c)
    ranks = np.empty(n_q, dtype=np.int64)
    for i, g in enumerate(groups):
        row = sim[i]
        best = row[g].max()
        beat = row >= best if ties == "pessimistic" else row > best
        beat[g] = False  # other positives never count against the first hit
        ranks[i] = 1 + int(beat.sum())
    return ranks


def _metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    if not ks:
        raise ValueError("ks must name at least one cut-off")
    out: dict[str, float] = {}
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"recall cut-off k must be a positive integer, got {k!r}")
        out[f"r{int(k)}"] = float(100.0 * np.mean(ranks <= k))
    out["mrr"] = float(100.0 * np.mean(1.0 / ranks))
    return out


def retrieval_metrics(
    similarity: Any, ks: Sequence[int] = (1, 5, 10), ties: str = "pessimistic"
) -> dict[str, float]:
    """Recall@k and MRR (percent) for a square (N, N) similarity; query i's answer is column i.

    Returns ``{"r1", "r5", "r10", "mrr"}`` for the default ``ks``.
    """
    return _metrics_from_ranks(ranks_from_similarity(similarity, None, ties), ks)


def retrieval_metrics_from_labels(
    similarity: Any,
    positives: Any,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
) -> dict[str, float]:
    """Recall@k and MRR (percent) for a (Q, C) similarity with explicit positives.

    ``positives``: a 1-d int array (one correct candidate per query) or a list with one
    int or set of ints per query (many-to-one / several correct candidates).  A query
    counts as a hit at k when any of its positives is in the top k.
    """
    return _metrics_from_ranks(ranks_from_similarity(similarity, positives, ties), ks)


def _unit_rows(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-d (items, dim), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values (NaN/inf)")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    # A zero vector stays zero (scores 0 against everything) instead of becoming NaN.
    return arr / np.maximum(norms, 1e-12)


def bidirectional_metrics(
    q_emb: Any,
    c_emb: Any,
    ks: Sequence[int] = (1, 5, 10),
    normalize: bool = True,
    ties: str = "pessimistic",
) -> dict[str, dict[str, float]]:
    """Question->context and context->question metrics for paired embeddings.

    Row i of ``q_emb`` and row i of ``c_emb`` are a pair.  Scores are inner products of
    L2-normalised vectors (cosine); ``c2q`` ranks questions for each context (the
    transpose of the q2c matrix), which differs from q2c whenever the matrix is not
    symmetric.
    """
    q = _unit_rows(q_emb, "q_emb") if normalize else to_numpy(q_emb, "q_emb")
    c = _unit_rows(c_emb, "c_emb") if normalize else to_numpy(c_emb, "c_emb")
    if q.ndim != 2 or c.ndim != 2:
        raise ValueError(f"embeddings must be 2-d, got {q.shape} and {c.shape}")
    if q.shape[0] != c.shape[0]:
        raise ValueError(f"need paired embeddings: {q.shape[0]} questions vs {c.shape[0]} contexts")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"embedding sizes differ: questions {q.shape[1]}-d, contexts {c.shape[1]}-d")
    sim = q @ c.T
    return {
        "q2c": retrieval_metrics(sim, ks, ties),
        "c2q": retrieval_metrics(sim.T, ks, ties),
    }


def recall_at_k_curve(
    similarity: Any,
    max_k: int = 50,
    positives: Any | None = None,
    ties: str = "pessimistic",
) -> list[float]:
    """Recall@k in percent for k = 1..max_k (index 0 is R@1), for plotting."""
    if int(max_k) != max_k or max_k < 1:
        raise ValueError(f"max_k must be a positive integer, got {max_k!r}")
    ranks = ranks_from_similarity(similarity, positives, ties)
    counts = np.bincount(np.minimum(ranks, max_k + 1), minlength=max_k + 2)[1 : max_k + 1]
    return [float(v) for v in 100.0 * np.cumsum(counts) / ranks.size]


# --------------------------------------------------------------------------- WER


def word_error_rate(refs: Sequence[str], hyps: Sequence[str | None]) -> dict[str, float | int]:
    """Corpus WER (percent) after :func:`normalize_text` on both sides.

    Returns ``{"wer", "substitutions", "deletions", "insertions", "hits", "ref_words",
    "utterances"}``.  An empty hypothesis (or ``None``) counts as all deletions; an empty
    reference (also one that is empty after normalisation) is an error, since WER is
    undefined for it.
    """
    import jiwer  # lazy: only WER needs it

    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError("refs and hyps must be lists of strings, not a single string")
    refs = list(refs)
    hyps = list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no references given; WER needs at least one utterance")
    norm_refs, norm_hyps = [], []
    for i, (r, h) in enumerate(zip(refs, hyps)):
        nr = normalize_text(r if r is not None else "")
        if not nr:
            raise ValueError(f"reference {i} is empty after normalisation ({r!r}); WER is undefined for it")
        norm_refs.append(nr)
        norm_hyps.append(normalize_text(h) if h is not None else "")
    out = jiwer.process_words(norm_refs, norm_hyps)
    s, d, ins, hits = int(out.substitutions), int(out.deletions), int(out.insertions), int(out.hits)
    n_ref = s + d + hits
    return {
        "wer": 100.0 * (s + d + ins) / n_ref,
        "substitutions": s,
        "deletions": d,
        "insertions": ins,
        "hits": hits,
        "ref_words": n_ref,
        "utterances": len(refs),
    }

"""BM25 baseline: lexical retrieval over ASR transcripts (the ``bm25`` row of the results).

Thin wrapper around ``rank_bm25.BM25Okapi`` (k1=1.5, b=0.75, its epsilon idf floor) with
the same text normalisation as WER (:func:`metrics.normalize_text`), so "bm25" rows are
comparable across recipes.  Note rank_bm25's idf is ``log((N - n + 0.5) / (n + 0.5))``:
on a corpus of one or two documents most terms get idf <= 0, so use it on real corpora.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import normalize_text

__all__ = ["BM25Retriever", "tokenize"]


def tokenize(text: str) -> list[str]:
    """Tokens BM25 sees: whitespace split of the normalised text."""
    return normalize_text(text).split()


class BM25Retriever:
    """Score queries against a fixed corpus of documents (e.g. context transcripts)."""

    # Per-term score vectors are cached (a query's score is the sum over its tokens), so
    # scoring many queries costs one pass over the corpus per distinct term, not per token.
    _CACHE_MAX_FLOATS = 50_000_000  # ~400 MB of float64 at most

    def __init__(self, corpus: Sequence[str], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        from rank_bm25 import BM25Okapi  # lazy: keep package import cheap

        if isinstance(corpus, str):
            raise TypeError("corpus must be a list of documents, not a single string")
        corpus = list(corpus)
        if not corpus:
            raise ValueError("BM25 corpus is empty; need at least one document")
        for i, doc in enumerate(corpus):
            if not isinstance(doc, str):
                raise TypeError(f"corpus[{i}] must be str, got {type(doc).__name__}")
        self.tokens = [tokenize(d) for d in corpus]
        if not any(self.tokens):
            raise ValueError(
                f"all {len(corpus)} BM25 documents are empty after normalisation (empty transcripts?)"
            )
        self.bm25 = BM25Okapi(self.tokens, k1=k1, b=b, epsilon=epsilon)
        self._term_cache: dict[str, np.ndarray] = {}
        self._cache_limit = max(1, self._CACHE_MAX_FLOATS // len(corpus))

    def __len__(self) -> int:
        return len(self.tokens)

    def _term_scores(self, term: str) -> np.ndarray:
        vec = self._term_cache.get(term)
        if vec is None:
            vec = np.asarray(self.bm25.get_scores([term]), dtype=np.float64)
            if len(self._term_cache) >= self._cache_limit:
                self._term_cache.clear()
            self._term_cache[term] = vec
        return vec

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` against every document, shape (C,)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be str, got {type(query).__name__}")
        out = np.zeros(len(self.tokens), dtype=np.float64)
        for term in tokenize(query):  # repeated query terms count again, as in rank_bm25
            out += self._term_scores(term)
        return out

    def similarity(self, queries: Sequence[str], progress: bool = False) -> np.ndarray:
        """(Q, C) score matrix; row q ranks the corpus for ``queries[q]``."""
        if isinstance(queries, str):
            raise TypeError("queries must be a list of strings, not a single string")
        queries = list(queries)
        out = np.zeros((len(queries), len(self.tokens)), dtype=np.float64)
        it = queries
        if progress:
            from tqdm import tqdm

            it = tqdm(queries, desc="bm25", unit="query")
        for i, q in enumerate(it):
            out[i] = self.scores(q)
        return out

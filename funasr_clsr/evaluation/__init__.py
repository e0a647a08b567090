"""Evaluation: retrieval/WER metrics, BM25 baseline, results.json schema, RESULTS.md, plots.

Importing this package needs numpy only: jiwer, rank_bm25 and matplotlib are imported
when first used, and nothing here imports torch or funasr.
"""

from .bm25 import BM25Retriever
from .metrics import (
    bidirectional_metrics,
    normalize_text,
    ranks_from_similarity,
    recall_at_k_curve,
    retrieval_metrics,
    retrieval_metrics_from_labels,
    word_error_rate,
)
from .report import ResultsError, merge_system, render_markdown, validate_results

__all__ = [
    "BM25Retriever",
    "ResultsError",
    "bidirectional_metrics",
    "merge_system",
    "normalize_text",
    "ranks_from_similarity",
    "recall_at_k_curve",
    "render_markdown",
    "retrieval_metrics",
    "retrieval_metrics_from_labels",
    "validate_results",
    "word_error_rate",
]

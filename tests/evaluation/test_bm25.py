"""BM25 baseline over toy transcripts."""

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from funasr_clsr.evaluation.bm25 import BM25Retriever, tokenize
from funasr_clsr.evaluation.metrics import retrieval_metrics

CORPUS = [
    "The Normans were a people who gave their name to Normandy, a region in France.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The Amazon river flows through Brazil and carries more water than any other river.",
    "Beyoncé released her first solo album in 2003 after Destiny's Child.",
    "The university library opens at nine and closes at midnight.",
]
QUERIES = [
    "what region in france is named after the normans",
    "how do plants turn light into chemical energy",
    "which river carries the most water",
    "when did beyonce release her first solo album",
    "what time does the library close",
]


def test_ranks_right_document_first():
    bm = BM25Retriever(CORPUS)
    sim = bm.similarity(QUERIES)
    assert sim.shape == (5, 5)
    assert list(sim.argmax(axis=1)) == [0, 1, 2, 3, 4]
    assert retrieval_metrics(sim)["r1"] == 100.0


def test_scores_match_rank_bm25_directly():
    bm = BM25Retriever(CORPUS)
    ref = BM25Okapi([tokenize(d) for d in CORPUS])
    for q in QUERIES + ["river river water", "nothing matches zzz"]:
        assert np.allclose(bm.scores(q), ref.get_scores(tokenize(q)))
    # The per-term cache must not change a second pass.
    assert np.allclose(bm.similarity(QUERIES), bm.similarity(QUERIES, progress=True))


def test_normalisation_makes_case_and_accents_irrelevant():
    bm = BM25Retriever(CORPUS)
    assert np.allclose(bm.scores("BEYONCÉ, Solo-Album?"), bm.scores("beyonce solo album"))
    assert bm.scores("beyonce")[3] > 0


def test_unknown_words_score_zero():
    bm = BM25Retriever(CORPUS)
    assert np.all(bm.scores("qwertyuiop") == 0) and np.all(bm.scores("") == 0)


def test_bad_corpus():
    with pytest.raises(ValueError, match="empty"):
        BM25Retriever([])
    with pytest.raises(ValueError, match="empty after normalisation"):
        BM25Retriever(["", " ?! "])
    with pytest.raises(TypeError):
        BM25Retriever("one string")
    with pytest.raises(TypeError, match=r"corpus\[1\]"):
        BM25Retriever(["ok", None])

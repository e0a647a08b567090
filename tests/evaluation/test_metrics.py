"""Hand-computed checks for funasr_clsr.evaluation.metrics."""

import numpy as np
import pytest

from funasr_clsr.evaluation import metrics as M

# Correct item is the diagonal. Ranks: q0 -> 1, q1 -> 2 (0.8 beats 0.3), q2 -> 3.
S3 = np.array([[0.9, 0.1, 0.5],
               [0.8, 0.3, 0.2],
               [0.7, 0.6, 0.1]])


def test_recall_and_mrr_hand_computed():
    out = M.retrieval_metrics(S3, ks=(1, 2, 3))
    assert out["r1"] == pytest.approx(100 / 3)
    assert out["r2"] == pytest.approx(200 / 3)
    assert out["r3"] == pytest.approx(100.0)
    assert out["mrr"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 3) / 3)
    assert list(M.ranks_from_similarity(S3)) == [1, 2, 3]


def test_default_keys_are_r1_r5_r10_mrr():
    out = M.retrieval_metrics(S3)
    assert set(out) == {"r1", "r5", "r10", "mrr"}
    assert out["r5"] == out["r10"] == 100.0  # k beyond the candidate count


def test_ties_are_pessimistic_by_default():
    s = np.array([[0.5, 0.5, 0.1],   # tie with one other -> rank 2
                  [0.2, 0.4, 0.4],   # tie with one other -> rank 2
                  [0.3, 0.3, 0.3]])  # all tied -> rank 3
    assert list(M.ranks_from_similarity(s)) == [2, 2, 3]
    assert list(M.ranks_from_similarity(s, ties="optimistic")) == [1, 1, 1]
    out = M.retrieval_metrics(s, ks=(1, 2))
    assert out["r1"] == 0.0
    assert out["r2"] == pytest.approx(200 / 3)
    assert out["mrr"] == pytest.approx(100 * (1 / 2 + 1 / 2 + 1 / 3) / 3)


def test_collapsed_model_gets_no_free_recall():
    out = M.retrieval_metrics(np.zeros((10, 10)))
    assert out["r1"] == 0.0 and out["r5"] == 0.0 and out["r10"] == 100.0
    assert out["mrr"] == pytest.approx(10.0)


def test_chunked_ranks_match_brute_force():
    rng = np.random.default_rng(0)
    n = 1100  # more than one chunk of rows
    s = np.round(rng.normal(size=(n, n)), 1)  # rounding makes many ties
    brute = np.array([np.sum(s[i] >= s[i, i]) for i in range(n)])  # includes itself -> already 1-based
    assert np.array_equal(M.ranks_from_similarity(s), brute)
    assert np.array_equal(M.ranks_from_similarity(s, positives=np.arange(n)), brute)
    brute_opt = np.array([1 + np.sum(s[i] > s[i, i]) for i in range(n)])
    assert np.array_equal(M.ranks_from_similarity(s, ties="optimistic"), brute_opt)


def test_many_to_one_labels():
    s = np.array([[0.1, 0.9, 0.8, 0.85],   # positives {1, 2}: best is 0.9 -> rank 1
                  [0.5, 0.9, 0.7, 0.6],    # positive {3} (0.6): 0.9 and 0.7 beat it -> rank 3
                  [0.2, 0.9, 0.9, 0.1]])   # positives {1, 2} tied with each other -> rank 1
    ranks = M.ranks_from_similarity(s, [{1, 2}, {3}, [1, 2]])
    assert list(ranks) == [1, 3, 1]
    out = M.retrieval_metrics_from_labels(s, [{1, 2}, 3, {1, 2}], ks=(1, 3))
    assert out["r1"] == pytest.approx(200 / 3)
    assert out["r3"] == 100.0
    assert out["mrr"] == pytest.approx(100 * (1 + 1 / 3 + 1) / 3)
    # A positive that ranks below a negative does not help: query 0 with only {2}.
    assert M.ranks_from_similarity(s[:1], [{2}])[0] == 3


def test_labels_array_form_equals_diagonal():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(7, 7))
    assert M.retrieval_metrics(s) == M.retrieval_metrics_from_labels(s, np.arange(7))


def _asym_embeddings():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    c = np.array([[0.9, 0.1], [0.8, 0.2]])
    return q, c


def test_c2q_differs_from_q2c_on_asymmetric_case():
    q, c = _asym_embeddings()
    out = M.bidirectional_metrics(q, c, ks=(1, 2))
    # q2c: each question's own context wins; c2q: context 1 prefers question 0.
    assert out["q2c"] == {"r1": 100.0, "r2": 100.0, "mrr": 100.0}
    assert out["c2q"]["r1"] == 50.0
    assert out["c2q"]["mrr"] == pytest.approx(75.0)


def test_bidirectional_normalises_vectors():
    q, c = _asym_embeddings()
    scaled = c * np.array([[10.0], [0.1]])  # scaling must not change cosine ranking
    assert M.bidirectional_metrics(q, scaled) == M.bidirectional_metrics(q, c)
    # Without normalisation the long context 0 would win for every question.
    raw = M.bidirectional_metrics(q, scaled, normalize=False, ks=(1,))
    assert raw["q2c"]["r1"] == 50.0


def test_bidirectional_checks_shapes():
    with pytest.raises(ValueError, match="paired"):
        M.bidirectional_metrics(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="sizes differ"):
        M.bidirectional_metrics(np.ones((3, 4)), np.ones((3, 5)))


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    t = torch.tensor(S3, dtype=torch.float32, requires_grad=True)
    assert M.retrieval_metrics(t, ks=(1, 2, 3)) == pytest.approx(M.retrieval_metrics(S3, ks=(1, 2, 3)))


def test_bad_similarity_inputs():
    with pytest.raises(ValueError, match="square"):
        M.retrieval_metrics(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        M.retrieval_metrics(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="2-d"):
        M.retrieval_metrics(np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        M.retrieval_metrics(np.ones((0, 0)))
    with pytest.raises(ValueError, match="no positive"):
        M.retrieval_metrics_from_labels(np.ones((2, 3)), [{0}, set()])
    with pytest.raises(ValueError, match="outside"):
        M.retrieval_metrics_from_labels(np.ones((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="2 rows"):
        M.retrieval_metrics_from_labels(np.ones((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="ties"):
        M.retrieval_metrics(S3, ties="random")
    with pytest.raises(ValueError, match="positive integer"):
        M.retrieval_metrics(S3, ks=(0,))


def test_recall_curve():
    curve = M.recall_at_k_curve(S3, max_k=4)
    assert curve == pytest.approx([100 / 3, 200 / 3, 100.0, 100.0])
    rng = np.random.default_rng(2)
    s = rng.normal(size=(50, 50))
    curve = M.recall_at_k_curve(s, max_k=20)
    assert len(curve) == 20
    assert all(a <= b for a, b in zip(curve, curve[1:]))
    m = M.retrieval_metrics(s)
    assert curve[0] == pytest.approx(m["r1"]) and curve[4] == pytest.approx(m["r5"])
    assert curve[9] == pytest.approx(m["r10"])


@pytest.mark.parametrize("raw, norm", [
    ("Hello, World!", "hello world"),
    ("  The   U.S.-based  band\tplayed ", "the u s based band played"),
    ("Beyoncé's tour didn\u2019t stop", "beyonces tour didnt stop"),
    ("It cost $5 (50%)", "it cost 5 50"),
    ("", ""),
])
def test_normalize_text(raw, norm):
    assert M.normalize_text(raw) == norm


def test_wer_known_pair():
    out = M.word_error_rate(["the cat sat on the mat", "a b"], ["the bat sat on mat", "a b c"])
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 1, 1)
    assert out["ref_words"] == 8 and out["hits"] == 6
    # Corpus WER pools the edits: 3 / 8, not the mean of per-utterance WERs (2/6 and 1/2).
    assert out["wer"] == pytest.approx(100 * 3 / 8)


def test_wer_normalises_case_and_punctuation():
    assert M.word_error_rate(["Hello, World!"], ["hello world"])["wer"] == 0.0


def test_wer_empty_hyp_counts_as_deletions():
    out = M.word_error_rate(["one two three"], [""])
    assert out["deletions"] == 3 and out["wer"] == 100.0
    assert M.word_error_rate(["one two three"], [None])["deletions"] == 3


def test_wer_errors():
    with pytest.raises(ValueError, match="reference 1 is empty"):
        M.word_error_rate(["fine", " ?! "], ["fine", "x"])
    with pytest.raises(ValueError, match="2 references but 1"):
        M.word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no references"):
        M.word_error_rate([], [])
    with pytest.raises(TypeError):
        M.word_error_rate("a b", "a b")

"""QueryBatcher: concurrent searches share one encode and one store query, each gets its own answer."""
import threading
import time

import numpy as np
import pytest

from funasr_clsr.serve.batching import QueryBatcher


def _fake(calls, slow_s=0.02):
    def encode(questions):
        calls.append(len(questions))
        time.sleep(slow_s)  # a text encoder pass: others queue up meanwhile
        if "bad" in questions:
            raise ValueError("bad question")
        return np.array([[float(len(q)), 1.0] for q in questions], np.float32)

    def search(vectors, k):
        return [[f"hit{int(v[0])}-{r}" for r in range(5)] for v in vectors]

    return encode, search


def test_concurrent_searches_are_batched_and_each_gets_its_own_answer():
    calls = []
    batcher = QueryBatcher(*_fake(calls), workers=1)
    results = {}

    def ask(i):
        results[i] = batcher("q" * (i + 1), top_k=1 + i % 3)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    batcher.close()
    for i, (vec, hits, timing) in results.items():
        assert vec.shape == (1, 2) and vec[0, 0] == i + 1  # its own question's vector
        assert hits == [f"hit{i + 1}-{r}" for r in range(1 + i % 3)]  # its own hits, its own top_k
        assert timing["batch"] >= 1 and timing["encode"] >= 20
    assert sum(calls) == 12 and max(calls) > 1 and len(calls) < 12  # fewer passes than questions


def test_a_failing_question_fails_alone():
    calls = []
    batcher = QueryBatcher(*_fake(calls), workers=1)
    out, errors = {}, {}

    def ask(q):
        try:
            out[q] = batcher(q, 2)
        except ValueError as exc:
            errors[q] = str(exc)

    threads = [threading.Thread(target=ask, args=(q,)) for q in ("first", "bad", "fine", "also fine")]
    for t in threads:
        t.start()
        time.sleep(0.002)
    for t in threads:
        t.join(10)
    batcher.close()
    assert errors == {"bad": "bad question"}
    assert set(out) == {"first", "fine", "also fine"} and out["fine"][1] == ["hit4-0", "hit4-1"]
    with pytest.raises(ValueError):
        QueryBatcher(*_fake([]), workers=0)

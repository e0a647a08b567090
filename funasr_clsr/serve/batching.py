"""Text searches that arrive together are encoded and searched together.

One search alone costs the question's pass through the text encoder plus one store query (about
14 + 7 ms for MiniLM and a LanceDB table on one core, benchmarks/serve.py); eight clients at once
each waited for all the others' passes, so latency grew with the queue. Here worker threads take
every question waiting at that moment (none are held back to fill a batch: a lone search costs
what it did), encode them in one batch and look them all up in one store query. A batch that
fails is retried one question at a time, so each request gets its own answer or its own error.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

__all__ = ["QueryBatcher"]


class QueryBatcher:
    """``batcher(question, top_k)`` -> ``(vector (1, D), hits, timing_ms)``, batched with concurrent calls.

    ``encode(questions) -> (N, D) vectors`` and ``search(vectors, top_k) -> hits per row`` do the
    work; ``workers`` threads run batches side by side (torch and LanceDB release the GIL).
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray],
                 search: Callable[[np.ndarray, int], list[list[Any]]], max_batch: int = 32, workers: int = 1):
        if max_batch < 1 or workers < 1:
            raise ValueError(f"max_batch and workers must be >= 1, got {max_batch}, {workers}")
        self._encode, self._search, self.max_batch = encode, search, max_batch
        self._queue: "queue.Queue[tuple[str, int, Future] | None]" = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name=f"clsr-search-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def __call__(self, question: str, top_k: int) -> tuple[np.ndarray, list[Any], dict[str, float]]:
        fut: Future = Future()
        self._queue.put((question, int(top_k), fut))
        return fut.result()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:  # what is waiting now; nothing is held back
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # this worker's stop comes after its batch
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[tuple[str, int, Future]]) -> None:
        try:
            t0 = time.perf_counter()
            vectors = self._encode([q for q, _, _ in batch])
            t1 = time.perf_counter()
            hits = self._search(vectors, max(k for _, k, _ in batch))
            t2 = time.perf_counter()
        except Exception as exc:  # noqa: BLE001  (handed to the caller)
            if len(batch) == 1:
                batch[0][2].set_exception(exc)
            else:
                for item in batch:
                    self._run([item])
            return
        timing = {"encode": round(1000 * (t1 - t0), 2), "search": round(1000 * (t2 - t1), 2), "batch": len(batch)}
        for i, (_, k, fut) in enumerate(batch):
            fut.set_result((vectors[i:i + 1], hits[i][:k], timing))

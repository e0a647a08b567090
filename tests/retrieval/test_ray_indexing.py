"""Ray Data indexing against a real local Ray (ray.init(num_cpus=2)): the same segments, vectors
(cosine >= 0.9999) and transcripts as the single process, with fixed windows and VAD segments; Ray
missing or unreachable -> one line."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf

from clsr_testing import export_tiny_model_dir, window_clip

ray = pytest.importorskip("ray")

SR = 16000
W = 2.0


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_tiny_model_dir(tmp_path_factory.mktemp("ray_model"))


def clip(i: int) -> np.ndarray:
    return window_clip(i, W, SR)


def test_an_unreachable_cluster_is_one_line_within_seconds_and_indexes_nothing(model_dir, tmp_path):
    """ray.init retries an address nothing listens on for minutes; connect() answers at once. Runs
    before the module's local Ray starts (inside ray.init, connect() would use that one)."""
    import socket
    import time

    from funasr_clsr.retrieval import LanceSegmentStore
    from funasr_clsr.retrieval.pipeline import LongFormRetriever
    from funasr_clsr.retrieval.ray_indexing import RayUnavailableError, connect

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        t0 = time.perf_counter()
        with pytest.raises(RayUnavailableError, match=rf"cannot reach the Ray cluster at '{address}' .*refused") as ei:
            connect(address)
        assert time.perf_counter() - t0 < 10 and "\n" not in str(ei.value)
    assert not ray.is_initialized()
    wav = tmp_path / "a.wav"
    sf.write(wav, np.concatenate([clip(0), clip(1)]), SR)
    retriever = LongFormRetriever(str(model_dir), window_s=W, batch_size=2)
    retriever.index_recordings([("a", str(wav), None)], tmp_path / "idx", progress=False)
    with pytest.raises(RayUnavailableError, match="cannot reach"):
        retriever.index_recordings([("b", str(wav), None)], tmp_path / "idx", progress=False,
                                   ray=f"127.0.0.1:{port}")
    assert sorted(LanceSegmentStore.load(tmp_path / "idx").recordings()) == ["a"]  # what was indexed is kept


def test_ray_matches_the_single_process(local_ray, model_dir, tmp_path, monkeypatch):
    from funasr_clsr.retrieval import LanceSegmentStore
    from funasr_clsr.retrieval.pipeline import LongFormRetriever
    from funasr_clsr.retrieval.ray_indexing import RayUnavailableError, connect

    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, np.concatenate([clip(0), np.zeros(int(W * SR), np.float32), clip(1), clip(2)]), SR)  # a silent window
    sf.write(b, np.concatenate([clip(3), clip(4)[:int(0.3 * SR)]]), SR)  # a 0.3 s tail: merged into the window
    items = [("a", str(a), {"speaker": "Ada"}), ("b", str(b), None), ("gone", str(tmp_path / "gone.wav"), None)]
    retriever = LongFormRetriever(str(model_dir), window_s=W, batch_size=2)
    one = retriever.index_recordings(items, tmp_path / "single", progress=False)
    par = retriever.index_recordings(items, tmp_path / "ray", progress=False, ray="local", num_workers=2)
    for rep in (one, par):
        assert [(x["recording_id"], x["segments"]) for x in rep["indexed"]] == [("a", 3), ("b", 1)]
        assert len(rep["failed"]) == 1 and "gone.wav: audio file not found" in rep["failed"][0]["error"]
    assert par["ray"]["num_workers"] == 2
    s1, s2 = LanceSegmentStore.load(tmp_path / "single"), LanceSegmentStore.load(tmp_path / "ray")
    key = lambda s: (s["recording_id"], s["start"])  # noqa: E731  (Ray may finish b before a)
    o1 = sorted(range(len(s1.segments)), key=lambda i: key(s1.segments[i]))
    o2 = sorted(range(len(s2.segments)), key=lambda i: key(s2.segments[i]))
    assert [s1.segments[i] for i in o1] == [s2.segments[i] for i in o2]  # times, samples, transcripts
    assert [(x["recording_id"], x["start"], x["end"]) for x in (s1.segments[i] for i in o1)] == \
        [("a", 0.0, 2.0), ("a", 4.0, 6.0), ("a", 6.0, 8.0), ("b", 0.0, 2.3)]  # the silent window is left out
    cos = (s1.vectors[o1] * s2.vectors[o2]).sum(1)
    assert cos.min() >= 0.9999, cos
    by_id = lambda s: sorted(s.list_recordings(), key=lambda r: r["recording_id"])  # noqa: E731
    assert by_id(s1) == by_id(s2) and by_id(s2)[0]["meta"] == {"speaker": "Ada"}
    again = retriever.index_recordings(items[:2], tmp_path / "ray", progress=False, ray="local")
    assert again["indexed"] == [] and len(again["skipped"]) == 2  # resumable: nothing re-encoded
    # speech-pause segments: the VAD model goes to the cutting actors through the object store (a class
    # defined here is pickled by value: the actors cannot import test modules)
    class RegionVAD:
        """FunASR's offline VAD output ([{"value": [[beg_ms, end_ms], ...]}] per block): one region inside
        each whole 2 s window of the block (a shorter tail has none)."""

        def generate(self, input, **kwargs):
            return [{"value": [[int(i * 2000 + 100), int((i + 1) * 2000 - 100)]
                               for i in range(len(input) // 32000)]}]

    vad = LongFormRetriever(retriever.model, window_s=W, segmenter="vad", vad_model=RegionVAD(),
                            model_id=retriever.model_id, model_version=retriever.model_version, batch_size=2)
    one = vad.index_recordings(items[:2], tmp_path / "vad1", progress=False)
    par = vad.index_recordings(items[:2], tmp_path / "vad2", progress=False, ray="local", num_workers=1)
    assert [(x["recording_id"], x["segments"]) for x in par["indexed"]] == \
        [(x["recording_id"], x["segments"]) for x in one["indexed"]] == [("a", 3), ("b", 1)]
    v1, v2 = LanceSegmentStore.load(tmp_path / "vad1"), LanceSegmentStore.load(tmp_path / "vad2")
    o1 = sorted(range(len(v1.segments)), key=lambda i: key(v1.segments[i]))
    o2 = sorted(range(len(v2.segments)), key=lambda i: key(v2.segments[i]))
    assert [v1.segments[i] for i in o1] == [v2.segments[i] for i in o2]
    assert [(x["recording_id"], x["start"], x["end"]) for x in (v1.segments[i] for i in o1)] == \
        [("a", 0.1, 1.9), ("a", 4.1, 5.9), ("a", 6.1, 7.9), ("b", 0.1, 1.9)]  # the silent region left out
    assert (v1.vectors[o1] * v2.vectors[o2]).sum(1).min() >= 0.9999
    # Ray missing: one line that names the fix
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayUnavailableError, match=r"Ray is not installed.*pip install 'funasr_clsr\[ray\]'") as ei:
        connect("auto")
    assert "\n" not in str(ei.value)

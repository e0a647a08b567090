"""funasr_clsr.retrieval.store: the SegmentStore contract (LanceDB and FAISS), persistence, model
checks, where filters, metadata, the writer lock, killed and failing writers, FAISS migration, ANN."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from funasr_clsr.retrieval.index import SegmentIndex
from funasr_clsr.retrieval.store import (
    FilterError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    LanceSegmentStore,
    RecordingExistsError,
    RecordingNotFoundError,
    SegmentStore,
    check_meta,
    index_format,
    migrate_faiss_index,
)

from clsr_testing import REPO

DIM = 16
METAS = [
    {"title": "Bridges", "date": "2025-11-03", "speaker": "Ada", "tags": ["engineering"]},
    {"title": "Rivers", "date": "2026-01-15", "speaker": "Ada", "tags": ["geography", "water"], "room": 4},
    {"title": "Kings", "date": "2026-02-01T10:00:00", "speaker": "Bob", "tags": []},
]


def unit(rng, n, d=DIM):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def segs(n, step=40.0):
    return [{"start": step * i, "end": step * (i + 1), "start_sample": int(step * i * 16000),
             "end_sample": int(step * (i + 1) * 16000), "transcript": f"segment {i}"} for i in range(n)]


def make(kind, tmp_path, **kw) -> SegmentStore:
    if kind == "lance":
        return LanceSegmentStore.create(tmp_path / "idx", "clsr-test", "1.0", DIM, **kw)
    return SegmentIndex("clsr-test", "1.0", DIM)


def fill(store, per=(5, 4, 6), seed=0):
    rng = np.random.default_rng(seed)
    vecs = {}
    for r, n in enumerate(per):
        vecs[f"rec{r}"] = unit(rng, n)
        assert store.add(f"rec{r}", f"/data/rec{r}.wav", segs(n), vecs[f"rec{r}"], METAS[r]) == n
    return vecs


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and text
    return text


@pytest.fixture
def lance(tmp_path):
    return make("lance", tmp_path)


# --------------------------------------------------------------------------- the contract, both stores


@pytest.mark.parametrize("kind", ["lance", "faiss"])
def test_contract(kind, tmp_path):
    store = make(kind, tmp_path)
    assert isinstance(store, SegmentStore) and len(store) == 0 and store.recordings() == {}
    vecs = fill(store)
    assert len(store) == 15 and "rec1" in store and "nope" not in store
    assert store.recordings() == {f"rec{r}": f"/data/rec{r}.wav" for r in range(3)}
    listed = store.list_recordings()
    assert [(x["recording_id"], x["source"], x["segments"], x["seconds"]) for x in listed] == \
        [("rec0", "/data/rec0.wav", 5, 200.0), ("rec1", "/data/rec1.wav", 4, 160.0), ("rec2", "/data/rec2.wav", 6, 240.0)]
    assert [x["meta"] for x in listed] == METAS
    # exact search: the known nearest neighbour, with its fields, and cosine ranking like brute force
    q = vecs["rec1"][2] + 0.01 * np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    hit = store.search(q, top_k=1)[0][0]
    assert (hit.recording_id, hit.start, hit.end, hit.transcript, hit.rank) == ("rec1", 80.0, 120.0, "segment 2", 1)
    assert hit.start_sample == 80 * 16000 and hit.path == "/data/rec1.wav" and hit.meta == METAS[1]
    assert hit.score > 0.99
    allv = np.concatenate([vecs[f"rec{r}"] for r in range(3)])
    qs = unit(np.random.default_rng(2), 3)
    for qi, hits in enumerate(store.search(qs, top_k=6)):
        expect = np.sort(allv @ qs[qi])[::-1][:6]
        np.testing.assert_allclose([h.score for h in hits], expect, atol=1e-5)
        assert [h.rank for h in hits] == list(range(1, 7))
    json.dumps([h.to_dict() for h in hits])
    # duplicates, replace, remove
    with pytest.raises(RecordingExistsError, match="already in the index"):
        store.add("rec0", "/data/rec0.wav", segs(2), unit(np.random.default_rng(3), 2))
    new = unit(np.random.default_rng(4), 2)
    store.add("rec0", "/data/rec0-v2.wav", segs(2), new, {"title": "Bridges, again"}, replace=True)
    assert len(store) == 12 and list(store.recordings()) == ["rec1", "rec2", "rec0"]
    assert store.recordings()["rec0"] == "/data/rec0-v2.wav"
    top = store.search(new[1], 1)[0][0]
    assert (top.recording_id, top.start, top.meta) == ("rec0", 40.0, {"title": "Bridges, again"})
    assert store.remove("rec1") == 4 and "rec1" not in store and len(store) == 8
    with pytest.raises(RecordingNotFoundError) as ei:
        store.remove("rec1")
    assert isinstance(ei.value, KeyError) and "rec1" in one_line(ei)
    with pytest.raises(RecordingNotFoundError, match="nothing was deleted"):
        store.remove_many(["rec2", "ghost"])
    assert "rec2" in store
    assert store.remove_many(["rec2", "rec0"]) == {"rec2": 6, "rec0": 2} and len(store) == 0


@pytest.mark.parametrize("kind", ["lance", "faiss"])
def test_bad_input_changes_nothing(kind, tmp_path):
    store = make(kind, tmp_path)
    fill(store, per=(3,))
    rng = np.random.default_rng(0)
    before = (len(store), store.recordings())
    cases = [
        (dict(segments=segs(2), vectors=unit(rng, 2, 8)), "dimension 8"),
        (dict(segments=segs(2), vectors=unit(rng, 3)), "2 segments but 3 vectors"),
        (dict(segments=[{"start": 3, "end": 1}], vectors=unit(rng, 1)), "bad times"),
        (dict(segments=segs(1), vectors=np.zeros((1, DIM))), "zero vector"),
        (dict(segments=segs(1), vectors=unit(rng, 1), meta=["a", "list"]), "must be a JSON object"),
        (dict(segments=segs(1), vectors=unit(rng, 1), meta="not json"), "not valid JSON"),
        (dict(segments=segs(1), vectors=unit(rng, 1), meta={"date": "03/01/2026"}), "ISO 8601"),
        (dict(segments=segs(1), vectors=unit(rng, 1), meta={"tags": "physics"}), "list of strings"),
        (dict(segments=segs(1), vectors=unit(rng, 1), meta={"speaker": 7}), "'speaker' must be a string"),
        (dict(segments=[], vectors=np.zeros((0, DIM))), "no segments"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match) as ei:
            store.add("new", "/data/new.wav", **kw)
        one_line(ei)
    assert (len(store), store.recordings()) == before
    with pytest.raises(ValueError, match="top_k"):
        store.search(np.ones(DIM), top_k=0)
    with pytest.raises(ValueError, match="query vectors have dimension 4"):
        store.search(np.ones(4), 1)


def test_check_meta_accepts_json_text_and_keeps_other_keys():
    assert check_meta('{"title": "T", "date": "2026-03-01", "series": {"n": 3}}') == \
        {"title": "T", "date": "2026-03-01", "series": {"n": 3}}
    assert check_meta(None) == {}
    with pytest.raises(ValueError, match="--meta must be a JSON object"):
        check_meta("[1, 2]", "--meta")
    with pytest.raises(ValueError, match="ISO 8601"):
        check_meta({"date": "2026-13-45"})


# --------------------------------------------------------------------------- LanceDB: persistence, model checks


def test_reopen_header_and_refusals(lance, tmp_path):
    fill(lance)
    d = tmp_path / "idx"
    assert sorted(p.name for p in d.iterdir()) == [".writer.lock", "segments.lance"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # created atomically, no leftovers
    back = LanceSegmentStore.load(d, expect_model_id="clsr-test", expect_model_version="1.0", expect_embedding_dim=DIM)
    assert len(back) == 15 and back.header["format"] == "funasr_clsr.lance/1" and back.created
    assert back.segments == lance.segments and back.segments[6]["transcript"] == "segment 1"
    np.testing.assert_array_equal(back.vectors, lance.vectors)
    version = back.version
    for kw, match in [({"expect_model_id": "other"}, "model 'clsr-test', expected 'other'"),
                      ({"expect_model_version": "2.0"}, "model version '1.0', expected '2.0'"),
                      ({"expect_embedding_dim": 384}, "16-d vectors, expected 384-d")]:
        with pytest.raises(IndexMismatchError, match=match) as ei:
            LanceSegmentStore.load(d, **kw)
        assert str(d) in one_line(ei)
    with pytest.raises(IndexMismatchError, match="rebuild it with this model"):
        LanceSegmentStore.open_or_create(d, "other", "1.0", DIM)
    with pytest.raises(IndexMismatchError, match="rebuild the index with this model"):
        back.check_model("other", "1.0", DIM)
    assert LanceSegmentStore.load(d).version == version  # nothing changed
    with pytest.raises(IndexNotFoundError, match="no segment index here") as ei:
        LanceSegmentStore.load(tmp_path / "nothing")
    one_line(ei)


def test_create_refuses_foreign_directories(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(ValueError, match="not empty"):
        LanceSegmentStore.create(photos, "m", "v", DIM)
    assert sorted(os.listdir(photos)) == ["cat.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        LanceSegmentStore.create(tmp_path / "file", "m", "v", DIM)
    (tmp_path / "empty").mkdir()
    store = LanceSegmentStore.open_or_create(tmp_path / "empty", "m", "v", DIM)
    assert len(store) == 0 and index_format(tmp_path / "empty") == "lance"
    assert len(LanceSegmentStore.open_or_create(tmp_path / "empty", "m", "v", DIM)) == 0  # opens it


# --------------------------------------------------------------------------- where filters


def test_where_filters(lance):
    vecs = fill(lance)
    allv = np.concatenate([vecs[f"rec{r}"] for r in range(3)])
    rec_of = [f"rec{r}" for r, n in enumerate((5, 4, 6)) for _ in range(n)]
    start_of = [40.0 * i for n in (5, 4, 6) for i in range(n)]
    q = unit(np.random.default_rng(7), 1)[0]
    cases = {
        "date >= '2026-01-01' AND speaker = 'Ada'": lambda i: rec_of[i] == "rec1",
        "recording_id IN ('rec0', 'rec2')": lambda i: rec_of[i] in ("rec0", "rec2"),
        "start >= 40 AND end <= 160": lambda i: 40 <= start_of[i] and start_of[i] + 40 <= 160,
        "array_has(tags, 'water') OR title = 'Kings'": lambda i: rec_of[i] in ("rec1", "rec2"),
        "date < '2026'": lambda i: rec_of[i] == "rec0",
    }
    for where, keep in cases.items():
        rows = [i for i in range(len(rec_of)) if keep(i)]
        hits = lance.search(q, top_k=20, where=where)[0]
        assert sorted((h.recording_id, h.start) for h in hits) == sorted((rec_of[i], start_of[i]) for i in rows), where
        np.testing.assert_allclose([h.score for h in hits], np.sort(allv[rows] @ q)[::-1], atol=1e-5)
    assert lance.search(q, 3, where="speaker = 'Nobody'") == [[]]


def test_bad_where_is_one_line(lance, tmp_path):
    fill(lance, per=(2,))
    q = np.ones(DIM)
    for where, match in [("date >>= '2026'", "does not parse"), ("room = 4", "no column 'room'"),
                         ("speaker = Ada", "no column 'Ada'"), ("", "non-empty")]:
        with pytest.raises(FilterError, match=match) as ei:
            lance.search(q, 2, where=where)
        one_line(ei)
    faiss = make("faiss", tmp_path)
    fill(faiss, per=(2,))
    with pytest.raises(FilterError, match="need the LanceDB store"):
        faiss.search(q, 2, where="speaker = 'Ada'")


# --------------------------------------------------------------------------- writers


def test_second_writer_waits_for_the_lock_or_is_refused(lance, tmp_path, caplog):
    fill(lance, per=(2,))
    other = LanceSegmentStore.load(tmp_path / "idx", lock_timeout=0)
    rng = np.random.default_rng(5)
    holding, release = threading.Event(), threading.Event()

    def hold():
        with lance.writing():
            holding.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(30)
    with pytest.raises(IndexLockedError, match=f"another writer \\(pid {os.getpid()} on") as ei:
        other.add("late", "/data/late.wav", segs(2), unit(rng, 2))
    one_line(ei)
    # a patient writer waits, then commits once the lock is free
    waiting = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record):
            if "waiting for another writer" in record.getMessage():
                waiting.set()

    spy = Spy()
    logging.getLogger("funasr_clsr.retrieval.store").addHandler(spy)
    patient = LanceSegmentStore.load(tmp_path / "idx", lock_timeout=60)
    errors = []
    w = threading.Thread(target=lambda: _catch(errors, patient.add, "late", "/data/late.wav", segs(2), unit(rng, 2)))
    try:
        w.start()
        assert waiting.wait(30)
        assert "late" not in lance
        release.set()
        w.join(60)
    finally:
        release.set()
        t.join(30)
        logging.getLogger("funasr_clsr.retrieval.store").removeHandler(spy)
    assert errors == [] and lance.recordings() == {"rec0": "/data/rec0.wav", "late": "/data/late.wav"}


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        errors.append(exc)


CHILD = r"""
import sys, numpy as np
from funasr_clsr.retrieval.store import LanceSegmentStore
store = LanceSegmentStore.load(sys.argv[1])
rng = np.random.default_rng(0)
i = 0
while True:
    v = rng.standard_normal((50, 16)).astype(np.float32)
    store.add(f"child{i}", "/c.wav", [{"start": j, "end": j + 1} for j in range(50)], v)
    i += 1
    print("committed", i, flush=True)
"""


def _child_env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_killed_writer_leaves_the_last_commit_readable(lance, tmp_path):
    fill(lance, per=(3,))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "idx")], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=_child_env())
    try:
        for line in proc.stdout:
            if line.strip() == "committed 3":
                break
        os.kill(proc.pid, signal.SIGKILL)  # somewhere inside the 4th or a later commit
    finally:
        proc.wait(60)
    back = LanceSegmentStore.load(tmp_path / "idx", lock_timeout=10)
    counts = {r["recording_id"]: r["segments"] for r in back.list_recordings()}
    assert counts.pop("rec0") == 3 and len(counts) >= 3
    assert set(counts.values()) == {50}  # whole recordings only, never half of one
    hit = back.search(back.vectors[4], 1)[0][0]
    assert hit.score > 0.999
    back.add("after", "/a.wav", segs(1), unit(np.random.default_rng(1), 1))  # the lock died with the child
    assert "after" in back


FULL_DISK_CHILD = r"""
import resource, signal, sys, numpy as np
from funasr_clsr.retrieval.store import LanceSegmentStore, StoreWriteError
store = LanceSegmentStore.load(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))  # a disk that fills up after 16 KiB per file
v = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
try:
    store.add("big", "/big.wav", [{"start": j, "end": j + 1} for j in range(2000)], v)
except StoreWriteError as exc:
    print("ERROR", exc)
"""


def test_disk_full_during_a_write_is_one_line_and_keeps_the_last_version(lance, tmp_path):
    fill(lance, per=(3,))
    version = lance.version
    out = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(tmp_path / "idx")], capture_output=True,
                         text=True, env=_child_env(), timeout=900)  # imports torch: slow on a busy machine
    lines = [x for x in out.stdout.splitlines() if x.startswith("ERROR")]
    assert len(lines) == 1, out.stdout + out.stderr[-2000:]
    assert "adding 1 recording(s) (big) failed" in lines[0] and "too large" in lines[0]
    assert f"the index is unchanged (version {version})" in lines[0] and ".rs:" not in lines[0]
    back = LanceSegmentStore.load(tmp_path / "idx")
    assert back.version == version and back.recordings() == {"rec0": "/data/rec0.wav"} and len(back) == 3


# --------------------------------------------------------------------------- FAISS directories


def test_faiss_directory_is_refused_with_the_migrate_command_and_migrates(tmp_path):
    faiss = make("faiss", tmp_path)
    vecs = fill(faiss)
    d = faiss.save(tmp_path / "old")
    with pytest.raises(IndexMismatchError, match="funasr-clsr migrate --index") as ei:
        LanceSegmentStore.load(d)
    one_line(ei)
    with pytest.raises(IndexMismatchError, match="migrate"):
        LanceSegmentStore.open_or_create(d, "clsr-test", "1.0", DIM)
    assert index_format(d) == "faiss"
    res = migrate_faiss_index(d)
    assert res["segments"] == 15 and res["recordings"] == 3 and res["backup"] == str(tmp_path / "old.faiss-v1")
    assert index_format(d) == "lance" and index_format(tmp_path / "old.faiss-v1") == "faiss"
    store = LanceSegmentStore.load(d, expect_model_id="clsr-test", expect_model_version="1.0")
    assert store.segments == [{**s, "segment": i} for r in range(3)
                              for i, s in enumerate(x for x in faiss.segments if x["recording_id"] == f"rec{r}")]
    np.testing.assert_allclose(store.vectors, faiss.vectors, atol=1e-7)
    assert [x["meta"] for x in store.list_recordings()] == METAS
    q = vecs["rec2"][3]
    assert store.search(q, 1)[0][0].to_dict() | {"row": 0} == faiss.search(q, 1)[0][0].to_dict() | {"row": 0}
    with pytest.raises(ValueError, match="already a LanceDB index"):
        migrate_faiss_index(d)
    # to another directory: the FAISS index stays as it is
    res = migrate_faiss_index(tmp_path / "old.faiss-v1", out=tmp_path / "copy")
    assert res["backup"] is None and index_format(tmp_path / "old.faiss-v1") == "faiss"
    assert len(LanceSegmentStore.load(tmp_path / "copy")) == 15
    with pytest.raises(IndexMismatchError, match="a LanceDB index"):
        SegmentIndex.load(d)


# --------------------------------------------------------------------------- ANN


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_ann_index_built_at_the_threshold_with_recall_against_exact(kind, tmp_path, monkeypatch):
    from funasr_clsr.retrieval import store as store_mod

    dim, per = 32, 500
    rng = np.random.default_rng(11)
    centres = unit(rng, 20, dim)
    store = LanceSegmentStore.create(tmp_path / "idx", "m", "v", dim, kind=kind, ann_threshold=2000)
    data = []
    for r in range(6):  # 3000 vectors around 20 centres (embeddings cluster by topic)
        v = unit(np.random.default_rng(r), per, dim) * 0.6 + centres[rng.integers(0, 20, per)]
        data.append(v)
        store.add(f"r{r}", f"/r{r}.wav", [{"start": i, "end": i + 1} for i in range(per)], v,
                  {"speaker": "Ada" if r % 2 else "Bob"})
        assert (store.vector_index() is not None) == ((r + 1) * per >= 2000)
    assert store.vector_index().num_indexed_rows >= 2000
    qs = unit(np.random.default_rng(99), 40, dim) * 0.6 + centres[rng.integers(0, 20, 40)]
    approx, exact = store.search(qs, 10), store.search(qs, 10, exact=True)
    recall = np.mean([len({h.row for h in a} & {h.row for h in e}) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9, recall
    # a top_k whose refine candidates (top_k x refine_factor) exceed ef: LanceDB refuses ef < that
    assert [len(q) for q in store.search(qs[:2], 30)] == [30, 30]
    full = np.concatenate(data)  # exact really is exact
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    qn = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    np.testing.assert_allclose([e[0].score for e in exact], (qn @ full.T).max(1), atol=1e-5)
    ada = "speaker = 'Ada'"  # 1,500 rows: under FLAT_FILTER_ROWS, so searched exactly over its rows

    def ann_used(_idx):  # only the ANN plan asks for the partitions to probe
        raise AssertionError("ANN plan")

    monkeypatch.setattr(store, "_default_nprobes", ann_used)
    rows = [[h.row for h in q] for q in store.search(qs[:3], 5, where=ada)]
    assert rows == [[h.row for h in q] for q in store.search(qs[:3], 5, where=ada, exact=True)]
    monkeypatch.setattr(store_mod, "FLAT_FILTER_ROWS", 1000)  # now the prefiltered ANN search
    with pytest.raises(AssertionError, match="ANN plan"):
        store.search(qs[:3], 5, where=ada)
    monkeypatch.undo()
    monkeypatch.setattr(store_mod, "FLAT_FILTER_ROWS", 1000)
    hits = store.search(qs[:3], 5, where=ada)
    assert all(h.meta["speaker"] == "Ada" for q in hits for h in q) and all(len(q) == 5 for q in hits)
    with pytest.raises(FilterError, match="speaker"):
        store.search(qs[:1], 5, where="speaker = ")  # the count that picks the plan says it too
    monkeypatch.undo()
    late = unit(np.random.default_rng(123), 1, dim)
    store.add("late", "/late.wav", [{"start": 0, "end": 1}], late)  # not in the ANN index yet: still found
    assert store.search(late, 1)[0][0].recording_id == "late"
    store.remove("r0")
    assert all(h.recording_id != "r0" for q in store.search(qs, 10) for h in q)


def test_small_tables_are_searched_in_memory_with_the_same_hits_as_a_lancedb_query(lance, tmp_path, monkeypatch):
    """Below MEMORY_SEARCH_ROWS an unfiltered search compares with an in-memory copy of the latest version:
    the same hits (rows, times, meta, order) and scores as LanceDB's own exact query, and a write by another
    process-side handle, a replace or a delete is seen by the next search."""
    from funasr_clsr.retrieval import store as store_mod

    fill(lance)
    qs = unit(np.random.default_rng(5), 6)

    def both(store, k):
        memory = store.search(qs, k)
        monkeypatch.setattr(store_mod, "MEMORY_SEARCH_ROWS", -1)  # every search through LanceDB
        try:
            return memory, store.search(qs, k)
        finally:
            monkeypatch.undo()

    for k in (1, 4, 15, 40):
        memory, query = both(lance, k)
        assert [[(h.row, h.recording_id, h.start, h.end, h.transcript, h.meta, h.rank) for h in q] for q in memory] == \
            [[(h.row, h.recording_id, h.start, h.end, h.transcript, h.meta, h.rank) for h in q] for q in query]
        np.testing.assert_allclose([h.score for q in memory for h in q], [h.score for q in query for h in q],
                                   atol=1e-5)
    assert [r.num_rows for _, r in lance._copies.values()] == [15]  # the in-memory path answered
    other = LanceSegmentStore.load(tmp_path / "idx")  # a second handle: another reader or writer
    other.search(qs, 3)
    target = unit(np.random.default_rng(6), 1)
    lance.add("new", "/new.wav", segs(1), target, {"speaker": "Cy"})
    hit = other.search(target, 1)[0][0]
    assert (hit.recording_id, hit.meta, round(hit.score, 4)) == ("new", {"speaker": "Cy"}, 1.0)
    lance.add("new", "/new.wav", segs(1), -target, replace=True)
    assert other.search(target, 1)[0][0].recording_id != "new"
    lance.remove("rec0")
    assert all(h.recording_id != "rec0" for q in other.search(qs, 20) for h in q)
    assert len(other.search(qs, 100)[0]) == len(lance) == 4 + 6 + 1


def test_selective_filters_are_searched_in_memory_with_the_same_hits_as_a_prefiltered_lancedb_query(lance, monkeypatch):
    """A filter matching <= FLAT_FILTER_ROWS segments is answered from an in-memory copy of its rows, kept per
    (version, filter) and read in the background after the first search with it (which LanceDB answers): the
    same hits and scores as LanceDB's prefiltered exact query, a write seen by the next search, and the copies
    bounded by MEMORY_COPY_BYTES (the least recently used dropped, answers unchanged)."""
    from funasr_clsr.retrieval import store as store_mod

    fill(lance)
    qs = unit(np.random.default_rng(7), 5)
    filters = ["speaker = 'Ada'", "recording_id IN ('rec1', 'rec2')", "start >= 80", "speaker = 'nobody'"]

    def hits(where, k):
        return [[(h.row, h.recording_id, h.start, h.transcript, h.meta, h.rank, round(h.score, 5)) for h in q]
                for q in lance.search(qs, k, where=where)]

    def lancedb(where, k):
        with monkeypatch.context() as m:
            m.setattr(store_mod, "FLAT_FILTER_ROWS", -1)  # LanceDB's own prefiltered search
            return hits(where, k)

    def settle():  # the background reads of the filters' rows
        for reader in list(lance._copy_readers.values()):
            reader.join(timeout=60)

    for where in filters:
        first = hits(where, 3)
        assert (lance.version, where) in lance._copy_readers  # LanceDB answered; the copy is being read
        settle()
        assert (lance.version, where) in lance._copies
        assert first == hits(where, 3) == lancedb(where, 3), where  # from the copy now
        for k in (1, 20):
            assert hits(where, k) == lancedb(where, k), (where, k)
    assert {w for _, w in lance._copies} == set(filters)
    assert hits("speaker = 'nobody'", 3) == [[]] * 5
    target = unit(np.random.default_rng(8), 1)
    lance.add("late", "/late.wav", segs(1), target, {"speaker": "Ada"})  # a new version: the copies are stale
    assert lance.search(target, 1, where="speaker = 'Ada'")[0][0].recording_id == "late"
    settle()
    assert lance.search(target, 1, where="speaker = 'Ada'")[0][0].recording_id == "late"
    assert list(lance._copies) == [(lance.version, "speaker = 'Ada'")]
    monkeypatch.setattr(store_mod, "MEMORY_COPY_BYTES", 1)  # room for one copy only
    for where in filters:
        hits(where, 4)
        settle()
        assert hits(where, 4) == lancedb(where, 4)
        assert len(lance._copies) == 1
    with pytest.raises(FilterError, match="speaker"):
        lance.search(qs, 3, where="speaker = ")

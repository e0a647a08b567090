"""funasr_clsr.retrieval.index: search, persistence, refusal cases, append, atomic saves."""
from __future__ import annotations

import json
import logging
import os
import warnings

import numpy as np
import pytest

from funasr_clsr.retrieval import index as idxmod
from funasr_clsr.retrieval.index import (
    FORMAT_VERSION,
    Hit,
    IndexMismatchError,
    IndexNotFoundError,
    SegmentIndex,
)
from funasr_clsr.retrieval.segmentation import fixed_windows

DIM = 16


def unit(rng, n, d=DIM):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_index(n_recordings=3, per=5, kind="flat", seed=0, **kw):
    rng = np.random.default_rng(seed)
    idx = SegmentIndex("clsr-test", "1.0", DIM, kind=kind, **kw)
    for r in range(n_recordings):
        segs = fixed_windows(per * 40 * 16000, 16000, 40.0)
        idx.add(f"rec{r}", f"/data/rec{r}.wav", segs, unit(rng, per),
                transcripts=[f"recording {r} segment {i}" for i in range(per)])
    return idx


def top1(idx, q):
    return idx.search(q, top_k=1)[0][0]


# --------------------------------------------------------------------------- search


def test_search_finds_known_nearest_neighbour():
    idx = make_index()
    rng = np.random.default_rng(5)
    for row in [0, 7, 14]:
        q = idx.vectors[row] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        hit = top1(idx, q)
        assert hit.row == row and hit.rank == 1 and hit.score > 0.95
        assert hit.recording_id == f"rec{row // 5}" and hit.transcript.endswith(f"segment {row % 5}")
        assert (hit.start, hit.end) == ((row % 5) * 40.0, (row % 5 + 1) * 40.0)
        assert hit.start_sample == (row % 5) * 40 * 16000


def test_search_ranks_by_cosine_and_batches():
    idx = make_index()
    rng = np.random.default_rng(6)
    q = unit(rng, 4)
    res = idx.search(q, top_k=5)
    assert len(res) == 4
    for qi, hits in enumerate(res):
        brute = idx.vectors @ q[qi]
        order = np.argsort(-brute)[:5]
        assert [h.row for h in hits] == list(order)
        np.testing.assert_allclose([h.score for h in hits], brute[order], atol=1e-5)
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    # Scores are cosine: the query's scale does not matter.
    assert [h.row for h in idx.search(10 * q[0], 5)[0]] == [h.row for h in res[0]]
    json.dumps([h.to_dict() for h in res[0]])  # hits serialise


def test_vectors_are_normalised_on_add():
    idx = SegmentIndex("m", "v", 3)
    idx.add("r", "r.wav", [{"start": 0, "end": 1}], [[3.0, 0.0, 4.0]])
    np.testing.assert_allclose(idx.vectors[0], [0.6, 0.0, 0.8], atol=1e-7)
    assert top1(idx, [0.0, 0.0, 2.0]).score == pytest.approx(0.8)


def test_top_k_larger_than_index_warns_once():
    idx = make_index(n_recordings=1, per=3)
    with pytest.warns(UserWarning, match="top_k=10 is larger than the 3 segments"):
        hits = idx.search(idx.vectors[:1], top_k=10)[0]
    assert len(hits) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(idx.search(idx.vectors[:1], top_k=10)[0]) == 3


@pytest.mark.parametrize("k", [0, -3, 1.5, True])
def test_top_k_must_be_positive_int(k):
    with pytest.raises(ValueError, match="top_k"):
        make_index().search(np.ones(DIM), top_k=k)


def test_empty_index_search():
    idx = SegmentIndex("m", "v", DIM)
    with pytest.warns(UserWarning):
        assert idx.search(np.ones((2, DIM)), 5) == [[], []]


def test_bad_vectors_and_arguments():
    idx = SegmentIndex("m", "v", DIM)
    segs = [{"start": 0, "end": 1}, {"start": 1, "end": 2}]
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="dimension 8"):
        idx.add("r", "r.wav", segs, unit(rng, 2, 8))
    with pytest.raises(ValueError, match="2 segments but 3 vectors"):
        idx.add("r", "r.wav", segs, unit(rng, 3))
    with pytest.raises(ValueError, match="transcripts"):
        idx.add("r", "r.wav", segs, unit(rng, 2), transcripts=["only one"])
    bad = unit(rng, 2)
    bad[1] = 0
    with pytest.raises(ValueError, match="zero vector"):
        idx.add("r", "r.wav", segs, bad)
    bad[1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        idx.add("r", "r.wav", segs, bad)
    with pytest.raises(ValueError, match="bad times"):
        idx.add("r", "r.wav", [{"start": 2, "end": 1}, segs[1]], unit(rng, 2))
    with pytest.raises(ValueError, match="no segments"):
        idx.add("r", "r.wav", [], np.zeros((0, DIM)))
    assert len(idx) == 0  # nothing half-added
    with pytest.raises(ValueError, match="query vectors have dimension 4"):
        make_index().search(np.ones(4), 1)
    with pytest.raises(ValueError, match="kind"):
        SegmentIndex("m", "v", DIM, kind="lsh")
    with pytest.raises(ValueError, match="embedding_dim"):
        SegmentIndex("m", "v", 0)
    with pytest.raises(ValueError, match="model_id"):
        SegmentIndex("", "v", DIM)


def test_duplicate_recording_replace_and_remove():
    idx = make_index(n_recordings=2, per=3)
    rng = np.random.default_rng(9)
    segs = fixed_windows(80 * 16000)
    with pytest.raises(ValueError, match="already in the index"):
        idx.add("rec0", "/data/rec0.wav", segs, unit(rng, 2))
    new = unit(rng, 2)
    idx.add("rec0", "/data/rec0.wav", segs, new, transcripts=["a", "b"], replace=True)
    assert len(idx) == 5 and list(idx.recordings()) == ["rec1", "rec0"]
    assert top1(idx, new[1]).transcript == "b"
    assert idx.remove("rec1") == 3
    with pytest.raises(KeyError, match="'nope' is not in the index"):
        idx.remove("nope")
    assert len(idx) == 2 and top1(idx, new[0]).row == 0


def test_add_after_search_reaches_faiss():
    idx = make_index(n_recordings=1, per=4)
    idx.search(idx.vectors[:1], 1)  # builds the FAISS index
    v = unit(np.random.default_rng(11), 1)
    idx.add("late", "late.wav", [{"start": 0.0, "end": 3.5}], v, transcripts=["late one"])
    hit = top1(idx, v[0])
    assert hit.recording_id == "late" and hit.start_sample is None and hit.end == 3.5


# --------------------------------------------------------------------------- ivf / hnsw


def test_ivf_falls_back_to_flat_when_small(caplog):
    idx = make_index(kind="ivf")
    with caplog.at_level(logging.INFO, logger=idxmod.__name__):
        hit = top1(idx, idx.vectors[3])
    assert hit.row == 3
    assert any("using a flat index" in r.message for r in caplog.records)


def test_ivf_and_hnsw_find_neighbours(tmp_path):
    import faiss

    rng = np.random.default_rng(2)
    n = 2000
    vecs = unit(rng, n)
    segs = [{"start": float(i), "end": float(i + 1)} for i in range(n)]
    for kind, cls in (("ivf", faiss.IndexIVFFlat), ("hnsw", faiss.IndexHNSWFlat)):
        idx = SegmentIndex("m", "v", DIM, kind=kind)
        idx.add("big", "big.wav", segs, vecs)
        rows = [0, 123, 1999]
        q = vecs[rows] + 0.01 * rng.standard_normal((3, DIM)).astype(np.float32)
        assert [h[0].row for h in idx.search(q, 3)] == rows
        assert isinstance(idx._faiss_index, cls)
        idx.save(tmp_path / kind)
        back = SegmentIndex.load(tmp_path / kind)
        assert back.kind == kind and isinstance(back._faiss_index, cls)
        assert [h[0].row for h in back.search(q, 3)] == rows


def test_ivf_becomes_ivf_when_it_grows():
    import faiss

    rng = np.random.default_rng(4)
    idx = SegmentIndex("m", "v", DIM, kind="ivf")
    idx.add("a", "a.wav", [{"start": i, "end": i + 1} for i in range(100)], unit(rng, 100))
    idx.search(idx.vectors[0], 1)
    assert isinstance(idx._faiss_index, faiss.IndexFlatIP)
    n = idxmod.IVF_MIN_VECTORS
    idx.add("b", "b.wav", [{"start": i, "end": i + 1} for i in range(n)], unit(rng, n))
    assert top1(idx, idx.vectors[150]).row == 150
    assert isinstance(idx._faiss_index, faiss.IndexIVFFlat)


# --------------------------------------------------------------------------- persistence


def test_save_load_roundtrip(tmp_path):
    idx = make_index()
    d = idx.save(tmp_path / "idx")
    assert sorted(os.listdir(d)) == ["index.faiss", "index.json", "vectors.npy"]
    doc = json.loads((d / "index.json").read_text())
    h = doc["header"]
    assert h["format_version"] == FORMAT_VERSION and h["model_id"] == "clsr-test"
    assert h["model_version"] == "1.0" and h["embedding_dim"] == DIM
    assert h["created"] and len(h["checksum"]) == 64 and h["num_segments"] == 15
    assert doc["segments"][6]["transcript"] == "recording 1 segment 1"
    back = SegmentIndex.load(d, expect_model_id="clsr-test", expect_model_version="1.0",
                             expect_embedding_dim=DIM)
    assert len(back) == 15 and back.created == idx.created and back.recordings() == idx.recordings()
    np.testing.assert_array_equal(back.vectors, idx.vectors)
    assert back.segments == idx.segments
    q = unit(np.random.default_rng(3), 3)
    assert back.search(q, 4) == idx.search(q, 4)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_append_recording_keeps_old_ones(tmp_path):
    d = tmp_path / "idx"
    make_index(n_recordings=2).save(d)
    idx = SegmentIndex.open_or_create(d, "clsr-test", "1.0", DIM)
    assert len(idx) == 10
    v = unit(np.random.default_rng(8), 2)
    idx.add("new", "/data/new.wav", fixed_windows(70 * 16000), v, transcripts=["x", "y"])
    idx.save(d)
    back = SegmentIndex.load(d)
    assert list(back.recordings()) == ["rec0", "rec1", "new"] and len(back) == 12
    assert top1(back, v[1]).transcript == "y"
    np.testing.assert_array_equal(back.vectors[:10], make_index(n_recordings=2).vectors)
    # open_or_create on a fresh directory gives an empty index.
    fresh = SegmentIndex.open_or_create(tmp_path / "none", "m", "v", 8)
    assert len(fresh) == 0 and fresh.embedding_dim == 8


def test_load_missing(tmp_path):
    with pytest.raises(IndexNotFoundError) as ei:
        SegmentIndex.load(tmp_path / "nothing")
    assert isinstance(ei.value, FileNotFoundError) and "nothing" in str(ei.value)
    assert "\n" not in str(ei.value)


def _edit_json(d, fn):
    p = d / "index.json"
    doc = json.loads(p.read_text())
    fn(doc)
    p.write_text(json.dumps(doc))


@pytest.fixture
def saved(tmp_path):
    d = tmp_path / "idx"
    make_index().save(d)
    return d


def refuse(d, match, **kw):
    with pytest.raises(IndexMismatchError, match=match) as ei:
        SegmentIndex.load(d, **kw)
    assert "\n" not in str(ei.value) and str(d) in str(ei.value)


def test_refuses_other_model(saved):
    refuse(saved, "model 'clsr-test', expected 'other'", expect_model_id="other")
    refuse(saved, "model version '1.0', expected '2.0'", expect_model_version="2.0")
    refuse(saved, "16-d vectors, expected 384-d", expect_embedding_dim=384)
    with pytest.raises(IndexMismatchError):
        SegmentIndex.open_or_create(saved, "other", "1.0", DIM)


def test_refuses_other_format_version(saved):
    _edit_json(saved, lambda doc: doc["header"].update(format_version=FORMAT_VERSION + 1))
    refuse(saved, f"format_version {FORMAT_VERSION + 1}")


def test_refuses_edited_metadata(saved):
    _edit_json(saved, lambda doc: doc["segments"][3].update(transcript="tampered"))
    refuse(saved, "checksum mismatch")


def test_refuses_edited_model_id(saved):
    _edit_json(saved, lambda doc: doc["header"].update(model_id="someone-else"))
    refuse(saved, "checksum mismatch")


def test_refuses_edited_vectors(saved):
    v = np.load(saved / "vectors.npy")
    v[0, 0] += 0.01
    np.save(saved / "vectors.npy", v)
    refuse(saved, "checksum mismatch")


def test_refuses_wrong_dim_vectors(saved):
    np.save(saved / "vectors.npy", np.zeros((15, 8), np.float32))
    refuse(saved, "vectors are 8-d but the header says embedding_dim 16")


def test_refuses_corrupt_files(saved):
    (saved / "vectors.npy").write_bytes(b"garbage")
    refuse(saved, "vectors.npy is missing or corrupt")
    (saved / "index.json").write_text("{not json")
    refuse(saved, "index.json is corrupt")


def test_stale_faiss_file_is_rebuilt(saved, caplog):
    (saved / "index.faiss").write_bytes(b"not a faiss index")
    with caplog.at_level(logging.WARNING, logger=idxmod.__name__):
        back = SegmentIndex.load(saved)
    assert any("rebuilding" in r.message for r in caplog.records)
    assert top1(back, back.vectors[9]).row == 9


# --------------------------------------------------------------------------- atomicity


def test_crash_while_writing_keeps_old_index(saved, monkeypatch):
    before = (saved / "index.json").read_bytes()
    idx = SegmentIndex.load(saved)
    idx.add("extra", "e.wav", [{"start": 0, "end": 1}], unit(np.random.default_rng(1), 1))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(idxmod._faiss(), "write_index", boom)
    with pytest.raises(OSError, match="disk full"):
        idx.save(saved)
    assert (saved / "index.json").read_bytes() == before
    assert len(SegmentIndex.load(saved)) == 15
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]


def test_crash_between_renames_restores_old(saved, monkeypatch):
    idx = SegmentIndex.load(saved)
    idx.add("extra", "e.wav", [{"start": 0, "end": 1}], unit(np.random.default_rng(1), 1))
    real_rename = os.rename
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new copy moving into place
            raise KeyboardInterrupt
        return real_rename(src, dst)

    monkeypatch.setattr(idxmod.os, "rename", flaky)
    with pytest.raises(KeyboardInterrupt):
        idx.save(saved)
    monkeypatch.setattr(idxmod.os, "rename", real_rename)
    assert len(SegmentIndex.load(saved)) == 15


def test_hard_crash_between_renames_is_recovered(saved):
    # A killed process can leave the old copy moved aside and the new one not yet in place.
    aside = saved.parent / f".{saved.name}.old-deadbeef"
    os.rename(saved, aside)
    assert len(SegmentIndex.load(saved)) == 15
    assert saved.is_dir() and not aside.exists()


def test_save_through_symlink_keeps_link(tmp_path):
    real = tmp_path / "real"
    make_index(n_recordings=1).save(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    make_index(n_recordings=2).save(link)
    assert link.is_symlink() and len(SegmentIndex.load(real)) == 10


def test_save_refuses_foreign_directory(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(ValueError, match="not empty"):
        make_index().save(d)
    assert (d / "cat.jpg").exists()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        make_index().save(f)


def test_hit_fields():
    h = Hit(score=0.5, rank=1, row=0, recording_id="r", path="p", start=0.0, end=1.0, transcript=None)
    assert h.to_dict()["transcript"] is None and h.start_sample is None


def test_recording_metadata_is_saved_and_checksummed(tmp_path):
    idx = make_index(n_recordings=2)
    idx.add("talk", "/data/talk.wav", fixed_windows(40 * 16000), unit(np.random.default_rng(3), 1),
            {"title": "Bridges", "date": "2026-03-01", "tags": ["civil"]})
    d = idx.save(tmp_path / "idx")
    back = SegmentIndex.load(d)
    assert back.recording_meta == {"talk": {"title": "Bridges", "date": "2026-03-01", "tags": ["civil"]}}
    assert [r["meta"] for r in back.list_recordings()] == [{}, {}, {"title": "Bridges", "date": "2026-03-01",
                                                                     "tags": ["civil"]}]
    assert top1(back, back.vectors[10]).meta["title"] == "Bridges"
    _edit_json(d, lambda doc: doc["recordings_meta"]["talk"].update(title="tampered"))
    refuse(d, "checksum mismatch")
    # an index saved without any metadata (as before metadata existed) has no recordings_meta key
    plain = make_index().save(tmp_path / "plain")
    assert "recordings_meta" not in json.loads((plain / "index.json").read_text())

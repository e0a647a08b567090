"""funasr-clsr serve: the HTTP API with a tiny CLSR (FastAPI TestClient), bad input, auth, limits, traversal."""
from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading

import numpy as np
import pytest
import soundfile as sf

from clsr_testing import SECRET_CANARIES

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

SR = 16000
KEY = SECRET_CANARIES["server API key"]  # conftest checks no file of the run holds it


@pytest.fixture
def make_client(retriever, tmp_path):
    """make_client(**create_app options) -> TestClient over a fresh index in tmp_path."""
    from funasr_clsr.serve import create_app

    clients = []

    def make(**options):
        client = TestClient(create_app(retriever, tmp_path / "idx", **options))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def upload(client, path, name=None, **fields):
    with open(path, "rb") as f:
        return client.post("/v1/recordings", files={"file": (name or os.path.basename(path), f, "audio/wav")},
                           data=fields)


def index_long(client, audio, wait_job, recording_id="talk") -> dict:
    r = upload(client, audio / "long.wav", recording_id=recording_id)
    assert r.status_code == 202, r.text
    job = wait_job(client.get, r.json()["job_id"])
    assert job["state"] == "done", job
    return job


def assert_error(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and body["error"]
    for w in words:
        assert w in body["error"], body["error"]
    return body["error"]


def uploads_left(client) -> list[str]:
    return sorted(p.name for p in client.app.state.archive.uploads_dir.iterdir())


def test_upload_index_search_play_delete(make_client, retriever, audio, wait_job, window_clip):
    client = make_client()
    job = index_long(client, audio, wait_job)
    assert (job["total"], job["done"], job["segments"], job["progress"]) == (8, 8, 8, 1.0)
    recs = client.get("/v1/recordings").json()["recordings"]
    assert [(r["recording_id"], r["segments"], r["seconds"], r["name"]) for r in recs] == [("talk", 8, 16.0, "long.wav")]

    # a spoken question identical to window 5 finds window 5 with cosine 1; the timeline covers all 8 windows
    with open(audio / "c5.wav", "rb") as f:
        r = client.post("/v1/search", files={"audio": ("q.wav", f, "audio/wav")}, data={"top_k": "2", "timeline": "true"})
    assert r.status_code == 200, r.text
    res = r.json()
    top = res["hits"][0]
    assert (top["recording_id"], top["start"], top["end"], top["rank"]) == ("talk", 10.0, 12.0, 1)
    assert top["score"] == pytest.approx(1.0, abs=1e-4) and len(res["hits"]) == 2
    assert res["question"] == "q.wav" and res["question_transcript"] == top["transcript"]
    tl = res["timeline"]
    assert tl["recording_id"] == "talk" and [s["start"] for s in tl["segments"]] == [2.0 * i for i in range(8)]
    assert max(tl["segments"], key=lambda s: s["score"])["start"] == 10.0

    # a text question: the scores are the two encoders' cosines, best first
    r = client.post("/v1/search", json={"question": "who was the king of the city", "top_k": 8})
    hits = r.json()["hits"]
    q = retriever.model.encode_text(["who was the king of the city"]).numpy()
    c = retriever.model.encode_speech([window_clip(i) for i in range(8)]).numpy()
    expect = (q @ c.T)[0]
    assert [h["rank"] for h in hits] == list(range(1, 9))
    np.testing.assert_allclose([h["score"] for h in sorted(hits, key=lambda h: h["start"])], expect, atol=1e-4)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    timing = r.json()["timing_ms"]  # the server's own split of took_ms
    assert timing["encode"] > 0 and timing["search"] > 0
    assert timing["encode"] + timing["search"] <= r.json()["took_ms"] + 0.02

    # the clip URL serves exactly that segment's samples
    r = client.get(top["clip_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    data, sr = sf.read(io.BytesIO(r.content), dtype="int16")
    original, _ = sf.read(audio / "long.wav", dtype="int16")
    assert sr == SR and np.array_equal(data, original[10 * SR:12 * SR])

    health = client.get("/health").json()
    assert (health["status"], health["segments"], health["jobs_pending"], health["backend"]) == ("ok", 8, 0, "torch")
    # delete: gone from the index and the server's copy of the upload is removed
    assert client.delete("/v1/recordings/talk").json() == {"recording_id": "talk", "segments_removed": 8}
    assert client.get("/v1/recordings").json()["recordings"] == [] and uploads_left(client) == []
    assert client.post("/v1/search", json={"question": "king"}).json()["hits"] == []
    assert_error(client.delete("/v1/recordings/talk"), 404, "talk")


def test_job_progress_is_reported_while_encoding(make_client, retriever, audio, monkeypatch, wait_job):
    client = make_client()
    first_batch_done, release = threading.Event(), threading.Event()
    real = retriever.model.encode_speech
    calls = []

    def paused(inputs, *args, **kwargs):  # holds the second batch of 4 windows until released
        calls.append(len(inputs))
        if len(calls) == 2:
            first_batch_done.set()
            release.wait(30)
        return real(inputs, *args, **kwargs)

    monkeypatch.setattr(retriever.model, "encode_speech", paused)
    job_id = upload(client, audio / "long.wav", recording_id="talk").json()["job_id"]
    assert first_batch_done.wait(30)
    job = client.get(f"/v1/jobs/{job_id}").json()
    release.set()
    assert (job["state"], job["done"], job["total"], job["progress"]) == ("running", 4, 8, 0.5)
    assert client.get("/v1/recordings").json()["recordings"] == []  # nothing visible before the whole recording
    assert client.post("/v1/search", json={"question": "king"}).status_code == 200  # searches go on meanwhile
    assert wait_job(client.get, job_id)["done"] == 8


def test_bad_uploads_are_refused_and_nothing_is_kept(make_client, audio, tmp_path):
    client = make_client(max_upload_bytes=200_000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes((audio / "long.wav").read_bytes()[:60_000])  # the header still announces 16 s
    low_rate = tmp_path / "rate1.wav"
    sf.write(low_rate, np.zeros(100, np.float32), 1, subtype="PCM_16")
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, np.zeros(10, np.float32), SR)
    cases = [(audio / "notaudio.wav", 400, "notaudio.wav"), (tmp_path / "empty.wav", 400, "empty"),
             (cut, 400, "cut off"), (low_rate, 400, "sample rate 1 Hz"), (tiny, 400, "shorter than")]
    (tmp_path / "empty.wav").write_bytes(b"")
    for path, status, words in cases:
        err = assert_error(upload(client, path), status, words)
        assert str(tmp_path) not in err  # the client's file name, never the server's path
    assert_error(upload(client, audio / "long.wav"), 413, "limit")  # 512 KB > 200 KB, refused from Content-Length
    # no Content-Length (chunked): counted while streaming
    body = io.BytesIO((audio / "long.wav").read_bytes())
    r = client.post("/v1/recordings", content=iter(lambda: body.read(16384), b""),
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert_error(r, 413, "limit")
    # a multipart body cut off before its closing boundary
    data = (audio / "c1.wav").read_bytes()
    partial = b'--x\r\nContent-Disposition: form-data; name="file"; filename="c1.wav"\r\n\r\n' + data[:20000]
    r = client.post("/v1/recordings", content=partial, headers={"content-type": "multipart/form-data; boundary=x"})
    assert_error(r, 400, "cut off")
    assert_error(client.post("/v1/recordings", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert_error(upload(client, audio / "c1.wav", recording_id="../etc/passwd"), 400, "not allowed")
    assert_error(upload(client, audio / "c1.wav", meta="{not json"), 400, "meta is not valid JSON")
    assert_error(upload(client, audio / "c1.wav", meta='["a"]'), 400, "JSON object")
    assert_error(upload(client, audio / "c1.wav", meta='{"date": "last week"}'), 400, "ISO 8601")
    assert client.get("/v1/recordings").json()["recordings"] == [] and uploads_left(client) == []
    assert client.app.state.jobs.pending() == []
    assert client.get("/health").json()["status"] == "ok"  # still serving


def test_audio_that_fails_while_decoding_fails_its_job_only(make_client, audio, tmp_path, wait_job, window_clip):
    client = make_client()
    bad = tmp_path / "nan.wav"
    x = np.concatenate([window_clip(0), window_clip(1)])
    x[40000] = np.nan
    sf.write(bad, x, SR, subtype="FLOAT")
    r = upload(client, bad, recording_id="nan")
    assert r.status_code == 202  # the header is fine: the samples are found bad while indexing
    job = wait_job(client.get, r.json()["job_id"])
    assert job["state"] == "failed" and "NaN" in job["error"] and "\n" not in job["error"]
    assert str(tmp_path) not in job["error"] and "nan.wav" in job["error"]
    assert client.get("/v1/recordings").json()["recordings"] == [] and uploads_left(client) == []
    index_long(client, audio, wait_job)  # the worker goes on
    assert len(client.get("/v1/recordings").json()["recordings"]) == 1


def test_duplicate_ids_conflict_unless_replaced(make_client, audio, wait_job):
    client = make_client()
    index_long(client, audio, wait_job)
    assert_error(upload(client, audio / "c1.wav", recording_id="talk"), 409, "already indexed")
    r = upload(client, audio / "c1.wav", recording_id="talk", replace="true")
    assert wait_job(client.get, r.json()["job_id"])["segments"] == 1
    recs = client.get("/v1/recordings").json()["recordings"]
    assert [(r["recording_id"], r["segments"]) for r in recs] == [("talk", 1)]
    assert len(uploads_left(client)) == 1  # the replaced upload's audio was deleted
    r = upload(client, audio / "c2.wav")  # default id: the file name
    assert r.json()["recording_id"] == "c2"


def test_bad_questions_and_parameters(make_client, audio, wait_job):
    client = make_client()
    index_long(client, audio, wait_job)
    search = lambda **body: client.post("/v1/search", json=body)  # noqa: E731
    assert_error(search(question=""), 400, "empty")
    assert_error(search(question="   "), 400, "empty")
    assert_error(search(question="x" * 4001), 400, "4000")
    r = client.post("/v1/search", content=b'{"question": "\\ud800 lone surrogate"}',
                    headers={"content-type": "application/json"})
    assert_error(r, 400, "Unicode")
    assert_error(search(), 400, "no question")
    for k in (0, -1):
        assert_error(search(question="king", top_k=k), 400, "top_k")
    assert_error(search(question="king", top_k=101), 400, "at most 100")
    assert_error(search(question="king", top_k="3"), 422, "top_k")
    assert_error(search(question="king", top_k=2.5), 422, "top_k")
    assert_error(search(question="king", colour="red"), 422, "colour")
    assert_error(search(question="king", recording_id="nope"), 404, "nope")
    assert_error(search(question="king", recording_id="../../etc/passwd"), 400, "..")
    assert_error(search(question="king", where=""), 400, "where")
    assert_error(search(question="king", where="start >"), 400, "does not parse")
    assert_error(search(question="king", where="colour = 'red'"), 400, "no column")
    assert_error(search(question="king", where="x" * 2001), 400, "2000")
    assert_error(client.post("/v1/search", content=b"{nope", headers={"content-type": "application/json"}), 400, "JSON")
    assert_error(client.post("/v1/search", content=b'{"question": "\xff\xfe"}',
                             headers={"content-type": "application/json"}), 400, "JSON")
    with open(audio / "notaudio.wav", "rb") as f:
        assert_error(client.post("/v1/search", files={"audio": ("q.wav", f)}), 400, "q.wav")
    assert_error(client.post("/v1/search", files={"audio": ("q.wav", b"")}), 400, "empty")
    long_q = io.BytesIO()
    sf.write(long_q, np.zeros(61 * SR, np.float32), SR, format="WAV", subtype="PCM_16")
    assert_error(client.post("/v1/search", files={"audio": ("long.wav", long_q.getvalue())}), 400, "longer than")
    # restricted to one recording: the same hits as over the whole index (there is only one)
    r = search(question="king", recording_id="talk", top_k=3, timeline=True).json()
    assert [h["start"] for h in r["hits"]] == [h["start"] for h in search(question="king", top_k=3).json()["hits"]]
    assert len(r["timeline"]["segments"]) == 8
    assert client.get("/health").status_code == 200


def test_segment_audio_bounds_and_traversal(make_client, audio, wait_job):
    client = make_client()
    index_long(client, audio, wait_job)
    get = lambda rid, **q: client.get(f"/v1/recordings/{rid}/audio", params=q)  # noqa: E731
    r = get("talk", start=15.5, end=16.0)
    assert r.status_code == 200 and len(sf.read(io.BytesIO(r.content))[0]) == SR // 2
    assert_error(get("talk", start=15.0, end=16.5), 400, "past the end")
    assert_error(get("talk", start=-1, end=2), 400, "span")
    assert_error(get("talk", start=3, end=3), 400, "span")
    assert_error(get("talk", start="nan", end=2), 400, "span")
    assert_error(get("talk", start=0, end="inf"), 400, "span")
    assert_error(get("talk", start="a", end=2), 422, "start")
    assert_error(get("talk", start=0), 422, "end")
    assert_error(get("nope", start=0, end=1), 404, "nope")
    assert_error(get("..%2F..%2Fetc%2Fpasswd", start=0, end=1), 400, "..")
    assert_error(get("%2E%2E", start=0, end=1), 400, "..")
    assert_error(get("a%00b", start=0, end=1), 400, "control")
    assert_error(client.delete("/v1/recordings/..%2Ftalk"), 400, "..")
    assert_error(client.get("/v1/jobs/..%2F..%2Fetc"), 404)
    assert_error(client.get("/v1/jobs/nothex"), 400, "32 hex")
    assert_error(client.get("/v1/jobs/" + "0" * 32), 404, "unknown job")
    assert client.get("/static/..%2F..%2Fapp.py").status_code == 404
    assert client.get("/static/app.js").status_code == 200


def test_path_inputs_only_under_allowed_directories(make_client, retriever, audio, tmp_path, wait_job):
    from funasr_clsr.serve import create_app

    closed = make_client()
    assert_error(closed.post("/v1/recordings", json={"path": str(audio / "long.wav")}), 403, "--allowed-dir")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "talk.wav").write_bytes((audio / "long.wav").read_bytes())
    (allowed / "link.wav").symlink_to(audio / "c1.wav")  # inside, but pointing outside
    with TestClient(create_app(retriever, tmp_path / "idx2", allowed_dirs=[allowed])) as client:
        add = lambda **body: client.post("/v1/recordings", json=body)  # noqa: E731
        assert_error(add(path=str(audio / "long.wav")), 403, "outside")
        assert_error(add(path=str(allowed / ".." / audio.name / "long.wav")), 403, "outside")
        assert_error(add(path="../../../etc/passwd"), 403, "outside")
        assert_error(add(path="link.wav"), 403, "outside")
        assert_error(add(path="missing.wav"), 404, "no such file")
        assert_error(add(path="a\x00b"), 400, "NUL")
        assert_error(add(path="talk.wav", extra=1), 422, "extra")
        r = add(path="talk.wav", recording_id="from-path")  # relative: under the first allowed directory
        assert r.status_code == 202, r.text
        assert wait_job(client.get, r.json()["job_id"])["segments"] == 8
        assert (allowed / "talk.wav").is_file()
        client.delete("/v1/recordings/from-path")
        assert (allowed / "talk.wav").is_file()  # the operator's file is not the server's to delete


def test_metadata_is_stored_and_filters_the_search(make_client, audio, wait_job):
    client = make_client()
    for rid, wav, speaker in (("a", "c1.wav", "Ann"), ("b", "c2.wav", "Bo")):
        r = upload(client, audio / wav, recording_id=rid, meta=json.dumps({"speaker": speaker, "year": 2024}))
        assert wait_job(client.get, r.json()["job_id"])["state"] == "done"
    recs = {r["recording_id"]: r["meta"] for r in client.get("/v1/recordings").json()["recordings"]}
    assert recs == {"a": {"speaker": "Ann", "year": 2024}, "b": {"speaker": "Bo", "year": 2024}}
    for speaker, rid in (("Ann", "a"), ("Bo", "b")):
        hits = client.post("/v1/search", json={"question": "king", "top_k": 5, "where": f"speaker = '{speaker}'"})
        assert [h["recording_id"] for h in hits.json()["hits"]] == [rid]
    r = client.post("/v1/recordings", json={"path": "x.wav", "meta": {"date": "soon"}})
    assert r.status_code == 403  # path inputs are off here: refused before the metadata is looked at


def test_api_key_is_required_and_never_logged(make_client, audio, monkeypatch, caplog, wait_job):
    monkeypatch.setenv("FUNASR_CLSR_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    client = make_client()
    for method, path in (("get", "/health"), ("get", "/v1/recordings"), ("post", "/v1/search"),
                         ("get", "/v1/recordings/x/audio?start=0&end=1"), ("delete", "/v1/recordings/x"),
                         ("get", "/v1/jobs/" + "0" * 32), ("get", "/nope")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Basic " + KEY}):
            r = getattr(client, method)(path, headers=headers)
            assert_error(r, 401, "API key")
            assert r.headers["www-authenticate"] == "Bearer" and KEY not in r.text
    r = upload(client, audio / "long.wav")  # refused before the body is read: nothing spooled or kept
    assert_error(r, 401) and uploads_left(client) == []
    page = client.get("/")  # the page itself is public; it holds no data and asks for the key
    assert page.status_code == 200 and "api-key" in page.text
    assert client.get("/openapi.json").json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/health", headers=auth).status_code == 200
    with open(audio / "long.wav", "rb") as f:
        r = client.post("/v1/recordings", files={"file": ("long.wav", f)}, data={"recording_id": "talk"}, headers=auth)
    assert wait_job(lambda p: client.get(p, headers=auth), r.json()["job_id"])["state"] == "done"
    assert client.post("/v1/search", json={"question": "king"}, headers=auth).json()["hits"]
    assert all(KEY not in rec.getMessage() for rec in caplog.records) and KEY not in caplog.text


def test_cors_preflight_is_answered_without_the_key(make_client, monkeypatch):
    monkeypatch.setenv("FUNASR_CLSR_API_KEY", KEY)
    client = make_client(cors_origins=["http://app.example"])
    r = client.options("/v1/search", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                                               "Access-Control-Request-Headers": "authorization,content-type"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
    r = client.get("/health", headers={"Origin": "http://app.example"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://app.example"
    r = client.options("/v1/search", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_an_upload_cut_off_mid_transfer_leaves_nothing(retriever, audio, tmp_path, live_server):
    from funasr_clsr.serve import create_app

    app = create_app(retriever, tmp_path / "idx")
    data = (audio / "long.wav").read_bytes()
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="long.wav"\r\n\r\n'
    with live_server(app) as live:
        with socket.create_connection(("127.0.0.1", live.port)) as s:
            s.sendall(b"POST /v1/recordings HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                      b"Content-Length: %d\r\n\r\n" % (len(head) + len(data) + 8) + head + data[:100_000])
        import httpx

        with httpx.Client(base_url=live.url) as client:  # still serving; nothing was indexed or kept
            for _ in range(100):
                if not any(app.state.archive.uploads_dir.iterdir()) and not app.state.jobs.pending():
                    break
                threading.Event().wait(0.05)
            assert client.get("/health").json()["segments"] == 0
            assert client.get("/v1/recordings").json()["recordings"] == []
    assert list(app.state.archive.uploads_dir.iterdir()) == [] and app.state.jobs.pending() == []


def test_cli_serve_builds_the_app_and_runs_uvicorn(model_dir, tmp_path, monkeypatch, capsys):
    import uvicorn

    from funasr_clsr.bin.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    rc = main(["serve", "--model", str(model_dir), "--index", str(tmp_path / "idx"), "--port", "8123",
               "--allowed-dir", str(tmp_path), "--max-upload-mb", "2", "--window", "2"])
    assert rc == 0, capsys.readouterr().err
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    with TestClient(seen["app"]) as client:
        assert client.get("/health").json()["path_inputs"] is True
        assert client.get("/health").json()["max_upload_bytes"] == 2 << 20
    rc = main(["serve", "--model", str(model_dir), "--index", str(tmp_path / "idx"), "--allowed-dir",
               str(tmp_path / "missing")])
    assert rc == 2 and "allowed directory does not exist" in capsys.readouterr().err

"""Shared pieces of the server tests: a tiny exported CLSR, test recordings, a live uvicorn server."""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import clsr_testing
from clsr_testing import export_tiny_model_dir

SR = 16000
W = 2.0  # window length: every context clip is padded to exactly one window


def clip(i: int) -> np.ndarray:
    return clsr_testing.window_clip(i, W, SR)  # the module's name: a fixture below is called window_clip


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return export_tiny_model_dir(tmp_path_factory.mktemp("serve_model"))


@pytest.fixture(scope="session")
def retriever(model_dir):
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    return LongFormRetriever(str(model_dir), window_s=W, batch_size=4)


@pytest.fixture(scope="session")
def audio(tmp_path_factory):
    """long.wav: the 8 contexts, one per 2 s window (16 s); c<i>.wav: window i alone."""
    d = tmp_path_factory.mktemp("serve_audio")
    sf.write(d / "long.wav", np.concatenate([clip(i) for i in range(8)]), SR)
    for i in range(8):
        sf.write(d / f"c{i}.wav", clip(i), SR)
    (d / "notaudio.wav").write_text("this is not audio\n" * 50)
    return d


def _wait_job(get, job_id: str, limit_s: float = 300.0) -> dict:
    """Poll GET /v1/jobs/{id} until the job has finished (``get``: a client's get)."""
    deadline = time.monotonic() + limit_s
    while True:
        job = get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {limit_s} s")
        time.sleep(0.05)


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port, in a thread."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="session")
def wait_job():
    """wait_job(client.get, job_id) -> the finished job."""
    return _wait_job


@pytest.fixture(scope="session")
def live_server():
    """``with live_server(app) as live:`` uvicorn on ``live.url``."""
    return LiveServer


@pytest.fixture(scope="session")
def window_clip():
    """window_clip(i) -> context i padded to one window, as written into long.wav."""
    return clip

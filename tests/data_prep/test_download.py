"""Resumable, verified downloads against a local HTTP server (Range, truncation, bad data)."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import pytest

from funasr_clsr.data_prep import download as dl

PAYLOAD = bytes(range(256)) * 2000  # 512,000 bytes


class Server:
    """Serves ``files`` (path -> bytes). Behaviour per path in ``modes``:

    ``range`` honours Range (default), ``norange`` ignores it (always 200 + whole body),
    ``truncate:N`` sends only the first N bytes of each answer then closes (a dropped
    connection), ``flaky:N`` truncates the first answer at N bytes and behaves after that.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "not here")
                    return
                mode = outer.modes.get(self.path, "range")
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng and mode != "norange":
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                chunk = body[start:]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                cut = None
                if mode.startswith("truncate:"):
                    cut = int(mode.split(":")[1])
                elif mode.startswith("flaky:"):
                    cut = int(mode.split(":")[1])
                    outer.modes[self.path] = "range"
                if cut is not None and cut < len(chunk):
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    srv = Server()
    yield srv
    srv.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fetch(url, dest, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("backoff", 0.0)
    return dl.download(url, dest, **kw)


def test_plain_download_verifies_both_digests(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    out = fetch(server.url("/a.bin"), tmp_path / "a.bin", sha256=sha256(PAYLOAD), md5=md5(PAYLOAD))
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.bin.part").exists()


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.files["/b.bin"] = PAYLOAD
    server.modes["/b.bin"] = "flaky:100000"
    out = fetch(server.url("/b.bin"), tmp_path / "b.bin", sha256=sha256(PAYLOAD))
    assert out.read_bytes() == PAYLOAD
    ranges = [r for p, r in server.requests if p == "/b.bin"]
    assert ranges[0] is None and ranges[1] == "bytes=100000-"


def test_partial_file_kept_and_resumed_on_next_run(server, tmp_path):
    server.files["/c.bin"] = PAYLOAD
    server.modes["/c.bin"] = "truncate:50000"
    dest = tmp_path / "c.bin"
    with pytest.raises(dl.PartialDownloadError, match="run again to resume"):
        fetch(server.url("/c.bin"), dest, retries=2)
    part = tmp_path / "c.bin.part"
    assert part.stat().st_size == 100000 and not dest.exists()  # two attempts, 50 kB each
    server.modes["/c.bin"] = "range"
    fetch(server.url("/c.bin"), dest, md5=md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/c.bin", "bytes=100000-")


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.files["/d.bin"] = PAYLOAD
    server.modes["/d.bin"] = "norange"
    (tmp_path / "d.bin.part").write_bytes(b"stale bytes that must not stay in front")
    out = fetch(server.url("/d.bin"), tmp_path / "d.bin", sha256=sha256(PAYLOAD))
    assert out.read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_body(server, tmp_path):
    server.files["/e.bin"] = PAYLOAD
    (tmp_path / "e.bin.part").write_bytes(PAYLOAD)  # a run that died right before the rename
    out = fetch(server.url("/e.bin"), tmp_path / "e.bin", sha256=sha256(PAYLOAD))
    assert out.read_bytes() == PAYLOAD
    assert server.requests == [("/e.bin", f"bytes={len(PAYLOAD)}-")]


def test_checksum_mismatch_moves_data_aside(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    with pytest.raises(dl.ChecksumMismatchError, match=r"sha256 .* expected 0+"):
        fetch(server.url("/f.bin"), dest, sha256="0" * 64)
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()
    assert (tmp_path / "f.bin.corrupt").read_bytes() == PAYLOAD


def test_wrong_size_is_a_mismatch(server, tmp_path):
    server.files["/g.bin"] = PAYLOAD
    with pytest.raises(dl.ChecksumMismatchError, match="size 512000 bytes, expected 600000"):
        fetch(server.url("/g.bin"), tmp_path / "g.bin", size=600000, retries=1)


def test_http_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        fetch(server.url("/nope.json"), tmp_path / "nope.json")


def test_existing_file_is_verified_not_fetched(server, tmp_path):
    dest = tmp_path / "h.bin"
    dest.write_bytes(PAYLOAD)
    fetch(server.url("/h.bin"), dest, md5=md5(PAYLOAD))
    assert server.requests == []
    with pytest.raises(dl.ChecksumMismatchError, match="already present"):
        fetch(server.url("/h.bin"), dest, md5="f" * 32)


def test_cli_reports_errors_with_exit_status(server, tmp_path, capsys):
    server.files["/i.json"] = b'{"ok": true}'
    assert dl.main([server.url("/i.json"), str(tmp_path / "i.json"), "--quiet"]) == 0
    assert dl.main([server.url("/missing"), str(tmp_path / "m.json"), "--quiet"]) == 1
    assert "HTTP 404" in capsys.readouterr().err


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_extract_zip_and_tar_with_marker(tmp_path):
    z = tmp_path / "a.zip"
    z.write_bytes(_zip_bytes({"top/x.txt": b"x", "top/sub/y.txt": b"y"}))
    out = tmp_path / "out"
    dl.extract(z, out)
    assert (out / "top" / "sub" / "y.txt").read_bytes() == b"y"
    assert (out / ".extracted.a.zip").exists()
    (out / "top" / "x.txt").unlink()
    dl.extract(z, out)  # marker: nothing redone
    assert not (out / "top" / "x.txt").exists()

    t = tmp_path / "b.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        info = tarfile.TarInfo("LibriSpeech/test-clean/1/2/1-2.trans.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"1-2 "))
    dl.extract(t, out)
    assert (out / "LibriSpeech/test-clean/1/2/1-2.trans.txt").read_bytes() == b"1-2 "


def test_extract_refuses_path_traversal_and_non_archives(tmp_path):
    z = tmp_path / "evil.zip"
    z.write_bytes(_zip_bytes({"../outside.txt": b"no"}))
    with pytest.raises(dl.DownloadError, match="outside"):
        dl.extract(z, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()
    html = tmp_path / "page.zip"
    html.write_text("<html>not found</html>")
    with pytest.raises(dl.DownloadError, match="neither a zip nor a tar"):
        dl.extract(html, tmp_path / "out2")


def test_file_digest_matches_hashlib(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(PAYLOAD)
    assert dl.file_digest(p, "md5") == md5(PAYLOAD)
    dl.verify_file(p, sha256=sha256(PAYLOAD), md5=md5(PAYLOAD), size=len(PAYLOAD))

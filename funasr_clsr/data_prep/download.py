"""Resumable, verified HTTP downloads and safe archive extraction for the recipes (stdlib only).

``download(url, dest, sha256=..., md5=..., size=...)``

* writes to ``dest + ".part"`` and resumes it with an HTTP ``Range`` request on the next try or
  the next run (a server that ignores ``Range`` answers 200 and the file restarts from zero);
* retries connection errors and 5xx answers, resuming each time;
* checks the final size and the sha256/md5 digests when known; a file that fails is moved to
  ``dest + ".corrupt"`` (so the next run does not resume a bad file) and a
  :class:`ChecksumMismatchError` names both digests;
* renames to ``dest`` only after every check passed: ``dest`` is always complete.

``extract(archive, out_dir)`` unpacks tar/zip archives, refuses members that would land outside
``out_dir``, and leaves a marker so a rerun skips the work.

CLI: ``python -m funasr_clsr.data_prep.download URL DEST [--sha256 H] [--md5 H] [--size N]
[--extract DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

__all__ = [
    "ChecksumMismatchError",
    "DownloadError",
    "PartialDownloadError",
    "download",
    "extract",
    "file_digest",
    "verify_file",
]

USER_AGENT = "funasr-clsr-recipe/1.0 (+resumable downloader)"


class DownloadError(ValueError):
    """A download that cannot complete (bad URL, HTTP error, server misbehaving)."""


class PartialDownloadError(DownloadError):
    """The transfer ended early every time; the ``.part`` file is kept for the next run."""


class ChecksumMismatchError(DownloadError):
    """The file's size or digest differs from the published value."""


def file_digest(path: str | os.PathLike, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fin:
        for block in iter(lambda: fin.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, sha256: str | None = None, md5: str | None = None,
                size: int | None = None, what: str | None = None) -> None:
    """Raise :class:`ChecksumMismatchError` unless ``path`` has the given size and digests."""
    what = what or os.fspath(path)
    actual = os.path.getsize(path)
    if size is not None and actual != size:
        raise ChecksumMismatchError(f"{what}: size {actual} bytes, expected {size}")
    wanted = {algo: exp.lower() for algo, exp in (("sha256", sha256), ("md5", md5)) if exp}
    if not wanted:
        return
    hashes = {algo: hashlib.new(algo) for algo in wanted}  # one read for all digests (23 GB archives)
    with open(path, "rb") as fin:
        for block in iter(lambda: fin.read(1 << 20), b""):
            for h in hashes.values():
                h.update(block)
    for algo, expected in wanted.items():
        got = hashes[algo].hexdigest()
        if got != expected:
            raise ChecksumMismatchError(f"{what}: {algo} {got}, expected {expected}")


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+|\*)-?(\d*)/(\d+|\*)")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    if not value:
        return None, None
    m = _CONTENT_RANGE.match(value.strip())
    if not m:
        return None, None
    start = None if m.group(1) == "*" else int(m.group(1))
    total = None if m.group(3) == "*" else int(m.group(3))
    return start, total


class _Retry(Exception):
    """Transient failure: resume from the .part file."""


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer(url: str, part: Path, timeout: float, chunk_size: int, progress: bool) -> int | None:
    """One attempt: append to ``part`` from where it ends. Returns the total size when known."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            _, total = _parse_content_range(exc.headers.get("Content-Range"))
            if total is not None and total == offset:
                return total  # the .part is already complete
            part.unlink()  # larger than the remote file: start over
            raise _Retry(f"HTTP 416 with a {offset}-byte partial file; restarting") from None
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retry(f"HTTP {exc.code}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
            raise DownloadError(f"{url}: cannot connect ({reason}); no network?") from None
        raise _Retry(str(reason)) from None

    with resp:
        status = getattr(resp, "status", 200)
        total: int | None = None
        if status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:  # a range we did not ask for: restart cleanly
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start}, not {offset}")
            mode = "ab"
        else:  # 200: the server ignored Range (or there was nothing to resume)
            if offset:
                print(f"{url}: server ignored the Range request; restarting from byte 0", file=sys.stderr)
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=part.name[:-5][:40], mininterval=2, file=sys.stderr)
        try:
            with open(part, mode) as fout:
                while True:
                    try:
                        block = resp.read(chunk_size)
                    except (socket.timeout, ConnectionError, http.client.HTTPException) as exc:
                        raise _Retry(f"connection lost after {fout.tell()} bytes ({exc})") from None
                    if not block:
                        break
                    fout.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    return total


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
             size: int | None = None, retries: int = 5, timeout: float = 60.0,
             chunk_size: int = 1 << 20, progress: bool = True, backoff: float = 2.0) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and verify it; returns ``dest``.

    An existing ``dest`` is verified (when a digest or size is given) and kept. Raises
    :class:`PartialDownloadError` when the transfer keeps ending early (the ``.part`` stays for
    the next run), :class:`ChecksumMismatchError` when the data is wrong (moved to
    ``.corrupt``), :class:`DownloadError` for HTTP errors such as 404.
    """
    dest = Path(dest)
    if dest.exists():
        verify_file(dest, sha256, md5, size, what=f"{dest} (already present; delete it to download again)")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total = None
    last_error = "no attempt made"
    for attempt in range(max(1, retries)):
        try:
            total = _transfer(url, part, timeout, chunk_size, progress) or total
        except _Retry as exc:
            last_error = str(exc)
            time.sleep(min(backoff * attempt, 30.0))
            continue
        have = part.stat().st_size if part.exists() else 0
        goal = total if total is not None else size  # the server's length decides completeness
        if goal is not None and have < goal:
            last_error = f"transfer ended at {have} of {goal} bytes"
            time.sleep(min(backoff * attempt, 30.0))
            continue
        break
    else:
        have = part.stat().st_size if part.exists() else 0
        raise PartialDownloadError(f"{url}: incomplete after {max(1, retries)} attempts ({last_error}); "
                                   f"{have} bytes kept in {part}; run again to resume")

    if not part.exists():  # a 0-byte body never created the file
        part.touch()
    expected = size if size is not None else total
    try:
        verify_file(part, sha256, md5, expected, what=f"{url} -> {dest}")
    except ChecksumMismatchError as exc:
        bad = dest.with_name(dest.name + ".corrupt")
        os.replace(part, bad)
        raise ChecksumMismatchError(f"{exc}; the data was moved to {bad} (delete it and run again; "
                                    "if it fails again the upstream file changed)") from None
    os.replace(part, dest)
    return dest


def _safe_target(out_dir: Path, name: str) -> Path:
    target = (out_dir / name).resolve()
    if not str(target).startswith(str(out_dir.resolve()) + os.sep) and target != out_dir.resolve():
        raise DownloadError(f"archive member {name!r} would be written outside {out_dir}")
    return target


def extract(archive: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False) -> Path:
    """Unpack a .zip / .tar(.gz|.bz2|.xz) into ``out_dir``; a marker makes reruns skip it.

    Members with absolute paths or ``..`` that would escape ``out_dir`` are refused, links
    inside tar archives are not followed out of ``out_dir``.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive not found")
    marker = out_dir / f".extracted.{archive.name}"
    if marker.exists() and not force:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DownloadError(f"{archive}: member {bad} is corrupt (CRC mismatch); download it again")
            for info in zf.infolist():
                target = _safe_target(out_dir, info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _safe_target(out_dir, m.name)
                if (m.issym() or m.islnk()) and (os.path.isabs(m.linkname) or ".." in Path(m.linkname).parts):
                    raise DownloadError(f"{archive}: link {m.name} -> {m.linkname} points outside the archive")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: also strips unsafe modes
                tf.extractall(out_dir, members=members, filter="data")
            else:
                tf.extractall(out_dir, members=members)
    else:
        raise DownloadError(f"{archive}: neither a zip nor a tar archive (a partial or HTML download?)")
    marker.write_text(f"{archive}\n")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m funasr_clsr.data_prep.download", description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("dest", help="output file (a .part file next to it holds an unfinished transfer)")
    ap.add_argument("--sha256")
    ap.add_argument("--md5")
    ap.add_argument("--size", type=int, help="expected size in bytes")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--extract", metavar="DIR", help="unpack the archive into DIR afterwards")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        path = download(args.url, args.dest, sha256=args.sha256, md5=args.md5, size=args.size,
                        retries=args.retries, timeout=args.timeout, progress=not args.quiet)
        if args.extract:
            extract(path, args.extract)
    except (DownloadError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

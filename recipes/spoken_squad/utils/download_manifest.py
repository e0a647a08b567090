#!/usr/bin/env python3
"""Fetch and unpack every file listed in a recipe's download manifest (one process, resumable).

Manifest: tab-separated, ``#`` comments, one row per file::

    name  url  dest  md5  sha256  extract_to

* ``dest`` and ``extract_to`` are relative to ``--raw-dir``; ``-`` means "none".
* ``url`` ``-`` means the archive is not downloaded but produced by an earlier row (an archive
  inside an archive, like Spoken-SQuAD's ``train_wav.zip``).
* ``{base_url}`` in a url is replaced by ``--base-url`` (a mirror, or a local server in tests).
* A row whose archive was already unpacked (marker in ``extract_to``) is skipped entirely, so
  ``--remove-archives`` does not cause a second download on the next run.

Transfers resume from ``<dest>.part`` and are verified against md5/sha256 when given (see
:mod:`funasr_clsr.data_prep.download`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from funasr_clsr.data_prep.download import DownloadError, download, extract


def read_manifest(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fin:
        for lineno, line in enumerate(fin, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 6:
                raise ValueError(f"{path}:{lineno}: expected 6 tab-separated columns "
                                 f"(name url dest md5 sha256 extract_to), found {len(cols)}")
            name, url, dest, md5, sha256, extract_to = (c.strip() for c in cols)
            rows.append({"name": name, "url": None if url == "-" else url, "dest": dest,
                         "md5": None if md5 == "-" else md5, "sha256": None if sha256 == "-" else sha256,
                         "extract_to": None if extract_to == "-" else extract_to})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--raw-dir", required=True)
    ap.add_argument("--only", default="", help="comma list of row names (default: all rows)")
    ap.add_argument("--skip", default="", help="comma list of row names to leave out")
    ap.add_argument("--base-url", default="", help="replaces {base_url} in the manifest's urls")
    ap.add_argument("--remove-archives", action="store_true", help="delete an archive once unpacked")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    raw = Path(args.raw_dir)
    only = {s for s in args.only.split(",") if s}
    skip = {s for s in args.skip.split(",") if s}
    rows = read_manifest(args.manifest)
    unknown = (only | skip) - {r["name"] for r in rows}
    if unknown:
        raise ValueError(f"{args.manifest}: no row named {sorted(unknown)}")
    for row in rows:
        if (only and row["name"] not in only) or row["name"] in skip:
            continue
        dest = raw / row["dest"]
        out_dir = raw / row["extract_to"] if row["extract_to"] else None
        if out_dir is not None and (out_dir / f".extracted.{dest.name}").exists():
            print(f"[{row['name']}] already unpacked in {out_dir}")
            continue
        if row["url"]:
            url = row["url"].replace("{base_url}", args.base_url.rstrip("/"))
            print(f"[{row['name']}] {url} -> {dest}", flush=True)
            download(url, dest, md5=row["md5"], sha256=row["sha256"], retries=args.retries,
                     progress=not args.quiet)
        elif not dest.exists():
            raise FileNotFoundError(f"[{row['name']}] {dest}: expected from an earlier row, not found")
        if out_dir is not None:
            print(f"[{row['name']}] unpacking {dest} -> {out_dir}", flush=True)
            extract(dest, out_dir)
            if args.remove_archives:
                os.remove(dest)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DownloadError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

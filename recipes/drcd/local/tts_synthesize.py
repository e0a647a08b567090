#!/usr/bin/env python3
"""Synthesise every line of a TTS manifest (``utt<TAB>text``) with an external TTS command.

The command is a template run by the shell, with these fields (shell-quoted for you):

    {text_file}  a UTF-8 file holding the text      {wav}  the wav file to write
    {text}       the text itself                    {utt}  the utterance id

e.g. ``--cmd "espeak-ng -v cmn -w {wav} -f {text_file}"`` or any neural TTS wrapper with the
same contract. Resumable: an existing, readable ``<out-dir>/<utt>.wav`` is kept. Output is
written to a temporary name and renamed only after it reads back as audio. Failures (non-zero
exit, no or unreadable output, timeout) are listed in ``<out-dir>/failed.tsv`` and counted;
the jsonl step then reports those pairs as missing audio. Exit status 1 only when every
synthesis failed (a broken command), or with --max-failed-frac.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf


def read_manifest(path: str) -> list[tuple[str, str]]:
    items = []
    with open(path, encoding="utf-8") as fin:
        for lineno, line in enumerate(fin, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            utt, sep, text = line.partition("\t")
            if not sep or not utt or not text.strip() or "/" in utt:
                raise ValueError(f"{path}:{lineno}: expected 'utt<TAB>text' with a file-name-safe utt id")
            items.append((utt, text))
    if not items:
        raise ValueError(f"{path}: empty TTS manifest")
    return items


def readable(path: Path) -> bool:
    try:
        return sf.info(str(path)).frames > 0
    except (RuntimeError, OSError):
        return False


def synthesise(utt: str, text: str, out_dir: Path, template: str, timeout: float) -> str | None:
    """None when ``<out_dir>/<utt>.wav`` is ready, else the reason it is not."""
    wav = out_dir / f"{utt}.wav"
    if wav.exists() and readable(wav):
        return None
    tmp_wav = out_dir / f".{utt}.tmp.wav"
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as tf:
        tf.write(text + "\n")
        text_file = tf.name
    cmd = template.format(text_file=shlex.quote(text_file), wav=shlex.quote(str(tmp_wav)),
                          text=shlex.quote(text), utt=shlex.quote(utt))
    try:
        proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            err = " ".join((proc.stderr or proc.stdout).split())[-200:]
            return f"exit {proc.returncode}: {err}"
        if not tmp_wav.exists() or not readable(tmp_wav):
            return "the command wrote no readable wav"
        os.replace(tmp_wav, wav)
        return None
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    finally:
        os.unlink(text_file)
        if tmp_wav.exists():
            tmp_wav.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--cmd", required=True, help="TTS command template, see the module help")
    ap.add_argument("--nj", type=int, default=4, help="parallel TTS processes")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per utterance")
    ap.add_argument("--max-failed-frac", type=float, default=None)
    args = ap.parse_args(argv)
    for field in ("{wav}",):
        if field not in args.cmd:
            raise ValueError(f"--cmd must contain {field} (where the TTS writes its output): {args.cmd!r}")
    if "{text_file}" not in args.cmd and "{text}" not in args.cmd:
        raise ValueError(f"--cmd must contain {{text_file}} or {{text}}: {args.cmd!r}")
    items = read_manifest(args.manifest)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, args.nj)) as pool:
        futures = [pool.submit(synthesise, utt, text, out_dir, args.cmd, args.timeout) for utt, text in items]
        results = [f.result() for f in tqdm(futures, desc="tts", unit="utt", mininterval=5)]
    failed = [(utt, why) for (utt, _), why in zip(items, results) if why]
    (out_dir / "failed.tsv").write_text("".join(f"{u}\t{w}\n" for u, w in failed), encoding="utf-8")
    print(f"tts: {len(items) - len(failed)} of {len(items)} ready in {out_dir}; {len(failed)} failed"
          + (f" (see {out_dir / 'failed.tsv'}; first: {failed[0][1]})" if failed else ""))
    if failed and (len(failed) == len(items)
                   or (args.max_failed_frac is not None and len(failed) / len(items) > args.max_failed_frac)):
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

"""Shared fixtures (helpers live in clsr_testing.py so tests can import them)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clsr_testing import CONTEXTS, QUESTIONS, TINY_TE, find_secret_leaks, tone_speech


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_file_of_the_run(tmp_path_factory):
    """After the whole run: no log, config, model directory, index or upload it wrote holds a secret."""
    yield
    leaks = find_secret_leaks(tmp_path_factory.getbasetemp())
    assert not leaks, "secrets written to files: " + "; ".join(leaks[:10])


@pytest.fixture(autouse=True)
def logging_state_is_restored():
    """A benchmark's main() run in-process quiets loggers (``funasr_clsr`` to ERROR, say); without
    this, a later test of the same worker that checks a warning through caplog sees nothing."""
    import logging

    manager = logging.root.manager
    saved = {name: (lg.level, lg.disabled, lg.propagate) for name, lg in manager.loggerDict.items()
             if isinstance(lg, logging.Logger)}
    root_level, disabled_below = logging.root.level, manager.disable
    yield
    for name, lg in manager.loggerDict.items():
        if isinstance(lg, logging.Logger):  # a logger made during the test gets the defaults back
            lg.level, lg.disabled, lg.propagate = saved.get(name, (logging.NOTSET, False, True))
    logging.root.setLevel(root_level)
    logging.disable(disabled_below)
    manager._clear_cache()  # levels are cached per logger since Python 3.7


@pytest.fixture(scope="session")
def tiny_te_dir() -> Path:
    return TINY_TE


@pytest.fixture(scope="session")
def pair_dir(tmp_path_factory) -> Path:
    """Eight synthetic pairs on disk + jsonl files for text and spoken questions."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("pairs")
    text_lines, speech_lines = [], []
    for i, (ctx, q) in enumerate(zip(CONTEXTS, QUESTIONS)):
        ctx_wav, q_wav = root / f"ctx{i}.wav", root / f"q{i}.wav"
        sf.write(ctx_wav, tone_speech(ctx, seed=i), 16000)
        sf.write(q_wav, tone_speech(q, seed=100 + i), 16000)
        base = {"key": f"pair{i}", "source": str(ctx_wav), "source_len": 100, "target": ctx,
                "target_len": len(ctx.split())}
        text_lines.append({**base, "question": q})
        speech_lines.append({**base, "question_source": str(q_wav), "question_target": q})
    for name, lines in (("text_q.jsonl", text_lines), ("speech_q.jsonl", speech_lines)):
        (root / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


@pytest.fixture(scope="session")
def cmvn(pair_dir) -> Path:
    """am.mvn of the pair_dir fixture's speech, computed once by the package's own CLI."""
    out = pair_dir / "am.mvn"
    if not out.exists():
        subprocess.run([sys.executable, "-m", "funasr_clsr.bin.compute_cmvn", "--jsonl",
                        str(pair_dir / "speech_q.jsonl"), "--out", str(out)], check=True, capture_output=True)
    return out

"""funasr_clsr: CLSR, the contrastive language-speech retriever, as a FunASR plugin.

``import funasr_clsr`` registers the model (``CLSR``), its tokenizer
(``WordPieceTokenizer``), frontends (``WavFrontendVectorized``, ``WhisperLogMelFrontend``), encoder
(``WhisperAudioEncoder``), dataset (``AudioQADataset``) and index (``IndexDSJsonlQA``) classes with ``funasr.register.tables``.
"""
from funasr_clsr.version import MODEL_FORMAT_VERSION, __version__  # noqa: F401
import contextlib as _contextlib  # noqa: E402
import io as _io  # noqa: E402
import sys as _sys  # noqa: E402

# FunASR prints a four-line "ffmpeg is not installed" notice on import. The plugin reads audio with
# soundfile/soxr (funasr_clsr.audio), never through FunASR's ffmpeg path, so the notice says nothing
# about it: it is dropped, and anything else printed on import goes to stderr (stdout stays clean for --json).
_FFMPEG_NOTICE = ("Notice: ffmpeg is not installed", "If you want to use ffmpeg backend",
                  "sudo apt install ffmpeg", "brew install ffmpeg")
_captured = _io.StringIO()
with _contextlib.redirect_stdout(_captured):
    from funasr_clsr import frontend  # noqa: F401  (registers WavFrontendVectorized, WhisperLogMelFrontend)
    from funasr_clsr import tokenizer  # noqa: F401  (registers WordPieceTokenizer)
    from funasr_clsr import datasets  # noqa: F401  (registers AudioQADataset, IndexDSJsonlQA)
    from funasr_clsr import models  # noqa: F401  (registers CLSR, WhisperAudioEncoder and the baselines)
for _line in _captured.getvalue().splitlines():
    if _line.strip() and not any(n in _line for n in _FFMPEG_NOTICE):
        print(_line, file=_sys.stderr)
from funasr_clsr.hub import register_short_name as _register_short_name  # noqa: E402

_register_short_name()  # AutoModel(model="clsr")

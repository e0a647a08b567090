"""funasr_clsr: CLSR, the contrastive language-speech retriever, as a FunASR plugin.

``import funasr_clsr`` registers the model (``CLSR``), its tokenizer
(``WordPieceTokenizer``), frontends (``WavFrontendVectorized``, ``WhisperLogMelFrontend``), encoder
(``WhisperAudioEncoder``), dataset (``AudioQADataset``) and index (``IndexDSJsonlQA``) classes with ``funasr.register.tables``.
"""
from funasr_clsr.version import MODEL_FORMAT_VERSION, __version__  # noqa: F401
import contextlib as _contextlib  # noqa: E402
import sys as _sys  # noqa: E402

# FunASR prints an "ffmpeg is not installed" notice on import; keep stdout clean for --json output.
with _contextlib.redirect_stdout(_sys.stderr):
    from funasr_clsr import frontend  # noqa: F401  (registers WavFrontendVectorized)
    from funasr_clsr import tokenizer  # noqa: F401  (registers WordPieceTokenizer)
    from funasr_clsr import datasets  # noqa: F401  (registers AudioQADataset, IndexDSJsonlQA)
    from funasr_clsr import models  # noqa: F401  (registers CLSR and the baselines)
from funasr_clsr.hub import register_short_name as _register_short_name  # noqa: E402

_register_short_name()  # AutoModel(model="clsr")

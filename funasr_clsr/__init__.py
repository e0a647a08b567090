"""funasr_clsr: CLSR, the contrastive language-speech retriever, as a FunASR plugin.

``import funasr_clsr`` registers the model (``CLSR``), its tokenizer
(``WordPieceTokenizer``), dataset (``AudioQADataset``) and index (``IndexDSJsonlQA``)
classes with ``funasr.register.tables``.
"""
from funasr_clsr.version import MODEL_FORMAT_VERSION, __version__  # noqa: F401
from funasr_clsr import tokenizer  # noqa: F401,E402  (registers WordPieceTokenizer)
from funasr_clsr import datasets  # noqa: F401,E402  (registers AudioQADataset, IndexDSJsonlQA)
from funasr_clsr import models  # noqa: F401,E402  (registers CLSR)

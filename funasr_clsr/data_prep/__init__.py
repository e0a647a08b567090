"""Dataset preparation for CLSR recipes: SQuAD-layout readers, one-to-one filtering,
FunASR jsonl writing (:mod:`.squad_format`) and resumable, verified downloads (:mod:`.download`).

These modules import neither torch nor funasr (the parent package's ``__init__`` does, to
register its classes); audio headers are read with soundfile through :mod:`funasr_clsr.audio`. Import the submodules directly, e.g.
``from funasr_clsr.data_prep import squad_format``.
"""

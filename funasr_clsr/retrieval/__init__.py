"""Long-form retrieval plumbing: segmentation of recordings and the persisted segment index.

Light to import: no funasr, no torch; FAISS loads on first index use.
"""

from .index import FORMAT_VERSION, Hit, IndexMismatchError, IndexNotFoundError, SegmentIndex
from .segmentation import (
    Segment,
    VADUnavailableError,
    fixed_windows,
    iter_window_audio,
    merge_speech_regions,
    vad_segments,
)

__all__ = [
    "FORMAT_VERSION",
    "Hit",
    "IndexMismatchError",
    "IndexNotFoundError",
    "Segment",
    "SegmentIndex",
    "VADUnavailableError",
    "fixed_windows",
    "iter_window_audio",
    "merge_speech_regions",
    "vad_segments",
]

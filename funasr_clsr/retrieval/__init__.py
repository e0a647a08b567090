"""Long-form retrieval plumbing: segmentation of recordings and the persisted segment stores.

Light to import: no funasr, no torch; FAISS and LanceDB load on first use.
"""

from .index import FORMAT_VERSION, SegmentIndex
from .segmentation import (
    Segment,
    VADUnavailableError,
    fixed_windows,
    iter_window_audio,
    merge_speech_regions,
    vad_segments,
)
from .store import (
    FilterError,
    Hit,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    LanceSegmentStore,
    RecordingExistsError,
    RecordingNotFoundError,
    SegmentStore,
    StoreWriteError,
    migrate_faiss_index,
)

__all__ = [
    "FORMAT_VERSION",
    "FilterError",
    "Hit",
    "IndexLockedError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "LanceSegmentStore",
    "RecordingExistsError",
    "RecordingNotFoundError",
    "Segment",
    "SegmentIndex",
    "SegmentStore",
    "StoreWriteError",
    "VADUnavailableError",
    "fixed_windows",
    "iter_window_audio",
    "merge_speech_regions",
    "migrate_faiss_index",
    "vad_segments",
]

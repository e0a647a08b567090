"""CLAP-style baseline: audio and text towers with projection heads, contrastive loss only."""
from funasr_clsr.models.clap.model import CLAPAudioEncoder, CLAPFormatError, CLAPStyle  # noqa: F401 (registers)

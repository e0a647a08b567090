"""Baselines that are not FunASR models: the ASR -> text-retriever cascade (CLSR ASR or Whisper).

The end-to-end baselines are registered models: ``funasr_clsr.models.parabge`` (ParaBGE)
and ``funasr_clsr.models.clap`` (CLAPStyle).
"""
from funasr_clsr.baselines.cascade import (  # noqa: F401
    WhisperTranscriber,
    WhisperUnavailableError,
    cascade_embeddings,
    cascade_similarity,
    transcribe_with_clsr_asr,
    whisper_base_dir,
)

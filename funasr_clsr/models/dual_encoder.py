"""Pieces shared by the dual-encoder baselines (ParaBGE, CLAP-style) and usable by CLSR.

Model folders do not import each other (FunASR's layout), so the speech-side public API the
baselines have in common lives here: fbank features from wav paths/arrays with the model's own
frontend, the speech encoder's padded output and its masked mean, and ``encode_speech`` /
``encode_text`` / FunASR's ``inference`` built on two per-model hooks. funasr is imported
lazily so importing this module stays cheap.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import torch


def as_input_list(inputs) -> list:
    """One wav path/bytes/1-D array -> a one-item list; a batch (list, 2-D array) -> a list."""
    if isinstance(inputs, (str, bytes)) or (hasattr(inputs, "ndim") and inputs.ndim == 1):
        return [inputs]
    return list(inputs)


def load_speech_waves(frontend, inputs, sample_rate: int | None = None) -> list:
    """Mono float32 arrays at ``frontend.fs`` for wav paths / arrays (a silent one is logged)."""
    from funasr_clsr.audio import is_silent, load_audio

    if frontend is None:
        raise RuntimeError("model has no frontend; load it with funasr.AutoModel(model=DIR)")
    wavs = []
    for item in as_input_list(inputs):
        wav = load_audio(item, sample_rate=sample_rate, target_sr=frontend.fs)
        if is_silent(wav):
            logging.warning("input %s is silent; its embedding carries no content",
                            item if isinstance(item, str) else "<array>")
        wavs.append(wav)
    return wavs


def check_piece_seconds(value) -> float | None:
    """``model_conf.piece_seconds`` as a float, or None (whole inputs); anything else is a ValueError."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"piece_seconds must be positive (or null for whole inputs), got {value!r}")
    return seconds


def load_speech_pieces(frontend, inputs, piece_seconds: float, sample_rate: int | None = None):
    """(pieces, counts): each input's waveform cut at pauses (:func:`funasr_clsr.audio.pause_cuts`)
    into pieces of about ``piece_seconds``, in input order, and how many pieces each input gave."""
    from funasr_clsr.audio import pause_cuts

    pieces, counts = [], []
    for wav in load_speech_waves(frontend, inputs, sample_rate):
        cuts = pause_cuts(wav, int(frontend.fs), piece_seconds)
        pieces += [wav[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        counts.append(len(cuts) - 1)
    return pieces, counts


def group_by_counts(items: Sequence, counts: Sequence[int]) -> list[list]:
    """``items`` (one per piece, in order) back into one list per input, as ``counts`` says."""
    groups, start = [], 0
    for n in counts:
        groups.append(list(items[start:start + n]))
        start += n
    return groups


def features_from_waves(frontend, wavs: Sequence):
    """(feats, lengths) of mono float32 arrays already at ``frontend.fs``."""
    from funasr.utils.load_utils import extract_fbank

    return extract_fbank([torch.from_numpy(w) for w in wavs], data_type="sound", frontend=frontend)


def load_speech_features(frontend, inputs, sample_rate: int | None = None):
    """fbank features for wav paths / arrays with ``frontend``: (feats, lengths, seconds of audio)."""
    wavs = load_speech_waves(frontend, inputs, sample_rate)
    feats, lengths = features_from_waves(frontend, wavs)
    return feats, lengths, sum(len(w) for w in wavs) / frontend.fs


def masked_mean(enc: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """(B, T, D) frames, (B, T) True-at-padding -> (B, D) mean over the real frames."""
    keep = (~pad).unsqueeze(-1).to(enc.dtype)
    return (enc * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class DualEncoderMixin:
    """Speech-side API of a dual encoder (an ``nn.Module`` listed before it in the bases).

    The model provides ``specaug``, ``normalize``, ``encoder``, ``text_encoder``,
    ``freeze_text_encoder``, ``frontend`` (in ``__dict__``, outside model.pt) and ``text_embed``,
    and implements the two hooks ``_embed_features`` and ``_embedding_dim``.
    """

    # ---------------------------------------------------------------- set-up
    def _build_speech_encoder(self, encoder: str, encoder_conf, input_size: int, specaug, specaug_conf,
                              normalize, normalize_conf, fused_attention: bool = True) -> None:
        """specaug / normalize / encoder from FunASR's tables by name, as Paraformer builds them."""
        from funasr.register import tables

        from funasr_clsr.models.fused_attention import use_fused_attention

        self.specaug = tables.specaug_classes.get(specaug)(**(specaug_conf or {})) if specaug else None
        self.normalize = tables.normalize_classes.get(normalize)(**(normalize_conf or {})) if normalize else None
        encoder_class = tables.encoder_classes.get(encoder)
        if encoder_class is None:
            raise ValueError(f"encoder {encoder!r} is not registered in funasr's encoder_classes")
        self.encoder = encoder_class(input_size=input_size, **(encoder_conf or {}))
        use_fused_attention(self.encoder, fused_attention)

    def _set_asr_tokenizer(self, tokenizer, token_list) -> None:
        """The transcripts' tokenizer: only the dataset uses it; export writes it as tokens.txt."""
        from funasr_clsr.tokenizer import WordPieceTokenizer, read_token_list

        if isinstance(tokenizer, WordPieceTokenizer):
            self.asr_tokenizer = tokenizer
        elif token_list is not None:
            self.asr_tokenizer = WordPieceTokenizer(read_token_list(token_list))
        else:
            self.asr_tokenizer = self.text_encoder.tokenizer

    # ----------------------------------------------------------------- hooks
    def _embed_features(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features -> (B, E) unit vectors (the model's speech tower)."""
        raise NotImplementedError

    @property
    def _embedding_dim(self) -> int:
        """E, the width of the vectors both towers return (for empty inputs)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- set-up
    def train(self, mode: bool = True):
        """FunASR's trainer calls train() every epoch; a frozen text encoder stays in eval mode."""
        super().train(mode)
        if self.freeze_text_encoder:
            self.text_encoder.eval()
        return self

    # ----------------------------------------------------------------- speech tower
    def _encode_frames(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """specaug (training only) -> normalize -> encoder: (B, T', D) frames and their padding mask."""
        from funasr.models.transformer.utils.nets_utils import make_pad_mask

        if speech_lengths.dim() > 1:
            speech_lengths = speech_lengths[:, 0]
        if self.specaug is not None and self.training:
            speech, speech_lengths = self.specaug(speech, speech_lengths)
        if self.normalize is not None:
            speech, speech_lengths = self.normalize(speech, speech_lengths)
        enc, enc_lens, _ = self.encoder(speech, speech_lengths)
        if isinstance(enc, tuple):  # intermediate CTC outputs
            enc = enc[0]
        return enc, make_pad_mask(enc_lens, maxlen=enc.size(1)).to(enc.device)

    # ---------------------------------------------------------------- inference
    def _features(self, inputs: Sequence, sample_rate: int | None = None):
        """fbank features for wav paths / arrays, with the model's own frontend."""
        return load_speech_features(self.frontend, inputs, sample_rate)

    @staticmethod
    def _as_list(inputs) -> list:
        return as_input_list(inputs)

    @torch.no_grad()
    def encode_speech(self, inputs, batch_size: int = 8, sample_rate: int | None = None) -> torch.Tensor:
        """(B, E) unit vectors for wav paths or 16 kHz float arrays (any rate with ``sample_rate``)."""
        inputs = self._as_list(inputs)
        device = next(self.parameters()).device
        vecs = []
        for start in range(0, len(inputs), batch_size):
            feats, lengths, _ = self._features(inputs[start:start + batch_size], sample_rate)
            vecs.append(self._embed_features(feats.to(device), lengths.to(device)))
        return torch.cat(vecs) if vecs else torch.empty(0, self._embedding_dim)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], is_query: bool = True, batch_size: int = 64) -> torch.Tensor:
        """(B, E) unit vectors for questions (or passages with ``is_query=False``)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        vecs = [self.text_embed(texts[s:s + batch_size], is_query=is_query) for s in range(0, len(texts), batch_size)]
        return torch.cat(vecs) if vecs else torch.empty(0, self._embedding_dim)

    @torch.no_grad()
    def inference(self, data_in, data_lengths=None, key: list | None = None, tokenizer=None,
                  frontend=None, **kwargs):
        """FunASR entry point: ``AutoModel.generate(input=wav)`` -> one embedding per input."""
        if frontend is not None:
            self.__dict__["frontend"] = frontend
        t0 = time.perf_counter()
        inputs = self._as_list(data_in)
        feats, lengths, seconds = self._features(inputs, kwargs.get("fs"))
        t1 = time.perf_counter()
        device = next(self.parameters()).device
        vecs = self._embed_features(feats.to(device), lengths.to(device)).cpu().numpy()
        keys = key or [f"utt{i}" for i in range(len(inputs))]
        results = [{"key": k, "embedding": v} for k, v in zip(keys, vecs)]
        meta = {"load_data": f"{t1 - t0:0.3f}", "batch_data_time": max(seconds, 1e-6)}
        return results, meta

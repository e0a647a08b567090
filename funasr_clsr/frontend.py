"""Kaldi fbank computed in torch, and the WavFrontend that uses it (``frontend: WavFrontendVectorized``).

Without torchaudio, FunASR 1.4.16 computes fbank with kaldi-native-fbank one frame at a time
(about 4.5 ms per second of audio on one core here): half of the small CLSR's indexing time, and
minutes of every evaluation pass in the recipes. The same Kaldi computation over all frames at
once (framing by strides, one FFT call, one mel matmul) gives the same features (tests compare it
with kaldi-native-fbank) in a fraction of the time. Everything after the fbank (LFR, CMVN) is
FunASR's own code.
"""
from __future__ import annotations

import functools
import math

import torch
from torch.nn.utils.rnn import pad_sequence

from funasr.frontends.wav_frontend import WavFrontend, apply_cmvn, apply_lfr
from funasr.register import tables
from funasr.utils import fbank as funasr_fbank

_PREEMPH_DEFAULT = 0.97


@functools.lru_cache(maxsize=16)  # per utterance on the hot path; read-only tensors
def _window(kind: str, size: int) -> torch.Tensor:
    n = torch.arange(size, dtype=torch.float64)
    arg = 2 * math.pi * n / (size - 1) if size > 1 else torch.zeros(size, dtype=torch.float64)
    if kind == "hamming":
        w = 0.54 - 0.46 * torch.cos(arg)
    elif kind == "hanning":
        w = 0.5 - 0.5 * torch.cos(arg)
    elif kind == "hanning_periodic":  # torch.hann_window's (Whisper's STFT window)
        w = torch.hann_window(size, dtype=torch.float64)
    elif kind == "povey":
        w = (0.5 - 0.5 * torch.cos(arg)).pow(0.85)
    elif kind == "rectangular":
        w = torch.ones(size, dtype=torch.float64)
    elif kind == "blackman":
        w = 0.42 - 0.5 * torch.cos(arg) + 0.08 * torch.cos(2 * arg)
    else:
        raise ValueError(f"unknown window_type {kind!r}")
    return w.float()


@functools.lru_cache(maxsize=16)
def _mel_banks(num_bins: int, padded: int, fs: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """Kaldi's triangular mel filters over the first padded/2 FFT bins: (padded/2, num_bins)."""
    nyquist = 0.5 * fs
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"fbank: bad frequency range low_freq={low_freq}, high_freq={high_freq} at {fs} Hz")

    def mel(f):
        return 1127.0 * torch.log1p(f / 700.0)

    fft_mel = mel(torch.arange(padded // 2, dtype=torch.float64) * (fs / padded))[:, None]
    lo, hi = mel(torch.tensor(low_freq, dtype=torch.float64)), mel(torch.tensor(high_freq, dtype=torch.float64))
    delta = (hi - lo) / (num_bins + 1)
    left = lo + torch.arange(num_bins, dtype=torch.float64) * delta
    center, right = left + delta, left + 2 * delta
    rising = (fft_mel - left) / (center - left)
    falling = (right - fft_mel) / (right - center)
    weights = torch.where(fft_mel <= center, rising, falling)
    inside = (fft_mel > left) & (fft_mel < right)
    return torch.where(inside, weights, torch.zeros_like(weights)).float()


def kaldi_fbank(waveform: torch.Tensor, num_mel_bins: int = 23, frame_length: float = 25.0,
                frame_shift: float = 10.0, sample_frequency: float = 16000.0, window_type: str = "povey",
                preemphasis_coefficient: float = _PREEMPH_DEFAULT, remove_dc_offset: bool = True,
                round_to_power_of_two: bool = True, low_freq: float = 20.0, high_freq: float = 0.0,
                use_log_fbank: bool = True, use_power: bool = True, **unsupported) -> torch.Tensor:
    """Kaldi's ``compute-fbank-feats`` (snip_edges, no dither, no energy) for one waveform: (frames, bins).

    Same signature as ``torchaudio.compliance.kaldi.fbank`` for the options FunASR's WavFrontend
    passes; anything else (dither, snip_edges=False, energy, VTLN) goes to FunASR's own fbank.
    """
    default_like = {"dither": 0.0, "energy_floor": None, "snip_edges": True, "use_energy": False,
                    "htk_compat": False, "raw_energy": None, "channel": None, "subtract_mean": False}
    special = {k: v for k, v in unsupported.items()
               if k not in default_like or (default_like[k] is not None and v != default_like[k])}
    if special:
        return funasr_fbank.fbank(waveform, num_mel_bins=num_mel_bins, frame_length=frame_length,
                                  frame_shift=frame_shift, sample_frequency=sample_frequency,
                                  window_type=window_type, preemphasis_coefficient=preemphasis_coefficient,
                                  remove_dc_offset=remove_dc_offset, round_to_power_of_two=round_to_power_of_two,
                                  low_freq=low_freq, high_freq=high_freq, use_log_fbank=use_log_fbank,
                                  use_power=use_power, **unsupported)
    wav = waveform.reshape(-1) if waveform.dim() == 1 or waveform.size(0) == 1 else None
    if wav is None:
        raise ValueError(f"fbank: one channel expected, got a waveform of shape {tuple(waveform.shape)}")
    wav = wav.float()
    size = int(sample_frequency * 0.001 * frame_length)
    shift = int(sample_frequency * 0.001 * frame_shift)
    if size < 1 or shift < 1:
        raise ValueError(f"fbank: frame_length {frame_length} ms / frame_shift {frame_shift} ms too short")
    if wav.numel() < size:
        return torch.zeros((0, num_mel_bins), dtype=torch.float32)
    frames = wav.unfold(0, size, shift)  # (T, size), a view
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis_coefficient != 0.0:
        prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = frames - preemphasis_coefficient * prev
    frames = frames * _window(window_type, size)
    padded = 1 << (size - 1).bit_length() if round_to_power_of_two else size
    spectrum = torch.fft.rfft(frames, n=padded, dim=1)
    power = spectrum.real.square() + spectrum.imag.square()
    if not use_power:
        power = power.sqrt()
    banks = _mel_banks(num_mel_bins, padded, float(sample_frequency), float(low_freq), float(high_freq))
    mel = power[:, : padded // 2] @ banks
    if use_log_fbank:
        mel = mel.clamp(min=torch.finfo(torch.float32).eps).log()
    return mel


@tables.register("frontend_classes", "WavFrontendVectorized")
class WavFrontendVectorized(WavFrontend):
    """FunASR's WavFrontend (fbank -> LFR -> CMVN) with the fbank computed by :func:`kaldi_fbank`.

    Same options and same features as ``WavFrontend``: a model trained with either works with
    the other (the frontend holds no trained weights).
    """

    def forward(self, input: torch.Tensor, input_lengths, **kwargs):
        feats = []
        for i in range(input.size(0)):
            n = int(input_lengths[i])
            waveform = input[i][:n]
            if self.upsacle_samples:  # FunASR's spelling
                waveform = waveform * (1 << 15)
            mat = kaldi_fbank(waveform, num_mel_bins=self.n_mels,
                              frame_length=min(self.frame_length, n / self.fs * 1000),
                              frame_shift=self.frame_shift, dither=self.dither, energy_floor=0.0,
                              window_type=self.window, sample_frequency=self.fs, snip_edges=self.snip_edges)
            if self.lfr_m != 1 or self.lfr_n != 1:
                mat = apply_lfr(mat, self.lfr_m, self.lfr_n)
            if self.cmvn is not None:
                mat = apply_cmvn(mat, self.cmvn)
            feats.append(mat)
        lengths = torch.as_tensor([f.size(0) for f in feats])
        padded = feats[0][None] if len(feats) == 1 else pad_sequence(feats, batch_first=True, padding_value=0.0)
        return padded, lengths


@functools.lru_cache(maxsize=4)
def _whisper_mel_filters(fs: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Whisper's mel filters (librosa's Slaney mel scale and norm, as whisper/assets/mel_filters.npz)."""
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=fs, n_fft=n_fft, n_mels=n_mels)).float()


def whisper_log_mel(waveform: torch.Tensor, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160,
                    fs: int = 16000) -> torch.Tensor:
    """Whisper's log-mel spectrogram of one waveform: (frames, n_mels), frames = len // hop_length.

    Same steps as ``whisper.audio.log_mel_spectrogram``: centred STFT with a Hann window, the last
    frame dropped, power, mel, log10 floored at 1e-10, dynamic range cut to 8 (over this utterance,
    which is what Whisper's max over a zero-padded 30 s window amounts to), then ``(x + 4) / 4``.
    """
    wav = waveform.reshape(-1).float()
    if wav.numel() < hop_length:
        return torch.zeros((0, n_mels), dtype=torch.float32)
    stft = torch.stft(wav, n_fft, hop_length, window=_window("hanning_periodic", n_fft), return_complex=True)
    power = stft[..., :-1].abs().square()
    mel = _whisper_mel_filters(fs, n_fft, n_mels) @ power
    log_spec = mel.clamp(min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).t().contiguous()


@tables.register("frontend_classes", "WhisperLogMelFrontend")
class WhisperLogMelFrontend(torch.nn.Module):
    """Whisper's 80-bin log-mel (100 frames/s) for a batch of different lengths.

    FunASR's ``WhisperFrontend`` takes every item's length from the first one; this computes each
    item on its own samples and pads the batch. No CMVN: Whisper normalises inside the features.
    """

    def __init__(self, fs: int = 16000, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160, **unused):
        super().__init__()
        if fs != 16000:
            raise ValueError(f"WhisperLogMelFrontend: Whisper's features are defined at 16 kHz, not fs={fs}")
        self.fs, self.n_mels, self.n_fft, self.hop_length = fs, n_mels, n_fft, hop_length
        self.cmvn = None

    def output_size(self) -> int:
        return self.n_mels

    def forward(self, input: torch.Tensor, input_lengths, **kwargs):
        feats = [whisper_log_mel(input[i][: int(input_lengths[i])], self.n_mels, self.n_fft, self.hop_length, self.fs)
                 for i in range(input.size(0))]
        lengths = torch.as_tensor([f.size(0) for f in feats])
        padded = feats[0][None] if len(feats) == 1 else pad_sequence(feats, batch_first=True, padding_value=0.0)
        return padded, lengths

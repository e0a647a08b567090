"""funasr_clsr.frontend: the torch Kaldi fbank against FunASR's kaldi-native-fbank path."""
import numpy as np
import pytest
import torch

from funasr.frontends.wav_frontend import WavFrontend
from funasr.register import tables
from funasr.utils import fbank as funasr_fbank

from funasr_clsr.frontend import WavFrontendVectorized, kaldi_fbank

FUNASR_KW = dict(num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0, energy_floor=0.0,
                 window_type="hamming", sample_frequency=16000, snip_edges=True)


def _speechlike(seconds=3.0, fs=16000, seed=0):
    """A chirp with harmonics, silence and noise: spectra from near-empty to full."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    f0 = 120 + 80 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / fs
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    wav = 0.3 * voiced * (np.sin(2 * np.pi * 2 * t) > -0.3) + 0.01 * rng.standard_normal(t.size)
    wav[: fs // 4] = 0.0  # digital silence: the log floor
    return torch.from_numpy(wav.astype(np.float32))


@pytest.mark.parametrize("window", ["hamming", "povey", "hanning", "rectangular"])
def test_matches_kaldi_native_fbank(window):
    wav = _speechlike() * 32768
    kw = dict(FUNASR_KW, window_type=window)
    ref = funasr_fbank.fbank(wav[None], **kw)
    ours = kaldi_fbank(wav[None], **kw)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().mean() < 1e-4
    assert (ours - ref).abs().max() < 5e-3


@pytest.mark.parametrize("samples", [0, 399, 400, 401, 560, 16000 * 2 + 7])
def test_frame_count_matches_snip_edges(samples):
    wav = torch.randn(samples) * 1000
    ref = funasr_fbank.fbank(wav[None], **FUNASR_KW) if samples >= 400 else torch.zeros(0, 80)
    assert kaldi_fbank(wav[None], **FUNASR_KW).shape == ref.shape


def test_frontend_gives_wavfrontend_features(tmp_path):
    dim = 80 * 7
    cmvn = tmp_path / "am.mvn"
    shift = " ".join(["-1.5"] * dim)
    scale = " ".join(["0.25"] * dim)
    cmvn.write_text(f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {shift} ]\n"
                    f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scale} ]\n</Nnet>\n")
    conf = dict(cmvn_file=str(cmvn), n_mels=80, lfr_m=7, lfr_n=6, dither=0.0)
    waves = [_speechlike(2.0, seed=1), _speechlike(3.1, seed=2)]
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([w.numel() for w in waves])
    ref, ref_len = WavFrontend(**conf)(batch, lengths)
    ours, our_len = WavFrontendVectorized(**conf)(batch, lengths)
    assert our_len.tolist() == ref_len.tolist()
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() < 5e-3 * 0.25 * 2


def test_registered_for_configs():
    assert tables.frontend_classes.get("WavFrontendVectorized") is WavFrontendVectorized


def test_dither_goes_to_funasr_fbank(monkeypatch):
    calls = []
    monkeypatch.setattr(funasr_fbank, "fbank", lambda wav, **kw: calls.append(kw) or torch.zeros(1, 80))
    kaldi_fbank(torch.randn(800)[None], **dict(FUNASR_KW, dither=1.0))
    assert calls and calls[0]["dither"] == 1.0


def test_stereo_is_refused():
    with pytest.raises(ValueError, match="one channel"):
        kaldi_fbank(torch.randn(2, 1600), **FUNASR_KW)


def test_whisper_log_mel_matches_faster_whisper_and_batches_per_item():
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    import numpy as np
    import torch

    from funasr_clsr.frontend import WhisperLogMelFrontend, whisper_log_mel

    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(32000))
    wav = wav.astype(np.float32)
    ref = fw.FeatureExtractor(80)(wav, padding=0)  # (80, frames)
    ours = whisper_log_mel(torch.from_numpy(wav))
    assert ours.shape == (ref.shape[1], 80)
    assert float((ours - torch.from_numpy(ref).t()).abs().max()) < 1e-3
    fe = WhisperLogMelFrontend()
    short = torch.from_numpy(wav[:8000])
    batch = torch.zeros(2, 32000)
    batch[0], batch[1, :8000] = torch.from_numpy(wav), short
    feats, lens = fe(batch, torch.tensor([32000, 8000]))
    assert lens.tolist() == [200, 50]  # each item's own length, not the first item's
    torch.testing.assert_close(feats[1, :50], whisper_log_mel(short))

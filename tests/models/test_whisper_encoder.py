"""WhisperAudioEncoder: batches of mixed lengths, inputs past 30 s, the frozen-output cache, top-block training."""
from __future__ import annotations

import logging

import pytest
import torch

from funasr_clsr.models.whisper_encoder import ENV_CACHE, WhisperAudioEncoder

TINY = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
        "num_mel_bins": 80, "max_source_positions": 50}  # windows of 100 mel frames = 1 s


def tiny(seed: int = 0, **kw) -> WhisperAudioEncoder:
    torch.manual_seed(seed)
    enc = WhisperAudioEncoder(whisper_config=TINY, **kw)
    with torch.no_grad():  # non-trivial norms and biases
        for p in enc.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return enc.eval()


def feats(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), 80, generator=g)
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
    return x, torch.tensor(lengths)


@pytest.fixture(autouse=True)
def no_env_cache(monkeypatch):
    monkeypatch.delenv(ENV_CACHE, raising=False)


def test_mixed_length_batch_equals_each_item_alone():
    enc = tiny()
    x, n = feats([90, 37, 64])
    with torch.no_grad():
        out, olens, _ = enc(x, n)
        for i in range(3):
            alone, alone_len, _ = enc(x[i: i + 1, : n[i]], n[i: i + 1])
            assert int(olens[i]) == int(alone_len[0]) == (int(n[i]) - 1) // 2 + 1
            torch.testing.assert_close(out[i, : olens[i]], alone[0], atol=1e-5, rtol=1e-4)


def test_input_past_the_positional_range_is_encoded_window_by_window():
    enc = tiny()
    x, n = feats([250])  # 2.5 windows of 100 frames
    with torch.no_grad():
        out, olens, _ = enc(x, n)
        parts = [enc(x[:, a:b], torch.tensor([b - a]))[0][0] for a, b in ((0, 100), (100, 200), (200, 250))]
    assert int(olens[0]) == sum(p.size(0) for p in parts) == 50 + 50 + 25
    torch.testing.assert_close(out[0], torch.cat(parts), atol=1e-5, rtol=1e-4)


def test_recording_over_max_windows_is_refused_with_one_line():
    enc = tiny(max_windows=2)
    x, n = feats([250])
    with pytest.raises(ValueError, match="longer than this encoder's limit of 2 windows"):
        enc(x, n)


def test_padded_layout_differs_from_unpadded_and_keeps_lengths():
    x, n = feats([60])
    with torch.no_grad():
        a, la, _ = tiny(input_layout="unpadded")(x, n)
        b, lb, _ = tiny(input_layout="padded")(x, n)
    assert torch.equal(la, lb) and a.shape == b.shape
    assert not torch.allclose(a, b, atol=1e-3)  # the padded window attends over 100 frames, not 60


def test_cache_hits_give_identical_outputs_and_corrupt_entries_are_rebuilt(tmp_path, caplog):
    enc = tiny(cache_dir=str(tmp_path))
    x, n = feats([80, 50])
    with torch.no_grad():
        first = enc(x, n)[0]
        assert (enc.cache.misses, enc.cache.hits) == (2, 0)
        again = enc(x, n)[0]
    assert enc.cache.hits == 2 and torch.equal(first, again)
    entries = sorted(tmp_path.rglob("*.pt"))
    assert len(entries) == 2
    # each entry holds its own rows, not the batch's whole storage
    assert max(e.stat().st_size for e in entries) < 40 * 32 * 4 + 4096
    raw = bytearray(entries[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a flipped byte inside the payload
    entries[0].write_bytes(bytes(raw))
    entries[1].write_bytes(entries[1].read_bytes()[:100])  # a torn write
    with caplog.at_level(logging.WARNING), torch.no_grad():
        third = enc(x, n)[0]
    assert enc.cache.rebuilt == 2 and "recomputing" in caplog.text
    torch.testing.assert_close(third, first)
    # another model's weights never read these entries
    other = tiny(seed=1, cache_dir=str(tmp_path))
    assert other.fingerprint() != enc.fingerprint()
    with torch.no_grad():
        other(x, n)
    assert other.cache.hits == 0


def test_entry_moved_under_another_key_is_never_used(tmp_path):
    enc = tiny(cache_dir=str(tmp_path))
    x1, n1 = feats([40], seed=1)
    x2, n2 = feats([40], seed=2)
    with torch.no_grad():
        enc(x1, n1)
        right = tiny(cache_dir=None)(x2, n2)[0]
    key2 = enc.cache.key(enc.fingerprint(), x2[0, :40])
    (src,) = list(tmp_path.rglob("*.pt"))
    dst = enc.cache._path(key2)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    with torch.no_grad():
        got = enc(x2, n2)[0]
    assert enc.cache.rebuilt == 1
    torch.testing.assert_close(got, right)


def test_top_blocks_train_with_the_cache_on(tmp_path):
    enc = tiny(trainable_top_blocks=1, cache_dir=str(tmp_path)).train()
    frozen = [p for n, p in enc.named_parameters() if n.startswith(("whisper.conv", "whisper.layers.0."))]
    top = [p for n, p in enc.named_parameters() if n.startswith(("whisper.layers.1.", "whisper.layer_norm"))]
    assert frozen and top and not any(p.requires_grad for p in frozen) and all(p.requires_grad for p in top)
    assert not enc.whisper.layers[0].training and enc.whisper.layers[1].training
    x, n = feats([70, 30])
    for _ in range(2):  # the second pass reads the bottom from the cache
        out, olens, _ = enc(x, n)
        out.sum().backward()
    assert enc.cache.hits == 2 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in top)


def test_loading_other_frozen_weights_never_reads_the_old_entries(tmp_path):
    """A released checkpoint can carry trained top blocks that a frozen config then keeps fixed: the cache key
    must follow the weights loaded after construction (and after a first encode), never the ones built with."""
    enc = tiny(cache_dir=str(tmp_path))
    x, n = feats([60])
    with torch.no_grad():
        enc(x, n)
    released = tiny(seed=1).state_dict()
    enc.load_state_dict(released)
    with torch.no_grad():
        got = enc(x, n)[0]
        right = tiny(seed=1)(x, n)[0]
    assert enc.cache.hits == 0
    torch.testing.assert_close(got, right)


def test_unfrozen_encoder_is_never_cached(tmp_path):
    enc = tiny(freeze=False, cache_dir=str(tmp_path))
    assert enc.cache is None and all(p.requires_grad for n, p in enc.named_parameters() if "embed_positions" not in n)


def test_wrong_feature_size_and_missing_folder_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="expects 80 mel bins"):
        WhisperAudioEncoder(input_size=560, whisper_config=TINY)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        WhisperAudioEncoder(whisper_path=str(tmp_path))


def test_output_stride_averages_runs_of_frames():
    x, n = feats([90, 37])
    with torch.no_grad():
        full, flens, _ = tiny()(x, n)
        half, hlens, _ = tiny(output_stride=2)(x, n)
    assert hlens.tolist() == [(int(v) + 1) // 2 for v in flens]  # 45 -> 23, 19 -> 10
    torch.testing.assert_close(half[0, 0], full[0, :2].mean(0))
    torch.testing.assert_close(half[1, int(hlens[1]) - 1], full[1, int(flens[1]) - 1])  # a last run of one


def test_full_windows_and_remainders_are_encoded_apart_with_the_same_outputs(monkeypatch):
    """A batch of 2.5-window items: full windows in one encoder call, remainders in another, no padding."""
    enc = tiny()
    x, n = feats([250, 250, 180])
    calls = []
    bottom = enc._bottom
    monkeypatch.setattr(enc, "_bottom", lambda b, lens: calls.append((b.size(0), b.size(1))) or bottom(b, lens))
    with torch.no_grad():
        out, olens, _ = enc(x, n)
    assert calls == [(5, 100), (3, 80)]  # 5 full windows; the remainders (50, 50, 80 frames) padded to 80
    monkeypatch.undo()
    with torch.no_grad():
        for i in range(3):
            alone, alone_len, _ = enc(x[i: i + 1, : n[i]], n[i: i + 1])
            torch.testing.assert_close(out[i, : olens[i]], alone[0], atol=1e-5, rtol=1e-4)

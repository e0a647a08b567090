"""models.fused_attention: FunASR's SAN-M attention with the fused kernel gives FunASR's outputs and gradients."""
import pytest
import torch

from funasr.models.sanm.attention import MultiHeadedAttentionCrossAtt, MultiHeadedAttentionSANM
from funasr.register import tables

import funasr_clsr  # noqa: F401  (registers the models)
from funasr_clsr.models.fused_attention import FusedAttentionCrossAtt, FusedAttentionSANM, use_fused_attention

ENC_CONF = dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=3, dropout_rate=0.0,
                positional_dropout_rate=0.0, attention_dropout_rate=0.0, input_layer="pe",
                normalize_before=True,
                kernel_size=5, sanm_shfit=0, selfattention_layer_type="sanm")


def _encoder():
    from funasr.models.transformer.embedding import SinusoidalPositionEncoder

    torch.manual_seed(0)
    conf = dict(ENC_CONF, pos_enc_class=SinusoidalPositionEncoder)
    return tables.encoder_classes.get("SANMEncoder")(input_size=20, **conf)


def _batch():
    torch.manual_seed(1)
    return torch.randn(3, 17, 20), torch.tensor([17, 11, 4])


def _valid(out, lengths):
    return [out[i, : int(n)] for i, n in enumerate(lengths)]


def test_encoder_outputs_and_gradients_match_funasr():
    enc = _encoder()
    x, lengths = _batch()
    results = {}
    for fused in (True, False):  # switches every block there and back
        assert use_fused_attention(enc, fused) == 3
        enc.zero_grad()
        xin = x.clone().requires_grad_(True)
        out, out_lens, _ = enc(xin, lengths)
        sum(v.square().sum() for v in _valid(out, out_lens)).backward()
        grads = [p.grad.clone() for p in enc.parameters()]
        results[fused] = (_valid(out, out_lens), grads, xin.grad.clone())
    for a, b in zip(results[False][0], results[True][0]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(results[False][1], results[True][1]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(results[False][2], results[True][2], atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_and_attention_maps_use_funasr_path():
    torch.manual_seed(2)
    att = MultiHeadedAttentionCrossAtt(4, 32, 0.0).eval()
    x, memory = torch.randn(2, 6, 32), torch.randn(2, 9, 32)
    mask = torch.ones(2, 1, 9)
    mask[1, :, 5:] = 0
    ref = att(x, memory, mask)
    use_fused_attention(att)
    assert type(att) is FusedAttentionCrossAtt
    torch.testing.assert_close(att(x, memory, mask), ref, atol=1e-5, rtol=1e-5)
    out, attn = att(x, memory, mask, ret_attn=True)  # the map is only there on FunASR's path
    assert attn.shape == (2, 4, 6, 9) and float(attn[1, :, :, 5:].detach().abs().max()) == 0.0


def test_query_with_nothing_to_attend_to_gives_funasr_zeros_not_nan():
    torch.manual_seed(3)
    att = MultiHeadedAttentionSANM(4, 32, 32, 0.0, kernel_size=3).eval()
    x = torch.randn(2, 5, 32)
    mask = torch.ones(2, 1, 5)
    mask[1] = 0  # an empty utterance in the batch
    ref = att(x, mask)
    use_fused_attention(att)
    out = att(x, mask)
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_clsr_uses_it_by_default_and_config_can_turn_it_off():
    from tests.clsr_testing import build_tiny

    kinds = {type(m) for m in build_tiny().model.modules()}
    assert FusedAttentionSANM in kinds and FusedAttentionCrossAtt in kinds
    kinds = {type(m) for m in build_tiny(fused_attention=False).model.modules()}
    assert FusedAttentionSANM not in kinds and MultiHeadedAttentionSANM in kinds


@pytest.mark.parametrize("enabled", [True, False])
def test_switching_keeps_parameters(enabled):
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    use_fused_attention(enc, enabled)
    after = enc.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

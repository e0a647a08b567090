"""FunASR's SAN-M attention with softmax(QK^T)V done by torch's fused ``scaled_dot_product_attention``.

FunASR computes the scores, masks them (two ``masked_fill`` copies), softmaxes and multiplies
step by step: at the paper's size a quarter of the encoder's time goes to those copies and
elementwise passes rather than to the matrix products (docs/benchmarks.md, "Where CLSR's time
goes"). The subclasses below keep FunASR's parameters, projections and FSMN memory block and
only replace that step, so checkpoints and outputs are unchanged (tests compare both).
``use_fused_attention(module)`` switches every FunASR SAN-M attention inside ``module``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from funasr.models.sanm.attention import MultiHeadedAttentionCrossAtt, MultiHeadedAttentionSANM


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """FunASR's (B, 1|T1, T2) 1=keep mask as SDPA's boolean (B, 1, 1|T1, T2); None when nothing is masked."""
    if mask is None:
        return None
    keep = mask.unsqueeze(1).bool()
    return None if bool(keep.all()) else keep


def _attend(module, q_h, k_h, v_h, mask) -> torch.Tensor:
    """(B, H, T1, d_k) heads -> linear_out((B, T1, H*d_k)), the way FunASR's forward_attention ends."""
    keep = _key_mask(mask)
    dropout = module.dropout.p if module.training else 0.0
    out = F.scaled_dot_product_attention(q_h, k_h, v_h, attn_mask=keep, dropout_p=dropout)
    b = out.size(0)
    return module.linear_out(out.transpose(1, 2).reshape(b, -1, module.h * module.d_k))


def _has_empty_rows(mask: torch.Tensor | None) -> bool:
    # FunASR returns zeros for a query that may attend to nothing; SDPA would return NaN
    return mask is not None and not bool(mask.bool().any(-1).all())


class FusedAttentionSANM(MultiHeadedAttentionSANM):
    """Encoder self-attention + FSMN memory (FunASR's MultiHeadedAttentionSANM), fused softmax(QK^T)V."""

    def forward(self, x, mask, mask_shfit_chunk=None, mask_att_chunk_encoder=None):
        if mask_att_chunk_encoder is not None or _has_empty_rows(mask):  # streaming chunks: FunASR's path
            return super().forward(x, mask, mask_shfit_chunk, mask_att_chunk_encoder)
        q_h, k_h, v_h, v = self.forward_qkv(x)
        fsmn_memory = self.forward_fsmn(v, mask, mask_shfit_chunk)
        return _attend(self, q_h, k_h, v_h, mask) + fsmn_memory


class FusedAttentionCrossAtt(MultiHeadedAttentionCrossAtt):
    """Decoder source attention (FunASR's MultiHeadedAttentionCrossAtt), fused softmax(QK^T)V."""

    def forward(self, x, memory, memory_mask, ret_attn=False):
        if ret_attn or _has_empty_rows(memory_mask):  # the attention map is wanted: FunASR's path
            return super().forward(x, memory, memory_mask, ret_attn=ret_attn)
        q_h, k_h, v_h = self.forward_qkv(x, memory)
        return _attend(self, q_h, k_h, v_h, memory_mask)


_FUSED = {MultiHeadedAttentionSANM: FusedAttentionSANM, MultiHeadedAttentionCrossAtt: FusedAttentionCrossAtt}


def use_fused_attention(module: torch.nn.Module, enabled: bool = True) -> int:
    """Switch FunASR's SAN-M attention modules inside ``module`` to (or back from) the fused ones.

    Only the class changes (same parameters and buffers); returns how many modules were switched.
    """
    table = _FUSED if enabled else {v: k for k, v in _FUSED.items()}
    switched = 0
    for sub in module.modules():
        target = table.get(type(sub))
        if target is not None:
            sub.__class__ = target
            switched += 1
    return switched

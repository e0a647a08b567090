"""The VQ adaptor: token posteriors -> text-like embeddings in the text encoder's input space."""
from __future__ import annotations

import torch
from torch import nn


class _StraightThroughLookup(torch.autograd.Function):
    """Forward: one-hot(argmax(logits)) @ W, computed as an exact row lookup.

    Backward: the gradient of softmax(logits / gamma) @ W (straight-through
    estimator). Writing it as a Function keeps the forward bit-exact (no
    ``hard + soft - soft.detach()`` rounding) and never materialises the
    (B, N, V) one-hot matrix in the forward pass.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, weight: torch.Tensor, gamma: float):
        ids = logits.argmax(-1)
        ctx.save_for_backward(logits, weight, ids)
        ctx.gamma = gamma
        return weight[ids]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, weight, ids = ctx.saved_tensors
        grad_logits = grad_weight = None
        if ctx.needs_input_grad[0]:
            probs = torch.softmax(logits.float() / ctx.gamma, dim=-1)
            grad_probs = grad_out.float() @ weight.float().t()  # (..., V)
            inner = (grad_probs * probs).sum(-1, keepdim=True)
            grad_logits = (probs * (grad_probs - inner) / ctx.gamma).to(logits.dtype)
        if ctx.needs_input_grad[1]:
            # q_st's forward value is one-hot, so dL/dW = onehot^T @ grad (a scatter-add)
            grad_weight = torch.zeros_like(weight)
            grad_weight.index_add_(0, ids.reshape(-1), grad_out.reshape(-1, grad_out.size(-1)).to(weight.dtype))
        return grad_logits, grad_weight, None


class VQAdaptor(nn.Module):
    """q_i = argmax d_i; E = onehot(q) @ W_te forward, softmax(d / gamma) @ W_te backward."""

    def __init__(self, gamma: float = 0.1):
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"VQ temperature gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """logits (..., V) -> (..., H). ``rows`` (V,): the row of ``weight`` for each logit (a vocabulary
        subset of the text encoder's); without it, logit i is row i."""
        if not logits.requires_grad:  # the forward value alone: a lookup, no (V, H) sub-matrix copied
            ids = logits.argmax(-1)
            return weight[ids if rows is None else rows[ids]]
        sub = weight if rows is None else weight.index_select(0, rows)
        return _StraightThroughLookup.apply(logits, sub, self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"

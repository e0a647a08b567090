"""CTC forced alignment, and CIF weights that fire where the CTC head puts each token.

Why: trained from nothing, a Paraformer's CIF predictor only learns *how many* tokens an
utterance has (the MAE loss); *where* they are it must discover through the decoder, which
needs many epochs. Measured on the offline recipe (2 CPU cores): the CTC head reached
1.9 nats/token while the CIF decoder still predicted 10% of tokens. The CTC head learns
alignment early, so its Viterbi path gives each token a frame; pulling the predictor's
weights (alphas) towards one unit of weight around that frame makes each acoustic embedding
the encoder state the CTC head already decodes. Training only: inference is plain CIF.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def ctc_token_frames(log_probs: torch.Tensor, in_lens: torch.Tensor, targets: torch.Tensor,
                     target_lens: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """First frame of each target token on the most likely CTC path (Viterbi), batched.

    log_probs: (B, T, V) log-softmax; targets: (B, L) ids (padding past ``target_lens``
    ignored). Returns (B, L) long frame indices, -1 past each target length and for an
    utterance too short for its targets (``T < L + repeats``: no CTC path exists).
    """
    bsz, n_frames, _ = log_probs.shape
    n_tok = targets.size(1)
    device = log_probs.device
    out = torch.full((bsz, n_tok), -1, dtype=torch.long, device=device)
    if n_tok == 0 or n_frames == 0:
        return out
    safe_targets = targets.clamp(min=0)
    # extended label sequence: blank y1 blank y2 ... yL blank
    n_states = 2 * n_tok + 1
    ext = torch.full((bsz, n_states), blank, dtype=torch.long, device=device)
    ext[:, 1::2] = safe_targets
    state_ok = torch.arange(n_states, device=device)[None, :] < (2 * target_lens + 1)[:, None]
    emit = log_probs.gather(2, ext[:, None, :].expand(bsz, n_frames, n_states))  # (B, T, S)
    neg = torch.finfo(log_probs.dtype).min / 4
    # a skip over a blank (s-2 -> s) is allowed into a token that differs from the one before it
    can_skip = torch.zeros((bsz, n_states), dtype=torch.bool, device=device)
    can_skip[:, 3::2] = safe_targets[:, 1:] != safe_targets[:, :-1]

    score = torch.full((bsz, n_states), neg, device=device, dtype=log_probs.dtype)
    score[:, 0] = emit[:, 0, 0]
    score[:, 1] = emit[:, 0, 1]
    score = score.masked_fill(~state_ok, neg)
    back = torch.zeros((bsz, n_frames, n_states), dtype=torch.uint8, device=device)
    for t in range(1, n_frames):
        stay = score
        step = F.pad(score, (1, 0), value=neg)[:, :-1]
        skip = F.pad(score, (2, 0), value=neg)[:, :-2].masked_fill(~can_skip, neg)
        best, arg = torch.stack([stay, step, skip], -1).max(-1)
        new = (best + emit[:, t]).masked_fill(~state_ok, neg)
        live = (t < in_lens)[:, None]  # past an utterance's end its path just stays put
        score = torch.where(live, new, score)
        back[:, t] = torch.where(live, arg, torch.zeros_like(arg)).to(torch.uint8)

    last = (2 * target_lens).clamp(max=n_states - 1)
    end_blank = score.gather(1, last[:, None])[:, 0]
    end_token = score.gather(1, (last - 1).clamp(min=0)[:, None])[:, 0]
    state = torch.where(end_token > end_blank, last - 1, last)
    feasible = torch.maximum(end_blank, end_token) > neg / 2
    path = torch.empty((bsz, n_frames), dtype=torch.long, device=device)
    rows = torch.arange(bsz, device=device)
    for t in range(n_frames - 1, -1, -1):
        path[:, t] = state
        state = state - back[rows, t, state].long()
    # a token starts where the path enters its (odd) state
    entered = (path % 2 == 1) & torch.cat([torch.ones_like(path[:, :1], dtype=torch.bool),
                                           path[:, 1:] != path[:, :-1]], 1)
    entered &= torch.arange(n_frames, device=device)[None, :] < in_lens[:, None]
    for b in range(bsz):
        if not feasible[b] or int(target_lens[b]) == 0:
            continue
        frames = entered[b].nonzero()[:, 0]
        if frames.numel() == int(target_lens[b]):
            out[b, : frames.numel()] = frames
    return out


def cif_alpha_targets(token_frames: torch.Tensor, in_lens: torch.Tensor, n_frames: int,
                      kernel=(0.25, 0.5, 0.25)) -> torch.Tensor:
    """(B, T) CIF weights: one unit per token, spread by ``kernel`` around its CTC frame.

    Weight that would fall outside an utterance is put on its first/last frame, so every
    token keeps exactly one unit; entries of ``token_frames`` < 0 contribute nothing.
    """
    bsz = token_frames.size(0)
    out = torch.zeros((bsz, n_frames), device=token_frames.device)
    valid = token_frames >= 0
    rows = torch.arange(bsz, device=token_frames.device)[:, None].expand_as(token_frames)[valid]
    frames = token_frames[valid]
    last = (in_lens.to(token_frames.device)[rows] - 1).clamp(min=0)
    half = len(kernel) // 2
    for j, weight in enumerate(kernel):
        pos = torch.minimum((frames + j - half).clamp(min=0), last)
        out.index_put_((rows, pos), torch.full_like(pos, weight, dtype=out.dtype), accumulate=True)
    return out


def ctc_greedy_ids(log_probs: torch.Tensor, in_lens: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Greedy CTC transcripts: the best id per frame, repeats merged, blanks dropped, per utterance."""
    best = log_probs.argmax(-1).tolist()
    out = []
    for row, n in zip(best, in_lens.tolist()):
        row = row[: int(n)]
        out.append([t for j, t in enumerate(row) if t != blank and (j == 0 or row[j - 1] != t)])
    return out

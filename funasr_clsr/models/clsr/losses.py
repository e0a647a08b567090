"""Losses FunASR does not ship: symmetric InfoNCE and MWER by negative sampling."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_info_nce(questions: torch.Tensor, contexts: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean of question->context and context->question InfoNCE over in-batch negatives.

    Both inputs are (B, D) unit vectors; row i of each is a positive pair.
    """
    if questions.shape != contexts.shape:
        raise ValueError(f"question/context embedding shapes differ: {tuple(questions.shape)} vs "
                         f"{tuple(contexts.shape)}")
    logits = questions @ contexts.t() / temperature
    labels = torch.arange(logits.size(0), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def mwer_negative_sampling(logits: torch.Tensor, targets: torch.Tensor, ignore_id: int = -1,
                           num_paths: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Minimum word error rate loss over an N-best list drawn by negative sampling.

    The N-best list per utterance is the greedy path plus ``num_paths - 1`` paths
    sampled from the decoder posteriors (Paraformer's recipe for a non-autoregressive
    decoder, where beam search has nothing to search). Paths are renormalised over the
    list; the loss is the expected number of token errors relative to the list's mean.
    The CIF length is teacher-forced to the reference length during training, so
    hypotheses are position-aligned with it and errors are counted per position.

    logits: (B, N, V) decoder logits; targets: (B, N) with ``ignore_id`` padding.
    """
    if num_paths < 2:
        raise ValueError("MWER needs at least 2 paths")
    mask = targets.ne(ignore_id)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    bsz, length, vocab = log_probs.shape
    with torch.no_grad():
        flat = log_probs.detach().exp().reshape(-1, vocab)
        sampled = torch.multinomial(flat, num_paths - 1, replacement=True, generator=generator)
        sampled = sampled.reshape(bsz, length, num_paths - 1).permute(0, 2, 1)
        greedy = log_probs.argmax(-1).unsqueeze(1)
        paths = torch.cat([greedy, sampled], dim=1)  # (B, P, N)
        safe_targets = targets.masked_fill(~mask, 0).unsqueeze(1)
        errors = ((paths != safe_targets) & mask.unsqueeze(1)).sum(-1).float()  # (B, P)
    path_scores = torch.gather(log_probs.unsqueeze(1).expand(bsz, num_paths, length, vocab), 3,
                               paths.unsqueeze(-1)).squeeze(-1)
    path_scores = (path_scores * mask.unsqueeze(1)).sum(-1)  # (B, P)
    path_probs = torch.softmax(path_scores, dim=-1)
    relative_errors = errors - errors.mean(-1, keepdim=True)
    return (path_probs * relative_errors).sum(-1).mean()

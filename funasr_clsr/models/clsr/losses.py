"""Losses FunASR does not ship: symmetric InfoNCE and MWER by negative sampling."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_info_nce(questions: torch.Tensor, contexts: torch.Tensor, temperature: float,
                       extra_questions: torch.Tensor | None = None, question_mask: torch.Tensor | None = None,
                       extra_contexts: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                       pair_keys: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of question->context and context->question InfoNCE over in-batch negatives.

    Both inputs are (B, D) unit vectors; row i of each is a positive pair.
    ``extra_questions`` (M, D) are further negatives for each context, ``extra_contexts``
    (K, D) for each question (banks of earlier batches, see ``NegativeBank``); the (B, M) /
    (B, K) masks are True where an entry must not count as a negative (a copy of a pair in
    this batch, banked earlier). ``pair_keys`` (B,) identify each pair's context: rows of the
    batch that share a key are copies of one context, so they are not each other's negatives.
    """
    if questions.shape != contexts.shape:
        raise ValueError(f"question/context embedding shapes differ: {tuple(questions.shape)} vs "
                         f"{tuple(contexts.shape)}")
    logits = questions @ contexts.t() / temperature
    labels = torch.arange(logits.size(0), device=logits.device)
    if pair_keys is not None:
        keys = pair_keys.to(logits.device)
        same = keys[:, None].eq(keys[None, :]) & ~torch.eye(len(keys), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same, float("-inf"))

    def with_bank(batch_logits, anchors, bank, mask):
        if bank is None or not bank.numel():
            return batch_logits
        extra = anchors @ bank.t().to(anchors.dtype) / temperature
        if mask is not None:
            extra = extra.masked_fill(mask, float("-inf"))
        return torch.cat([batch_logits, extra], dim=1)

    q2c = with_bank(logits, questions, extra_contexts, context_mask)
    c2q = with_bank(logits.t(), contexts, extra_questions, question_mask)
    return 0.5 * (F.cross_entropy(q2c, labels) + F.cross_entropy(c2q, labels))


def mwer_negative_sampling(logits: torch.Tensor, targets: torch.Tensor, ignore_id: int = -1,
                           num_paths: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Minimum word error rate loss over an N-best list drawn by negative sampling.

    The N-best list per utterance is the greedy path plus ``num_paths - 1`` paths
    sampled from the decoder posteriors (Paraformer's recipe for a non-autoregressive
    decoder, where beam search has nothing to search). Paths are renormalised over the
    list (a path drawn twice counts once); the loss is the expected number of token errors
    relative to the list's mean.
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
        # sampling is with replacement: a path drawn twice is one hypothesis of the N-best list
        masked = paths.masked_fill(~mask.unsqueeze(1), 0)
        same = (masked.unsqueeze(2) == masked.unsqueeze(1)).all(-1)  # (B, P, P)
        earlier = torch.ones(num_paths, num_paths, dtype=torch.bool, device=paths.device).tril(-1)
        unique = ~(same & earlier).any(-1)  # (B, P): no earlier copy
    path_scores = torch.gather(log_probs.unsqueeze(1).expand(bsz, num_paths, length, vocab), 3,
                               paths.unsqueeze(-1)).squeeze(-1)
    path_scores = (path_scores * mask.unsqueeze(1)).sum(-1)  # (B, P)
    path_probs = torch.softmax(path_scores.masked_fill(~unique, float("-inf")), dim=-1)
    n_unique = unique.sum(-1, keepdim=True).float()
    mean_errors = (errors * unique).sum(-1, keepdim=True) / n_unique
    relative_errors = (errors - mean_errors) * unique
    return (path_probs * relative_errors).sum(-1).mean()


class NegativeBank:
    """The last ``size`` training embeddings of one side (questions or contexts), kept as extra
    InfoNCE negatives for the other side.

    A batch of a few long contexts has only a handful of in-batch negatives, and they are
    rarely the hard ones that decide retrieval among a thousand contexts. With a frozen text
    encoder a question's vector never changes, so a question bank is exact; a context bank
    lags the speech branch by the updates since each entry was made (a MoCo-style queue;
    small with a small learning rate). Kept in memory only (not in model.pt): it refills
    within an epoch.
    """

    def __init__(self, size: int):
        if size <= 0:
            raise ValueError(f"negative bank size must be > 0, got {size}")
        self.size = int(size)
        self.vectors: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None

    @staticmethod
    def _keys(items) -> torch.Tensor:
        return torch.tensor([hash(t) for t in items], dtype=torch.int64)

    def negatives(self, items) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Bank vectors (M, D) and a (B, M) mask of the entries to leave out: the batch's own
        items (hashable keys), banked earlier (a positive, or already an in-batch negative)."""
        if self.vectors is None:
            return None, None
        in_batch = self._keys(items).unsqueeze(1).eq(self.keys.unsqueeze(0)).any(0)
        return self.vectors, in_batch.expand(len(items), -1).to(self.vectors.device)

    def add(self, vectors: torch.Tensor, items) -> None:
        vectors, keys = vectors.detach(), self._keys(items)
        if self.vectors is not None:
            older = ~self.keys.unsqueeze(1).eq(keys.unsqueeze(0)).any(1)  # an item is banked once
            vectors = torch.cat([vectors, self.vectors[older.to(self.vectors.device)].to(vectors.device)])
            keys = torch.cat([keys, self.keys[older]])
        self.vectors, self.keys = vectors[: self.size], keys[: self.size]

import math

import pytest
import torch
import torch.nn.functional as F

from funasr_clsr.models.clsr.losses import NegativeBank, mwer_negative_sampling, symmetric_info_nce


def _unit_rows(*counts, dim=8):
    torch.manual_seed(0)
    return [F.normalize(torch.randn(n, dim), dim=-1) for n in counts]


def _directions(q, c, tau, bank_q=None, bank_c=None):
    """Reference q->c and c->q cross-entropies, written out (banks appended as extra columns)."""
    sim = q @ c.t() / tau
    labels = torch.arange(len(q))
    q2c = sim if bank_c is None else torch.cat([sim, q @ bank_c.t() / tau], 1)
    c2q = sim.t() if bank_q is None else torch.cat([sim.t(), c @ bank_q.t() / tau], 1)
    return F.cross_entropy(q2c, labels), F.cross_entropy(c2q, labels)


def test_symmetric_info_nce_averages_both_directions():
    q, c = _unit_rows(4, 4)
    tau = 0.05
    q2c, c2q = _directions(q, c, tau)
    assert not torch.isclose(q2c, c2q)  # the case is asymmetric, so both terms matter
    assert torch.isclose(symmetric_info_nce(q, c, tau), 0.5 * (q2c + c2q))


def test_info_nce_is_low_for_matched_pairs_and_log_b_for_identical_vectors():
    v = F.normalize(torch.eye(4), dim=-1)
    assert symmetric_info_nce(v, v, 0.05) < 1e-3
    same = F.normalize(torch.ones(4, 4), dim=-1)
    assert math.isclose(symmetric_info_nce(same, same, 0.05).item(), math.log(4), rel_tol=1e-5)
    with pytest.raises(ValueError, match="shapes differ"):
        symmetric_info_nce(v, v[:3], 0.05)


def test_banked_negatives_extend_each_direction_separately():
    q, c, bank_q, bank_c = _unit_rows(3, 3, 5, 4)
    tau = 0.1
    q2c, c2q = _directions(q, c, tau)
    q2c_bank, c2q_bank = _directions(q, c, tau, bank_q, bank_c)
    assert torch.isclose(symmetric_info_nce(q, c, tau, extra_questions=bank_q), 0.5 * (q2c + c2q_bank))
    assert torch.isclose(symmetric_info_nce(q, c, tau, extra_contexts=bank_c), 0.5 * (q2c_bank + c2q))
    assert torch.isclose(symmetric_info_nce(q, c, tau, bank_q, None, bank_c, None), 0.5 * (q2c_bank + c2q_bank))
    # masked entries (copies of this batch's pairs, banked earlier) are not negatives
    all_q, all_c = torch.ones(3, 5, dtype=torch.bool), torch.ones(3, 4, dtype=torch.bool)
    assert torch.isclose(symmetric_info_nce(q, c, tau, bank_q, all_q, bank_c, all_c), symmetric_info_nce(q, c, tau))


def test_negative_bank_keeps_the_newest_and_leaves_out_the_batch_items():
    bank = NegativeBank(3)
    assert bank.negatives(["a"]) == (None, None)
    bank.add(torch.eye(4)[:2], ["a", "b"])
    bank.add(torch.eye(4)[2:], ["c", "d"])
    vectors, own = bank.negatives(["b", "x", "c"])
    assert torch.equal(vectors, torch.eye(4)[[2, 3, 0]])  # newest first, "b" pushed out
    assert own.tolist() == [[True, False, False]] * 3  # "c" is in this batch already
    bank.add(torch.eye(4)[[0]], ["c"])  # banked again: moved to the front, not duplicated
    assert bank.keys.tolist() == NegativeBank._keys(["c", "d", "a"]).tolist()
    with pytest.raises(ValueError, match="> 0"):
        NegativeBank(0)


def test_mwer_descent_lowers_the_expected_number_of_errors():
    torch.manual_seed(0)
    targets = torch.tensor([[1, 2, 3, -1], [4, 0, 2, 1]])
    logits = (0.5 * torch.randn(2, 4, 6)).requires_grad_(True)
    mask = targets.ne(-1)

    def expected_errors():  # positions are independent: E[errors] = sum(1 - p(reference))
        p = torch.softmax(logits.detach(), -1)
        p_ref = p.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return float(((1 - p_ref) * mask).sum())

    before = expected_errors()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(40):
        loss = mwer_negative_sampling(logits, targets, ignore_id=-1, num_paths=16, generator=gen)
        opt.zero_grad()
        loss.backward()
        assert torch.all(logits.grad[0, 3] == 0)  # padding gets no gradient
        opt.step()
    assert expected_errors() < 0.8 * before


def test_mwer_matches_a_hand_computed_n_best_expectation():
    """Greedy path + sampled paths, renormalised path probabilities times errors relative to the mean."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4)
    targets = torch.tensor([[1, 2, 3], [0, 1, -1]])
    loss = mwer_negative_sampling(logits, targets, ignore_id=-1, num_paths=3,
                                  generator=torch.Generator().manual_seed(7))
    lp = logits.log_softmax(-1)
    sampled = torch.multinomial(lp.exp().reshape(-1, 4), 2, replacement=True,
                                generator=torch.Generator().manual_seed(7)).reshape(2, 3, 2).permute(0, 2, 1)
    paths = torch.cat([lp.argmax(-1)[:, None], sampled], 1)
    total = 0.0
    for b in range(2):
        n = int((targets[b] != -1).sum())
        unique = []  # a path drawn twice is one hypothesis
        for p in range(3):
            if not any(torch.equal(paths[b, p, :n], q) for q in unique):
                unique.append(paths[b, p, :n])
        scores = torch.stack([lp[b, torch.arange(n), q].sum() for q in unique])
        errors = torch.stack([(q != targets[b, :n]).sum().float() for q in unique])
        total += (scores.softmax(0) * (errors - errors.mean())).sum()
    torch.testing.assert_close(loss, total / 2)
    assert abs(loss.item()) > 1e-4  # the paths differ here, so a loss stuck at zero would fail


def test_mwer_counts_a_path_drawn_twice_once():
    """Peaked posteriors make the sampler draw the greedy path again: the list is then that path plus one."""
    logits = torch.full((1, 2, 3), -20.0)
    logits[0, :, 1] = 5.0  # greedy path [1, 1], drawn again almost surely
    logits[0, 1, 2] = 4.0  # ... or [1, 2]
    targets = torch.tensor([[1, 2]])
    gen = torch.Generator().manual_seed(3)  # draws [1, 1] six more times and [1, 2] once
    loss = mwer_negative_sampling(logits, targets, num_paths=8, generator=gen)
    lp = logits.log_softmax(-1)
    s_a, s_b = lp[0, 0, 1] + lp[0, 1, 1], lp[0, 0, 1] + lp[0, 1, 2]  # [1,1]: 1 error; [1,2]: 0
    p_a = torch.softmax(torch.stack([s_a, s_b]), 0)[0]
    expect = p_a * (1 - 0.5) + (1 - p_a) * (0 - 0.5)  # two unique paths, mean error 0.5
    torch.testing.assert_close(loss, expect)


def test_copies_of_one_context_in_a_batch_are_not_negatives():
    import torch.nn.functional as F

    from funasr_clsr.models.clsr.losses import symmetric_info_nce

    torch.manual_seed(0)
    q = F.normalize(torch.randn(3, 8), dim=-1)
    c = F.normalize(torch.randn(3, 8), dim=-1)
    c[2] = c[0]  # the same context twice (two questions about it)
    keys = torch.tensor([7, 8, 7])
    masked = symmetric_info_nce(q, c, 0.1, pair_keys=keys)
    plain = symmetric_info_nce(q, c, 0.1)
    # by hand: row 0 and 2 leave each other out of their softmax
    logits = q @ c.t() / 0.1
    logits[0, 2] = logits[2, 0] = float("-inf")
    labels = torch.arange(3)
    expect = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    torch.testing.assert_close(masked, expect)
    assert not torch.allclose(masked, plain)

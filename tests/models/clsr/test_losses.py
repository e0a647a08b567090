import math

import pytest
import torch
import torch.nn.functional as F

from funasr_clsr.models.clsr.losses import mwer_negative_sampling, symmetric_info_nce


def test_symmetric_info_nce_averages_both_directions():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(4, 8), dim=-1)
    c = F.normalize(torch.randn(4, 8), dim=-1)
    tau = 0.05
    sim = q @ c.t() / tau
    labels = torch.arange(4)
    q2c = F.cross_entropy(sim, labels)
    c2q = F.cross_entropy(sim.t(), labels)
    assert not torch.isclose(q2c, c2q)  # the case is asymmetric, so both terms matter
    assert torch.isclose(symmetric_info_nce(q, c, tau), 0.5 * (q2c + c2q))


def test_info_nce_is_low_for_matched_pairs_and_log_b_for_identical_vectors():
    v = F.normalize(torch.eye(4), dim=-1)
    assert symmetric_info_nce(v, v, 0.05) < 1e-3
    same = F.normalize(torch.ones(4, 4), dim=-1)
    assert math.isclose(symmetric_info_nce(same, same, 0.05).item(), math.log(4), rel_tol=1e-5)
    with pytest.raises(ValueError, match="shapes differ"):
        symmetric_info_nce(v, v[:3], 0.05)


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


def test_mwer_is_zero_when_every_path_is_the_same():
    targets = torch.tensor([[1, 2]])
    logits = torch.full((1, 2, 3), -50.0)
    logits[0, 0, 1] = logits[0, 1, 2] = 50.0
    assert abs(mwer_negative_sampling(logits, targets, num_paths=4).item()) < 1e-6

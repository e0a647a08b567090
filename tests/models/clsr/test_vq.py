import torch

from funasr_clsr.models.clsr.vq import VQAdaptor


def test_forward_is_exact_onehot_argmax_times_weight():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    weight = torch.randn(11, 7)
    out = VQAdaptor(0.1)(logits, weight)
    onehot = torch.nn.functional.one_hot(logits.argmax(-1), 11).float()
    assert torch.equal(out, onehot @ weight)  # bit-exact, not approximately


def test_backward_is_gradient_of_tempered_softmax():
    torch.manual_seed(1)
    gamma = 0.1
    logits = torch.randn(3, 4, 9, requires_grad=True)
    weight = torch.randn(9, 6)
    upstream = torch.randn(3, 4, 6)
    (VQAdaptor(gamma)(logits, weight) * upstream).sum().backward()
    ref_logits = logits.detach().clone().requires_grad_(True)
    ((torch.softmax(ref_logits / gamma, -1) @ weight) * upstream).sum().backward()
    assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-5, rtol=1e-4)
    assert logits.grad.abs().sum() > 0


def test_weight_gradient_follows_the_onehot_forward():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 5)
    weight = torch.randn(5, 4, requires_grad=True)
    upstream = torch.randn(2, 3, 4)
    (VQAdaptor(0.1)(logits, weight) * upstream).sum().backward()
    onehot = torch.nn.functional.one_hot(logits.argmax(-1), 5).float()
    expected = onehot.reshape(-1, 5).t() @ upstream.reshape(-1, 4)
    assert torch.allclose(weight.grad, expected, atol=1e-6)


def test_gamma_must_be_positive():
    import pytest

    with pytest.raises(ValueError, match="gamma"):
        VQAdaptor(0.0)


def test_vocabulary_subset_rows_same_value_with_and_without_gradient():
    torch.manual_seed(3)
    weight = torch.randn(20, 4)
    rows = torch.tensor([3, 0, 7, 19, 11])
    logits = torch.randn(2, 6, 5)
    expected = weight.index_select(0, rows)[logits.argmax(-1)]
    assert torch.equal(VQAdaptor(0.1)(logits, weight, rows), expected)  # lookup path
    with_grad = VQAdaptor(0.1)(logits.clone().requires_grad_(True), weight, rows)  # straight-through path
    assert torch.equal(with_grad.detach(), expected) and with_grad.requires_grad

"""CTC forced alignment (checked against exhaustive search) and the CIF weight targets built
from it; the model's cif_align_weight switch."""
from __future__ import annotations

import itertools

import pytest
import torch

from clsr_testing import build_tiny, training_batch
from funasr_clsr.models.clsr.alignment import cif_alpha_targets, ctc_token_frames


def _collapse(path, blank=0):
    out, prev = [], None
    for v in path:
        if v != prev and v != blank:
            out.append(v)
        prev = v
    return out


def _brute_force(log_probs, target, blank=0):
    """First frame of each token on the best CTC path, by trying every frame labelling."""
    n_frames, vocab = log_probs.shape
    best, best_path = None, None
    for path in itertools.product(range(vocab), repeat=n_frames):
        if _collapse(path, blank) != target:
            continue
        score = sum(float(log_probs[t, v]) for t, v in enumerate(path))
        if best is None or score > best:
            best, best_path = score, path
    if best_path is None:
        return None
    # a token starts where a non-blank label begins (a repeated token needs a blank between)
    return [t for t, v in enumerate(best_path) if v != blank and (t == 0 or best_path[t - 1] != v)]


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_matches_exhaustive_search(seed):
    g = torch.Generator().manual_seed(seed)
    n_frames, vocab = 6, 4
    target = [[1, 2], [2, 2], [3, 1, 3]][seed % 3]
    lp = (3 * torch.randn(n_frames, vocab, generator=g)).log_softmax(-1)
    frames = ctc_token_frames(lp[None], torch.tensor([n_frames]), torch.tensor([target]), torch.tensor([len(target)]))
    assert frames[0].tolist() == _brute_force(lp, target)


def test_batch_with_padding_equals_one_utterance_at_a_time():
    g = torch.Generator().manual_seed(1)
    lp = torch.randn(3, 12, 6, generator=g).log_softmax(-1)
    in_lens = torch.tensor([12, 7, 9])
    targets = torch.tensor([[1, 2, 3, 4], [5, 5, -1, -1], [2, -1, -1, -1]])
    lens = torch.tensor([4, 2, 1])
    batched = ctc_token_frames(lp, in_lens, targets, lens)
    for b in range(3):
        one = ctc_token_frames(lp[b:b + 1, : in_lens[b]], in_lens[b:b + 1], targets[b:b + 1, : lens[b]], lens[b:b + 1])
        assert batched[b, : lens[b]].tolist() == one[0].tolist()
        assert (batched[b, lens[b]:] == -1).all()
    assert (torch.diff(batched[0]) > 0).all()
    assert batched[1, 1] - batched[1, 0] >= 2  # "5 5" needs a blank frame between the two


def test_too_short_for_its_targets_gives_minus_one():
    lp = torch.randn(1, 2, 5).log_softmax(-1)  # two frames cannot hold "3 3" (needs a blank between)
    assert ctc_token_frames(lp, torch.tensor([2]), torch.tensor([[3, 3]]), torch.tensor([2])).tolist() == [[-1, -1]]


def test_alpha_targets_keep_one_unit_per_token_inside_each_utterance():
    frames = torch.tensor([[0, 3, 5], [2, -1, -1]])
    target = cif_alpha_targets(frames, torch.tensor([6, 4]), 8)
    assert target.sum(1).tolist() == [3.0, 1.0]
    assert target[0].tolist()[:6] == [0.75, 0.25, 0.25, 0.5, 0.5, 0.75]  # edges keep the spill
    assert (target[0, 6:] == 0).all() and (target[1, 4:] == 0).all()


def test_model_switch_adds_the_loss_and_trains_the_predictor(cmvn, pair_dir):
    with pytest.raises(ValueError, match="ctc_weight"):
        build_tiny(frontend_cmvn=cmvn, cif_align_weight=1.0)
    grads = {}
    for weight in (1.0, 0.0):
        am = build_tiny(frontend_cmvn=cmvn, cif_align_weight=weight, ctc_weight=0.3, nce_weight=0.0)
        m = am.model.train()
        loss, stats, _ = m(**training_batch(am, pair_dir / "text_q.jsonl"))
        if weight:
            # an untrained predictor is far from one unit per CTC frame: a real, non-trivial distance
            assert 0.05 < float(stats["loss_cif_align"]) < 10.0
        else:
            assert "loss_cif_align" not in stats
        loss.backward()
        grads[weight] = m.predictor.cif_output.weight.grad.clone()
    # same seed and batch: the only difference in the predictor's gradient is the alignment loss
    assert not torch.allclose(grads[1.0], grads[0.0])


def test_ctc_greedy_ids_merge_repeats_drop_blanks_and_stop_at_each_length():
    from funasr_clsr.models.clsr.alignment import ctc_greedy_ids

    frames = torch.tensor([[3, 3, 0, 3, 5, 5, 0, 7], [2, 0, 2, 2, 4, 4, 4, 4]])
    log_probs = torch.nn.functional.one_hot(frames, 8).float().log_softmax(-1)
    assert ctc_greedy_ids(log_probs, torch.tensor([8, 4]), blank=0) == [[3, 3, 5, 7], [2, 2]]

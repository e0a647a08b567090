"""ParaBGE on the frozen Whisper encoder (the recipe's baseline on CLSR's acoustic model) and its
SpeechDPR-style distillation from a teacher transcript's text embedding."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from clsr_testing import CONTEXTS, QUESTIONS, REPO, TINY_TE, recall_at_1, tiny_config, training_batch
from funasr_clsr.models.whisper_encoder import ENV_CACHE

CONF = REPO / "conf" / "parabge_whisper_base_mini_en.yaml"
TINY_WHISPER = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                "num_mel_bins": 80, "max_source_positions": 100}


def build(cache_dir=None, **model_conf):
    """The recipe's config with a tiny random Whisper (no weights to fetch) and the tiny text encoder."""
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    cfg = tiny_config(conf=CONF, **model_conf)
    cfg["encoder_conf"].update(whisper_path=None, whisper_config=TINY_WHISPER,
                               cache_dir=str(cache_dir) if cache_dir else None)
    return AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR", seed=0)


@pytest.fixture(autouse=True)
def no_env_cache(monkeypatch):
    monkeypatch.delenv(ENV_CACHE, raising=False)


@pytest.fixture(scope="module")
def teacher_jsonl(pair_dir, tmp_path_factory):
    """The pairs with a teacher transcript: each context's own text, as add_teacher_text.py writes it."""
    out = tmp_path_factory.mktemp("teacher") / "qa.jsonl"
    hyp = out.with_name("hyp.jsonl")
    hyp.write_text("".join(json.dumps({"key": f"pair{i}", "text": c}) + "\n" for i, c in enumerate(CONTEXTS)))
    subprocess.run([sys.executable, str(REPO / "recipes/mini_spoken_squad/local/add_teacher_text.py"), "--jsonl",
                    str(pair_dir / "text_q.jsonl"), "--transcripts", str(hyp), "--out", str(out)], check=True,
                   capture_output=True)
    return out


def test_only_the_linear_map_trains_and_the_encoder_is_read_from_the_cache(pair_dir, tmp_path):
    from funasr.register import tables

    am = build(cache_dir=tmp_path / "cache")
    m = am.model
    assert type(m.encoder) is tables.encoder_classes["WhisperAudioEncoder"]
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["speech_proj.weight", "speech_proj.bias"]
    batch = training_batch(am, pair_dir / "text_q.jsonl")
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    first = None
    for _ in range(30):
        loss, stats, _ = m(**batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss) < 0.5 * first, (first, float(loss))
    assert m.encoder.cache.misses == 8 and m.encoder.cache.hits == 29 * 8  # each context encoded once
    m.eval()
    contexts = [str(pair_dir / f"ctx{i}.wav") for i in range(8)]
    # a linear map over a random tiny encoder's mean: far above chance (1/8), and inference embeds as training did
    r1 = recall_at_1(m.encode_text(QUESTIONS), m.encode_speech(contexts))
    assert r1 >= 0.5 and r1 == pytest.approx(float(stats["r1_q2c"])), (r1, stats["r1_q2c"])


def test_distillation_pulls_each_context_to_its_teacher_embedding(teacher_jsonl, pair_dir):
    am = build(distill_weight=1.0)
    m = am.model
    batch = training_batch(am, teacher_jsonl)
    assert batch["teacher_text"] == CONTEXTS
    teacher = m.encode_text(CONTEXTS, is_query=False)
    contexts = [str(pair_dir / f"ctx{i}.wav") for i in range(8)]
    before = float((m.encode_speech(contexts) * teacher).sum(-1).mean())
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    distill = []
    for _ in range(40):
        loss, stats, _ = m(**batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        distill.append(float(stats["loss_distill"]))
    assert distill[-1] < 0.5 * distill[0], distill
    assert torch.isclose(stats["loss"], stats["loss_distill"])  # weight 1.0: the InfoNCE term is reported only
    m.eval()
    student = m.encode_speech(contexts)
    after = float((student * teacher).sum(-1).mean())
    assert after > before + 0.2 and after > 0.8, (before, after)


def test_distillation_without_teacher_text_and_bad_weights_are_one_line_errors(pair_dir):
    am = build(distill_weight=0.5)
    batch = training_batch(am, pair_dir / "text_q.jsonl")
    with pytest.raises(ValueError, match='needs a teacher_text for every context.*"teacher_text"'):
        am.model(**batch)
    with pytest.raises(ValueError, match=r"distill_weight must be in \[0, 1\], got 1.5"):
        build(distill_weight=1.5)


def test_add_teacher_text_refuses_a_list_with_untranscribed_lines(pair_dir, tmp_path):
    hyp = tmp_path / "hyp.jsonl"
    hyp.write_text(json.dumps({"key": "pair0", "text": "x"}) + "\n")
    out = tmp_path / "out.jsonl"
    r = subprocess.run([sys.executable, str(REPO / "recipes/mini_spoken_squad/local/add_teacher_text.py"),
                        "--jsonl", str(pair_dir / "text_q.jsonl"), "--transcripts", str(hyp), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and not out.exists()
    assert r.stderr.strip().splitlines() == [
        f"add_teacher_text: 7 of 8 lines of {pair_dir / 'text_q.jsonl'} have no transcript in {hyp}, e.g. pair1"]

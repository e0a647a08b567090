"""Every shipped config builds; the paper-size one has the paper's architecture."""
import json
from pathlib import Path

import pytest
import yaml

from clsr_testing import REPO, TINY_TE

CONFS = sorted((REPO / "conf").glob("clsr_*.yaml"))


@pytest.mark.parametrize("path", CONFS, ids=lambda p: p.name)
def test_config_is_a_complete_clsr_config(path):
    cfg = yaml.safe_load(path.read_text())
    assert cfg["model"] == "CLSR" and cfg["remote_code"] == "funasr_clsr" and cfg["trust_remote_code"]
    for key in ("encoder_conf", "decoder_conf", "predictor_conf", "frontend_conf", "tokenizer_conf", "dataset_conf"):
        assert key in cfg, key
    mc = cfg["model_conf"]
    assert abs(mc["mae_weight"] - 1 / 3) < 1e-3 and abs(mc["nce_weight"] - 1 / 3) < 1e-3
    assert mc["vq_gamma"] == 0.1 and mc["freeze_text_encoder"] is True
    assert cfg["frontend_conf"]["lfr_m"] == 7 and cfg["frontend_conf"]["lfr_n"] == 6
    assert cfg["decoder_conf"]["att_layer_num"] <= cfg["decoder_conf"]["num_blocks"]


def _bge_shaped_encoder(tmp: Path, vocab_size: int) -> Path:
    """A config-only folder shaped like bge-base-en-v1.5 (weights are not needed to check the architecture)."""
    d = tmp / "bge"
    (d / "1_Pooling").mkdir(parents=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + [f"w{i}" for i in range(vocab_size - len(specials))]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (d / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": vocab_size, "hidden_size": 768, "num_hidden_layers": 12,
        "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2}))
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    return d


def test_paper_size_config_builds_paraformer_large_plus_bge_base(tmp_path):
    import torch
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    cfg = yaml.safe_load((REPO / "conf" / "clsr_bge_base_en.yaml").read_text())
    te = _bge_shaped_encoder(tmp_path, 30522)
    cfg["model_conf"]["text_encoder_conf"]["path"] = str(te)
    cfg["tokenizer_conf"]["token_list"] = str(te / "vocab.txt")
    m = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR").model
    speech = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("text_encoder."))
    text = sum(p.numel() for p in m.text_encoder.parameters())
    assert len(m.encoder.encoders) + 1 == 50 and len(m.decoder.decoders) == 16
    assert m.decoder.output_layer.out_features == 30522
    assert 200e6 < speech < 260e6, speech      # paraformer-large with a 30,522-token output layer
    assert 105e6 < text < 115e6, text          # bge-base
    assert m.text_encoder.pooling == "cls" and not any(p.requires_grad for p in m.text_encoder.parameters())

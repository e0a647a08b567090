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
    if cfg["encoder"] == "WhisperAudioEncoder":  # Whisper's log-mel, widths follow the encoder
        assert cfg["frontend"] == "WhisperLogMelFrontend" and cfg["encoder_conf"]["freeze"] is True
        assert cfg.get("specaug") is None  # the frozen outputs are cached per exact input
    else:
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
    cfg["model_conf"]["text_encoder_conf"].update(path=str(te), load_weights=False)  # config-only: shape check
    cfg["tokenizer_conf"]["token_list"] = str(te / "vocab.txt")
    m = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR").model
    speech = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("text_encoder."))
    text = sum(p.numel() for p in m.text_encoder.parameters())
    assert len(m.encoder.encoders) + 1 == 50 and len(m.decoder.decoders) == 16
    assert m.decoder.output_layer.out_features == 30522
    assert 200e6 < speech < 260e6, speech      # paraformer-large with a 30,522-token output layer
    assert 105e6 < text < 115e6, text          # bge-base
    assert m.text_encoder.pooling == "cls" and not any(p.requires_grad for p in m.text_encoder.parameters())


@pytest.mark.parametrize("name,d_model,layers", [("clsr_whisper_base_mini_en.yaml", 512, 6),
                                                  ("clsr_whisper_small_bge_base_en.yaml", 768, 12)])
def test_whisper_configs_build_with_whisper_shaped_encoders(name, d_model, layers, tmp_path):
    """Both Whisper configs build at their real widths (config-only Whisper, tiny text encoder)."""
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel
    from transformers import WhisperConfig

    wdir = tmp_path / "whisper"
    WhisperConfig(d_model=d_model, encoder_layers=layers, encoder_attention_heads=d_model // 64,
                  encoder_ffn_dim=4 * d_model, decoder_layers=1).save_pretrained(wdir)
    cfg = yaml.safe_load((REPO / "conf" / name).read_text())
    cfg["encoder_conf"].update(whisper_path=str(wdir), load_weights=False)
    cfg["model_conf"]["text_encoder_conf"] = {"path": str(TINY_TE), "pooling": "auto", "max_length": 128}
    cfg["tokenizer_conf"]["token_list"] = str(TINY_TE / "vocab.txt")
    m = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR").model
    assert m.encoder.output_size() == d_model and m.predictor.cif_output.in_features == d_model
    assert len(m.encoder.whisper.layers) == layers
    trainable = {n.split(".")[2] for n, p in m.encoder.named_parameters() if p.requires_grad and ".layers." in n}
    assert trainable == {str(layers - i - 1) for i in range(cfg["encoder_conf"]["trainable_top_blocks"])}

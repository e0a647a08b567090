"""Self-contained CLSR model directories in FunASR's layout.

    DIR/config.yaml          the model's configuration (no absolute paths, no training keys)
    DIR/model.pt             {"state_dict": ...}: speech branch, adaptor and text encoder weights
    DIR/tokens.txt           the ASR output vocabulary (text-encoder WordPiece rows)
    DIR/am.mvn               global CMVN of the LFR fbank features (not for Whisper's log-mel frontend)
    DIR/text_encoder/        the text encoder's config, vocab.txt and pooling (weights live in model.pt)
    DIR/configuration.json   ModelScope/FunASR manifest (file_path_metas)

``funasr.AutoModel(model=DIR)`` loads it offline; ``config.yaml`` carries
``trust_remote_code``/``remote_code: funasr_clsr`` so FunASR imports the plugin itself.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
import yaml

from funasr_clsr.version import MODEL_FORMAT_VERSION, __version__

# Keys of a training config that describe the model; everything else (data lists,
# output_dir, trainer and optimiser settings, devices) stays out of an exported model.
MODEL_KEYS = ("model", "model_conf", "encoder", "encoder_conf", "decoder", "decoder_conf", "predictor",
              "predictor_conf", "frontend", "frontend_conf", "specaug", "specaug_conf", "normalize",
              "normalize_conf", "ctc_conf", "tokenizer", "tokenizer_conf")
TEXT_ENCODER_DIR = "text_encoder"


def read_training_config(path: str | Path) -> dict:
    """A FunASR training output's config.yaml as a plain dict, ``${...}`` interpolations resolved.

    The configs' default token list is ``${model_conf.text_encoder_conf.path}``, which FunASR saves
    as written.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    except OmegaConfBaseException as exc:
        raise ValueError(f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def model_config(config: dict, do_lower_case: bool) -> dict:
    """The model part of a (training) config, with paths made relative to the model directory.

    ``do_lower_case``: the ASR tokenizer's casing as built (configs may say null: the text encoder's).
    """
    cfg = {k: copy.deepcopy(config[k]) for k in MODEL_KEYS if k in config and config[k] is not None}
    cfg["model_conf"] = dict(cfg.get("model_conf") or {})
    te_conf = dict(cfg["model_conf"].get("text_encoder_conf") or {})
    if te_conf:
        te_conf["path"] = TEXT_ENCODER_DIR
        te_conf["load_weights"] = False  # the weights are in model.pt
        cfg["model_conf"]["text_encoder_conf"] = te_conf
    cfg["tokenizer_conf"] = {k: v for k, v in (cfg.get("tokenizer_conf") or {}).items() if k != "token_list"}
    cfg["tokenizer_conf"]["token_list"] = "tokens.txt"
    cfg["tokenizer_conf"]["do_lower_case"] = bool(do_lower_case)
    cfg["frontend_conf"] = {k: v for k, v in (cfg.get("frontend_conf") or {}).items() if k != "cmvn_file"}
    cfg["frontend_conf"]["dither"] = 0.0  # deterministic features at inference
    cfg["clsr_format_version"] = MODEL_FORMAT_VERSION
    cfg["funasr_clsr_version"] = __version__
    cfg["trust_remote_code"] = True
    cfg["remote_code"] = "funasr_clsr"
    return cfg


def configuration_json(hub_id: str = "", cmvn: bool = True) -> dict:
    metas = {"init_param": "model.pt", "config": "config.yaml",
             "tokenizer_conf": {"token_list": "tokens.txt"},
             "model_conf": {"text_encoder_conf": {"path": TEXT_ENCODER_DIR}}}
    if cmvn:
        metas["frontend_conf"] = {"cmvn_file": "am.mvn"}
    return {"framework": "pytorch", "task": "auto-speech-recognition",
            "model": {"type": "funasr"}, "pipeline": {"type": "funasr-pipeline"},
            "model_name_in_hub": {"ms": hub_id, "hf": ""}, "file_path_metas": metas}


def export_model_dir(config: dict, model: torch.nn.Module, out_dir: str | Path, cmvn_file: str | None = None,
                     readme: str | None = None, hub_id: str = "") -> Path:
    """Write ``model`` (built from ``config``) as a model directory; returns its path.

    Written into a temporary sibling and renamed, so an interrupted export never
    leaves a half-written directory behind under the final name.
    """
    from funasr_clsr.hub import needs_cmvn

    out = Path(out_dir)
    cmvn_file = cmvn_file or (config.get("frontend_conf") or {}).get("cmvn_file")
    with_cmvn = needs_cmvn(config)
    if with_cmvn and (not cmvn_file or not Path(cmvn_file).is_file()):
        raise FileNotFoundError(f"export needs the model's am.mvn (frontend_conf.cmvn_file), got {cmvn_file!r}")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    cfg = model_config(config, model.asr_tokenizer.do_lower_case)
    encoder = getattr(model, "encoder", None)
    if hasattr(encoder, "config_dict"):  # Whisper: the architecture goes with the model, the weights are in model.pt
        conf = dict(cfg.get("encoder_conf") or {})
        conf.update(whisper_config=dict(encoder.config_dict), whisper_path=None, cache_dir=None)
        cfg["encoder_conf"] = conf
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, tmp / "model.pt")
    (tmp / "tokens.txt").write_text("\n".join(model.asr_tokenizer.token_list) + "\n", encoding="utf-8")
    if with_cmvn:
        shutil.copy2(cmvn_file, tmp / "am.mvn")
    if getattr(model, "text_encoder", None) is not None:
        model.text_encoder.save_config(tmp / TEXT_ENCODER_DIR)
    (tmp / "configuration.json").write_text(json.dumps(configuration_json(hub_id, cmvn=with_cmvn), indent=2))
    if readme:
        (tmp / "README.md").write_text(readme, encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out

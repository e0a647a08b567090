"""Finding, identifying and publishing CLSR model directories (ModelScope).

* ``AutoModel(model="clsr")``: :func:`register_short_name` (called by ``import funasr_clsr``)
  maps the short name in FunASR's ``name_maps_ms``/``name_maps_hf`` to, in this order,
  the directory in ``$FUNASR_CLSR_MODEL``, a copy installed into the local ModelScope cache by
  ``funasr-clsr publish DIR --local``, or the published hub id :data:`HUB_MODEL_ID` (downloaded
  by FunASR). FunASR prints and swallows download errors and would then report "model 'clsr' is
  not registered"; so the short name is also registered as a model that raises
  :class:`ModelNotFoundError` with one line saying what to pass instead.
* :func:`model_identity`: the (model_id, model_version) pair a segment index records, derived
  from the files of a model directory.
* :func:`publish`: validate a model directory, write its model card, and upload it with
  ``modelscope.hub.api.HubApi`` (or copy it into the local ModelScope cache). The token comes
  from ``--token`` or ``$MODELSCOPE_API_TOKEN`` and is never written to a file or a log.

Light to import: funasr and modelscope are imported inside the functions that need them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_MODEL",
    "ENV_TOKEN",
    "HUB_MODEL_ID",
    "ModelDirError",
    "ModelNotFoundError",
    "PublishError",
    "SHORT_NAME",
    "local_cache_dir",
    "model_card",
    "model_identity",
    "publish",
    "register_short_name",
    "resolve_model",
    "validate_model_dir",
]

logger = logging.getLogger(__name__)

#: Where the team publishes the released CLSR model on ModelScope.
HUB_MODEL_ID = "funasr-clsr/clsr-mini-en"
#: The short name ``AutoModel(model=...)`` accepts once funasr_clsr is imported.
SHORT_NAME = "clsr"
#: A local model directory that the short name resolves to before anything else.
ENV_MODEL = "FUNASR_CLSR_MODEL"
#: The ModelScope API token used by :func:`publish` when none is passed.
ENV_TOKEN = "MODELSCOPE_API_TOKEN"

#: What a publishable model directory holds (a trailing slash marks a folder).
REQUIRED_FILES = ("configuration.json", "config.yaml", "model.pt", "tokens.txt", "am.mvn",
                  "text_encoder/", "README.md")
#: Frontends that normalise their own features: their model directories have no am.mvn.
CMVN_FREE_FRONTENDS = ("WhisperLogMelFrontend",)
VISIBILITIES = ("public", "private", "internal")
DEFAULT_LICENSE = "Apache License 2.0"
# Never uploaded: partial writes, caches, VCS folders.
_IGNORE = (".git", "__pycache__", ".ms_upload_cache", "*.partial", "*.tmp", ".DS_Store")


class ModelNotFoundError(FileNotFoundError):
    """No CLSR model where the short name (or a path) pointed; the message says what to pass."""


class ModelDirError(ValueError):
    """A model directory that is incomplete or inconsistent."""


class PublishError(RuntimeError):
    """Publishing failed (no token, hub refused, network); the message is one line."""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- resolution


def modelscope_cache_root() -> Path:
    """The ModelScope cache root: ``$MODELSCOPE_CACHE`` or ``~/.cache/modelscope``."""
    env = os.environ.get("MODELSCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modelscope"


def local_cache_dir(repo_id: str = HUB_MODEL_ID) -> Path:
    """Where ModelScope keeps (and finds offline) a model: ``<cache>/models/<owner>/<name>``.

    Dots in the name become ``___``, as modelscope_hub does it.
    """
    owner, name = _split_repo_id(repo_id)
    return modelscope_cache_root() / "models" / owner / name.replace(".", "___")


def is_model_dir(path: str | os.PathLike | None) -> bool:
    return bool(path) and (Path(path) / "config.yaml").is_file() and (Path(path) / "model.pt").is_file()


def resolve_model(name: str = SHORT_NAME) -> str:
    """What ``name`` stands for: a local model directory, or a hub id for FunASR to download.

    For the short name (and :data:`HUB_MODEL_ID`): ``$FUNASR_CLSR_MODEL`` (must be a model
    directory, else :class:`ModelNotFoundError`), then the copy in the local ModelScope cache,
    then the hub id. An existing directory is returned as an absolute path; any other name
    unchanged.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if os.path.isdir(name):
        return str(Path(name).resolve())
    if name not in (SHORT_NAME, HUB_MODEL_ID):
        return name
    env = os.environ.get(ENV_MODEL, "").strip()
    if name == SHORT_NAME and env:
        if is_model_dir(env):
            return str(Path(env).expanduser().resolve())
        raise ModelNotFoundError(f"{ENV_MODEL}={env} is not a CLSR model directory (it needs config.yaml "
                                 f"and model.pt); point it at an exported model or unset it")
    cached = local_cache_dir(HUB_MODEL_ID)
    if is_model_dir(cached):
        return str(cached)
    return HUB_MODEL_ID


def _not_found_message(requested: str, model_path: str | None) -> str:
    env = os.environ.get(ENV_MODEL, "").strip()
    if requested == SHORT_NAME and env and not is_model_dir(env):
        why = f"{ENV_MODEL}={env} is not a CLSR model directory (no config.yaml/model.pt)"
    elif model_path and os.path.isdir(model_path):
        why = f"{model_path} holds no config.yaml"
    else:
        why = (f"{ENV_MODEL} is not set, there is no copy in the local ModelScope cache "
               f"({local_cache_dir(HUB_MODEL_ID)}) and '{model_path or HUB_MODEL_ID}' could not be "
               "downloaded (offline, or not published there)")
    return (f"CLSR model '{requested}' not found: {why}; pass AutoModel(model='/path/to/model_dir'), set "
            f"{ENV_MODEL}=/path/to/model_dir, or install one with `funasr-clsr publish DIR --local`")


def _model_not_found(**kwargs: Any):
    """Registered under the short name: FunASR only gets here when nothing was found."""
    raise ModelNotFoundError(_not_found_message(str(kwargs.get("model", SHORT_NAME)), kwargs.get("model_path")))


def register_short_name(name: str = SHORT_NAME) -> str:
    """Make ``AutoModel(model=name)`` find a CLSR model; returns what the name now maps to.

    Call again after changing ``$FUNASR_CLSR_MODEL`` or installing a local copy.
    """
    from funasr.download import name_maps_from_hub as maps
    from funasr.register import tables

    try:
        target = resolve_model(name)
    except ModelNotFoundError as exc:
        logger.warning("%s", exc)
        target = os.environ.get(ENV_MODEL, "").strip()  # fails later, with the same explanation
    for table in (maps.name_maps_ms, maps.name_maps_hf):
        table[name] = target
        cached = local_cache_dir(HUB_MODEL_ID)
        if is_model_dir(cached):
            table[HUB_MODEL_ID] = str(cached)  # the hub id also finds its installed copy offline
        else:
            table.pop(HUB_MODEL_ID, None)
    tables.model_classes[name] = _model_not_found
    tables.model_classes[HUB_MODEL_ID] = _model_not_found
    return target


# --------------------------------------------------------------------------- identity


def _file_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_config(model_dir: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelDirError(f"{model_dir}: cannot read config.yaml ({_one_line(exc)})") from None
    except yaml.YAMLError as exc:
        raise ModelDirError(f"{model_dir}/config.yaml: not valid YAML ({_one_line(exc)[:200]})") from None
    if not isinstance(cfg, dict):
        raise ModelDirError(f"{model_dir}/config.yaml: not a mapping")
    return cfg


def model_identity(model_dir: str | os.PathLike) -> tuple[str, str]:
    """``(model_id, model_version)`` for a segment index built with the model in ``model_dir``.

    model_id is ``clsr-`` + the first 16 hex digits of a sha256 over model.pt, config.yaml,
    tokens.txt and am.mvn (everything that changes the vectors), so a renamed or re-downloaded
    copy of the same model matches and any other model does not. model_version is the
    funasr_clsr version and CLSR format version recorded in config.yaml at export.
    """
    d = Path(model_dir)
    if not is_model_dir(d):
        raise ModelDirError(f"{d}: not a CLSR model directory (needs config.yaml and model.pt)")
    cfg = _read_config(d)
    h = hashlib.sha256()
    for name in ("model.pt", "config.yaml", "tokens.txt", "am.mvn"):
        p = d / name
        h.update(name.encode() + b"\0" + (_file_sha256(p).encode() if p.is_file() else b"-") + b"\0")
    version = f"{cfg.get('funasr_clsr_version', 'unknown')}/format{cfg.get('clsr_format_version', '?')}"
    return f"clsr-{h.hexdigest()[:16]}", version


# --------------------------------------------------------------------------- validation + card


def _split_repo_id(repo_id: str) -> tuple[str, str]:
    if not isinstance(repo_id, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo_id):
        raise ValueError(f"repo id must look like 'owner/name', got {repo_id!r}")
    owner, name = repo_id.split("/")
    return owner, name


def needs_cmvn(config: dict) -> bool:
    """Whether a model config's frontend reads a global CMVN file (am.mvn)."""
    return str(config.get("frontend")) not in CMVN_FREE_FRONTENDS


def validate_model_dir(model_dir: str | os.PathLike, require_readme: bool = True) -> Path:
    """Check that ``model_dir`` is a complete, loadable CLSR model directory; returns its path.

    Raises :class:`ModelDirError` naming every missing or inconsistent part at once.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelDirError(f"{d}: not a directory")
    problems = []
    cmvn_free = False
    if (d / "config.yaml").is_file():
        try:
            cmvn_free = not needs_cmvn(_read_config(d))
        except ModelDirError:
            pass  # reported below
    for name in REQUIRED_FILES:
        if (name == "README.md" and not require_readme) or (name == "am.mvn" and cmvn_free):
            continue
        p = d / name.rstrip("/")
        ok = p.is_dir() if name.endswith("/") else p.is_file() and p.stat().st_size > 0
        if not ok:
            problems.append(f"{name} missing" + (" (model card: pass results=RESULTS.md to generate one)"
                                                  if name == "README.md" else ""))
    if (d / "config.yaml").is_file():
        try:
            cfg = _read_config(d)
        except ModelDirError as exc:
            problems.append(str(exc))
        else:
            if not cfg.get("trust_remote_code") or cfg.get("remote_code") != "funasr_clsr":
                problems.append("config.yaml lacks trust_remote_code: true / remote_code: funasr_clsr "
                                "(re-export it with funasr_clsr.export)")
            if cfg.get("model") != "CLSR":
                problems.append(f"config.yaml model is {cfg.get('model')!r}, not 'CLSR'")
    if (d / "configuration.json").is_file():
        try:
            json.loads((d / "configuration.json").read_text(encoding="utf-8"))
        except ValueError:
            problems.append("configuration.json is not valid JSON")
    if (d / "text_encoder").is_dir() and not (d / "text_encoder" / "config.json").is_file():
        problems.append("text_encoder/config.json missing")
    if problems:
        raise ModelDirError(f"{d}: not a complete CLSR model directory: " + "; ".join(problems))
    return d


def _demote_headings(markdown: str) -> str:
    """Nest a document under a '## Results' heading: '# x' -> '### x'."""
    return re.sub(r"^(#{1,4}) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", markdown, flags=re.M)


def model_card(model_dir: str | os.PathLike, repo_id: str = HUB_MODEL_ID,
               results: str | os.PathLike | None = None, license: str = DEFAULT_LICENSE,
               language: str = "en") -> str:
    """A ModelScope model card (README.md): front matter, usage, results table, details, licence.

    ``results`` is a recipe's RESULTS.md; its tables go in verbatim.
    """
    from funasr_clsr.version import __version__

    d = Path(model_dir)
    cfg = _read_config(d)
    enc, dec = cfg.get("encoder_conf") or {}, cfg.get("decoder_conf") or {}
    te_dir = d / "text_encoder"
    te = {}
    if (te_dir / "config.json").is_file():
        te = json.loads((te_dir / "config.json").read_text(encoding="utf-8"))
    n_tokens = sum(1 for line in (d / "tokens.txt").read_text(encoding="utf-8").splitlines() if line.strip()) \
        if (d / "tokens.txt").is_file() else "?"
    model_id, model_version = model_identity(d)
    size_mb = (d / "model.pt").stat().st_size / 2 ** 20
    if results is not None:
        rp = Path(results)
        if not rp.is_file():
            raise FileNotFoundError(f"{rp}: results file not found")
        results_md = _demote_headings(rp.read_text(encoding="utf-8").strip())
        results_src = f"From `{rp.name}` of the recipe that trained this model:\n\n"
    else:
        results_md, results_src = "No evaluation results were given for this upload.", ""
    return f"""---
tasks:
- auto-speech-recognition
frameworks:
- pytorch
license: {license}
language:
- {language}
tags:
- FunASR
- CLSR
- speech retrieval
- Paraformer
---

# CLSR speech retriever (`{repo_id}`)

CLSR, the end-to-end contrastive language-speech retriever (arXiv 2511.09282), as a FunASR model:
a Paraformer ASR branch whose token posteriors pass a straight-through argmax into a frozen
BERT-like text encoder, so spoken passages and text (or spoken) questions are compared in one
vector space. Use it to find the parts of long recordings that answer a question, and hand only
those to an audio LLM.

## Usage

```bash
pip install funasr_clsr      # the plugin; FunASR imports it through config.yaml (remote_code)
```

```python
import funasr_clsr                       # registers CLSR and the short name "clsr"
from funasr import AutoModel

am = AutoModel(model="{repo_id}", disable_update=True)     # or model="clsr"
res = am.generate(input="talk.wav", question="Who founded the city?", top_k=3)
# [{{"key": "talk", "question": ..., "segments": [{{"start", "end", "score", "transcript"}}, ...]}}]

clsr = am.model
q = clsr.encode_text(["Who founded the city?"])           # (1, D) unit vectors
c = clsr.encode_speech(["passage1.wav", "passage2.wav"])  # (2, D)
print(q @ c.T, clsr.transcribe(["passage1.wav"]))
```

Index once, query many (command line):

```bash
funasr-clsr index --model {repo_id} --index talks.idx talk1.wav talk2.wav
funasr-clsr query --model {repo_id} --index talks.idx "Who founded the city?" --top-k 3 --json
funasr-clsr clips --model {repo_id} --index talks.idx "Who founded the city?" --out clips/
```

## Results

{results_src}{results_md}

## Model details

| | |
|---|---|
| speech branch | {cfg.get('encoder', '?')} {enc.get('num_blocks', '?')} blocks x {enc.get('output_size', '?')}-d, {cfg.get('predictor', '?')}, {cfg.get('decoder', '?')} {dec.get('num_blocks', '?')} blocks |
| text encoder | {te.get('model_type', '?')}, {te.get('num_hidden_layers', '?')} layers x {te.get('hidden_size', '?')}-d (weights in model.pt, frozen) |
| output vocabulary | {n_tokens} WordPiece tokens (rows of the text encoder's vocabulary) |
| input | 16 kHz mono (other rates/channels are converted), 80-d fbank, LFR 7/6 |
| model.pt | {size_mb:.1f} MiB |
| index identity | `{model_id}` / `{model_version}` |
| exported by | funasr_clsr {cfg.get('funasr_clsr_version', '?')}; card written by funasr_clsr {__version__} |

## Licence

The model weights and this card: {license}. The code (funasr_clsr) is Apache-2.0. The text
encoder keeps its own licence, and the training data theirs (see the recipe's README).
"""


# --------------------------------------------------------------------------- publish


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _write_new(path: Path, text: str) -> None:
    """Write via a new inode: staged files may be hard links to the user's model directory."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _stage(src: Path, dst: Path, repo_id: str, results: str | os.PathLike | None, license: str,
           language: str) -> Path:
    """A publishable copy of ``src`` (hard links) with its card and hub id filled in."""
    shutil.copytree(src, dst, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(*_IGNORE))
    if results is not None or not (dst / "README.md").is_file():
        if results is None:
            raise ModelDirError(f"{src}: README.md (model card) missing: pass results=RESULTS.md "
                                "(--results) to generate one")
        _write_new(dst / "README.md", model_card(dst, repo_id, results, license, language))
    conf_path = dst / "configuration.json"
    if conf_path.is_file():
        try:
            conf = json.loads(conf_path.read_text(encoding="utf-8"))
        except ValueError:
            raise ModelDirError(f"{src}/configuration.json is not valid JSON") from None
        conf.setdefault("model_name_in_hub", {})["ms"] = repo_id
        _write_new(conf_path, json.dumps(conf, indent=2))
    return dst


def _check_no_secret(root: Path, token: str) -> None:
    """Refuse to upload a directory in which the token appears (small files are scanned)."""
    needle = token.encode()
    for p in root.rglob("*"):
        if p.is_file() and p.stat().st_size < 8 * 2 ** 20 and needle in p.read_bytes():
            raise PublishError(f"{p.relative_to(root)} contains the ModelScope token; remove it before publishing")


def install_local(model_dir: str | os.PathLike, repo_id: str = HUB_MODEL_ID) -> Path:
    """Copy a model directory into the local ModelScope cache (atomically replacing a copy)."""
    dest = local_cache_dir(repo_id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns(*_IGNORE))  # real copies
    old = None
    try:
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(dest, old)
        os.rename(tmp, dest)
    except BaseException:
        if old is not None and not dest.exists():
            os.rename(old, dest)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _redact(text: str, token: str) -> str:
    return _one_line(text.replace(token, "***") if token else text)


def publish(model_dir: str | os.PathLike, repo_id: str = HUB_MODEL_ID, token: str | None = None,
            visibility: str = "public", local: bool = False, commit_message: str | None = None,
            results: str | os.PathLike | None = None, license: str = DEFAULT_LICENSE, language: str = "en",
            endpoint: str | None = None) -> str:
    """Publish a model directory to ModelScope as ``repo_id``; returns the model's URL.

    The directory is validated (:data:`REQUIRED_FILES`; README.md may instead be generated
    from ``results``, a recipe's RESULTS.md) and staged in a temporary copy, whose
    configuration.json names ``repo_id``; the original is not modified. ``local=True`` copies it
    into the local ModelScope cache instead (no token, no network) and returns that path, so
    ``AutoModel(model="clsr")`` finds it offline. The token is ``token`` or
    ``$MODELSCOPE_API_TOKEN``; it is passed to ``HubApi`` per call (``login()`` would store it
    under ~/.modelscope) and never logged.
    """
    src = Path(model_dir)
    _split_repo_id(repo_id)
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {VISIBILITIES}, got {visibility!r}")
    validate_model_dir(src, require_readme=False)
    if not local:
        token = token or os.environ.get(ENV_TOKEN, "").strip() or None
        if not token:
            raise PublishError(f"no ModelScope token: set {ENV_TOKEN} or pass --token (write access to {repo_id})")
    with tempfile.TemporaryDirectory(prefix="clsr-publish-") as tmp:
        stage = _stage(src, Path(tmp) / "model", repo_id, results, license, language)
        validate_model_dir(stage)
        if local:
            dest = install_local(stage, repo_id)
            logger.info("installed %s into the local ModelScope cache: %s", src, dest)
            return str(dest)
        _check_no_secret(stage, token)
        return _upload(stage, src, repo_id, token, visibility, license, commit_message, endpoint)


def _upload(stage: Path, src: Path, repo_id: str, token: str, visibility: str, license: str,
            commit_message: str | None, endpoint: str | None) -> str:
    from modelscope.hub.api import HubApi

    message = commit_message or f"Upload CLSR model ({src.name})"
    logger.info("publishing %s to ModelScope %s (%s)", src, repo_id, visibility)
    try:
        api = HubApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, token=token, visibility=visibility, license=license, exist_ok=True)
        api.upload_folder(repo_id, folder_path=str(stage), commit_message=message, token=token,
                          ignore_patterns=list(_IGNORE), use_cache=False)
    except Exception as exc:  # the hub client raises many kinds; one line for the user
        raise PublishError(f"publishing {src} to ModelScope {repo_id} failed: {type(exc).__name__}: "
                           f"{_redact(str(exc), token)[:300]}") from None
    base = (endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or "https://www.modelscope.cn").rstrip("/")
    url = f"{base}/models/{repo_id}"
    logger.info("published: %s", url)
    return url

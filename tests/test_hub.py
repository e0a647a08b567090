"""funasr_clsr.hub: model identity, AutoModel(model="clsr") resolution, model card, ModelScope publishing."""
from __future__ import annotations

import hashlib
import http.server
import json
import logging
import shutil
import threading

import pytest
import torch

from clsr_testing import SECRET_CANARIES, QUESTIONS, export_tiny_model_dir

TOKEN = SECRET_CANARIES["ModelScope token"]  # conftest checks no file of the run holds it
RESULTS_MD = """# Tiny results

| system | WER | Q->C R@1 |
|---|---|---|
| CLSR tiny | 12.34 | 56.78 |
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_tiny_model_dir(tmp_path_factory.mktemp("hub_model"))


def _tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _no_token_anywhere(root):
    for p in root.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p


@pytest.fixture
def isolated_hub(monkeypatch, tmp_path):
    """Own ModelScope cache, no $FUNASR_CLSR_MODEL, and FunASR's tables restored afterwards."""
    from funasr.download import name_maps_from_hub as maps
    from funasr.register import tables
    from modelscope_hub.config import set_default_config

    from funasr_clsr import hub

    saved = (dict(maps.name_maps_ms), dict(maps.name_maps_hf), dict(tables.model_classes))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms_cache"))
    monkeypatch.delenv(hub.ENV_MODEL, raising=False)
    monkeypatch.delenv(hub.ENV_TOKEN, raising=False)
    set_default_config(None)  # modelscope re-reads MODELSCOPE_* from the environment
    yield tmp_path
    set_default_config(None)
    for live, old in zip((maps.name_maps_ms, maps.name_maps_hf, tables.model_classes), saved):
        live.clear()
        live.update(old)


class FakeEndpoint:
    """A local ModelScope stand-in: answers every request with ``status`` and records it."""

    def __init__(self, status=404, body=None):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self):
                n = int(self.headers.get("Content-Length") or 0)
                outer.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(n) if n else b""))
                out = json.dumps(body or {"Code": status, "Message": "fake hub says no", "Success": False}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_HEAD = _reply

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- identity


def test_model_identity_follows_the_files_not_the_folder(model_dir, tmp_path):
    from funasr_clsr.hub import ModelDirError, model_identity

    mid, version = model_identity(model_dir)
    assert mid.startswith("clsr-") and len(mid) == 21 and version == "0.1.0/format1"
    copy = shutil.copytree(model_dir, tmp_path / "elsewhere")
    assert model_identity(copy) == (mid, version)
    state = torch.load(copy / "model.pt", weights_only=True)
    key = next(k for k in state["state_dict"] if k.startswith("encoder."))
    state["state_dict"][key] = state["state_dict"][key] + 1e-3
    torch.save(state, copy / "model.pt")
    assert model_identity(copy)[0] != mid
    with pytest.raises(ModelDirError, match="not a CLSR model directory"):
        model_identity(tmp_path)


# --------------------------------------------------------------------------- resolution


def test_resolution_order_env_then_local_cache_then_hub_id(model_dir, isolated_hub, monkeypatch):
    from funasr_clsr import hub

    assert hub.resolve_model("clsr") == hub.HUB_MODEL_ID
    assert hub.resolve_model("someone/other-model") == "someone/other-model"
    assert hub.resolve_model(str(model_dir)) == str(model_dir.resolve())
    installed = hub.install_local(model_dir)
    assert installed == hub.local_cache_dir() == isolated_hub / "ms_cache" / "models" / "funasr-clsr" / "clsr-mini-en"
    assert hub.resolve_model("clsr") == str(installed) == hub.resolve_model(hub.HUB_MODEL_ID)
    monkeypatch.setenv(hub.ENV_MODEL, str(model_dir))
    assert hub.resolve_model("clsr") == str(model_dir.resolve())
    assert hub.resolve_model(hub.HUB_MODEL_ID) == str(installed)  # the env var names the short name only
    empty = isolated_hub / "empty"
    empty.mkdir()
    monkeypatch.setenv(hub.ENV_MODEL, str(empty))
    with pytest.raises(hub.ModelNotFoundError, match="FUNASR_CLSR_MODEL=.*is not a CLSR model directory"):
        hub.resolve_model("clsr")


def test_automodel_short_name_offline_local_copy_and_env(model_dir, isolated_hub, monkeypatch, tmp_path, capsys):
    from funasr import AutoModel

    from funasr_clsr import hub

    fake = FakeEndpoint(status=404)  # "offline": the hub knows no such model, fast
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", fake.url)
    try:
        assert hub.register_short_name() == hub.HUB_MODEL_ID
        with pytest.raises(hub.ModelNotFoundError) as err:
            AutoModel(model="clsr", device="cpu", disable_update=True, log_level="ERROR")
        msg = str(err.value)
        assert "\n" not in msg and "could not be downloaded" in msg and "AutoModel(model='/path/to/model_dir')" in msg
        assert "FUNASR_CLSR_MODEL" in msg and "publish DIR --local" in msg
        assert any(hub.HUB_MODEL_ID in r[1] for r in fake.requests)  # it did try the hub first

        results = tmp_path / "RESULTS.md"
        results.write_text(RESULTS_MD)
        installed = hub.publish(model_dir, local=True, results=results)
        assert hub.register_short_name() == installed
        n_requests = len(fake.requests)
        am = AutoModel(model="clsr", device="cpu", disable_update=True, log_level="ERROR")
        assert type(am.model).__name__ == "CLSR" and am.model_path == installed
        assert len(fake.requests) == n_requests  # found offline
        ref = AutoModel(model=str(model_dir), device="cpu", disable_update=True, log_level="ERROR").model
        assert torch.allclose(am.model.encode_text(QUESTIONS[:2]), ref.encode_text(QUESTIONS[:2]), atol=1e-6)
        am = AutoModel(model=hub.HUB_MODEL_ID, device="cpu", disable_update=True, log_level="ERROR")
        assert am.model_path == installed  # the hub id finds its installed copy offline too

        other = shutil.copytree(model_dir, tmp_path / "mine")
        monkeypatch.setenv(hub.ENV_MODEL, str(other))
        assert hub.register_short_name() == str(other.resolve())
        am = AutoModel(model="clsr", device="cpu", disable_update=True, log_level="ERROR")
        assert am.model_path == str(other.resolve())

        (tmp_path / "not_a_model").mkdir()
        monkeypatch.setenv(hub.ENV_MODEL, str(tmp_path / "not_a_model"))
        hub.register_short_name()
        with pytest.raises(hub.ModelNotFoundError, match="FUNASR_CLSR_MODEL=.*not_a_model is not a CLSR model"):
            AutoModel(model="clsr", device="cpu", disable_update=True, log_level="ERROR")
    finally:
        fake.close()


# --------------------------------------------------------------------------- validation, card


def test_validate_model_dir_lists_every_problem(model_dir, tmp_path):
    from funasr_clsr.hub import ModelDirError, validate_model_dir

    d = shutil.copytree(model_dir, tmp_path / "m")
    validate_model_dir(d, require_readme=False)
    (d / "model.pt").unlink()
    shutil.rmtree(d / "text_encoder")
    (d / "configuration.json").write_text("{not json")
    with pytest.raises(ModelDirError) as err:
        validate_model_dir(d)
    msg = str(err.value)
    for part in ("model.pt missing", "text_encoder/ missing", "README.md missing", "configuration.json is not valid"):
        assert part in msg
    assert "\n" not in msg


def test_model_card_has_results_usage_and_licence(model_dir, tmp_path):
    from funasr_clsr.hub import model_card, model_identity

    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS_MD)
    card = model_card(model_dir, "team/clsr-test", results=results, license="MIT")
    assert card.startswith("---\ntasks:\n- auto-speech-recognition")
    assert "license: MIT" in card and "## Licence" in card
    assert "| CLSR tiny | 12.34 | 56.78 |" in card and "### Tiny results" in card  # heading nested
    assert 'AutoModel(model="team/clsr-test"' in card and "question=" in card
    assert model_identity(model_dir)[0] in card
    with pytest.raises(FileNotFoundError, match="results file not found"):
        model_card(model_dir, results=tmp_path / "nope.md")


# --------------------------------------------------------------------------- publish


class FakeHubApi:
    """Stands in for modelscope.hub.api.HubApi at the boundary; records calls and the uploaded files."""

    calls: list = []
    uploaded: dict = {}
    fail_with: Exception | None = None

    def __init__(self, endpoint=None, token=None, **kwargs):
        FakeHubApi.calls.append(("init", {"endpoint": endpoint, "token": token}))

    def login(self, token):  # would store the token under ~/.modelscope: must not be used
        FakeHubApi.calls.append(("login", token))

    def create_repo(self, repo_id, **kwargs):
        FakeHubApi.calls.append(("create_repo", repo_id, kwargs))
        if FakeHubApi.fail_with is not None:
            raise FakeHubApi.fail_with

    def upload_folder(self, repo_id, folder_path=None, **kwargs):
        from pathlib import Path

        FakeHubApi.calls.append(("upload_folder", repo_id, kwargs))
        root = Path(folder_path)
        FakeHubApi.uploaded = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def fake_hub(monkeypatch):
    import importlib

    api_module = importlib.import_module("modelscope.hub.api")  # modelscope is a lazy package
    FakeHubApi.calls, FakeHubApi.uploaded, FakeHubApi.fail_with = [], {}, None
    monkeypatch.setattr(api_module, "HubApi", FakeHubApi)
    return FakeHubApi


def test_publish_uploads_a_complete_dir_and_never_leaks_the_token(model_dir, tmp_path, fake_hub, monkeypatch,
                                                                   caplog, capsys):
    from funasr_clsr import hub

    d = shutil.copytree(model_dir, tmp_path / "m")
    before = _tree_digest(d)
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS_MD)
    monkeypatch.setenv(hub.ENV_TOKEN, TOKEN)
    with caplog.at_level(logging.DEBUG):
        url = hub.publish(d, "team/clsr-test", visibility="private", results=results, commit_message="v1")
    assert url.endswith("/models/team/clsr-test")
    kinds = [c[0] for c in fake_hub.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]  # no login(): nothing stored under ~/.modelscope
    assert fake_hub.calls[0][1]["token"] == TOKEN
    _, repo, kwargs = fake_hub.calls[1]
    assert repo == "team/clsr-test" and kwargs["visibility"] == "private" and kwargs["exist_ok"] is True
    assert fake_hub.calls[2][2]["commit_message"] == "v1"
    files = fake_hub.uploaded
    assert {"config.yaml", "model.pt", "tokens.txt", "am.mvn", "configuration.json", "README.md",
            "text_encoder/config.json", "text_encoder/vocab.txt"} <= set(files)
    assert json.loads(files["configuration.json"])["model_name_in_hub"]["ms"] == "team/clsr-test"
    assert b"| CLSR tiny | 12.34 | 56.78 |" in files["README.md"]
    assert files["model.pt"] == (d / "model.pt").read_bytes()
    assert _tree_digest(d) == before  # the user's directory is untouched (staged copy)
    out, err = capsys.readouterr()
    assert kwargs["token"] == TOKEN and fake_hub.calls[2][2]["token"] == TOKEN  # handed to the client only
    for text in (caplog.text, out, err):
        assert TOKEN not in text
    assert all(TOKEN.encode() not in b for b in files.values())
    _no_token_anywhere(d)


def test_publish_errors_are_one_line_and_redacted(model_dir, tmp_path, fake_hub, monkeypatch):
    from funasr_clsr import hub

    d = shutil.copytree(model_dir, tmp_path / "m")
    with pytest.raises(hub.PublishError, match="MODELSCOPE_API_TOKEN"):
        hub.publish(d, "team/x")
    with pytest.raises(hub.ModelDirError, match="README.md .*results"):
        hub.publish(d, "team/x", token=TOKEN)
    (d / "README.md").write_text("# my card\n")
    with pytest.raises(ValueError, match="owner/name"):
        hub.publish(d, "no-slash", token=TOKEN)
    with pytest.raises(ValueError, match="visibility"):
        hub.publish(d, "team/x", token=TOKEN, visibility="secret")
    fake_hub.fail_with = RuntimeError(f"401 for token {TOKEN}\nrequest id 42")
    with pytest.raises(hub.PublishError) as err:
        hub.publish(d, "team/x", token=TOKEN)
    assert "\n" not in str(err.value) and TOKEN not in str(err.value) and "***" in str(err.value)
    fake_hub.fail_with = None
    (d / "notes.txt").write_text(f"token={TOKEN}\n")
    with pytest.raises(hub.PublishError, match="notes.txt contains the ModelScope token"):
        hub.publish(d, "team/x", token=TOKEN)
    (d / "notes.txt").unlink()
    (d / "model.pt").unlink()
    with pytest.raises(hub.ModelDirError, match="model.pt missing"):
        hub.publish(d, "team/x", token=TOKEN)
    assert "upload_folder" not in [c[0] for c in fake_hub.calls]


def test_publish_talks_to_the_endpoint_with_the_token_and_reports_refusal(model_dir, tmp_path, caplog):
    """The real HubApi against a local server that refuses: the token travels only in the header."""
    from funasr_clsr import hub

    d = shutil.copytree(model_dir, tmp_path / "m")
    (d / "README.md").write_text("# card\n")
    fake = FakeEndpoint(status=401, body={"Code": 401, "Message": "Unauthorized: invalid token", "Success": False})
    try:
        with caplog.at_level(logging.INFO), pytest.raises(hub.PublishError) as err:
            hub.publish(d, "team/clsr-test", token=TOKEN, endpoint=fake.url)
    finally:
        fake.close()
    msg = str(err.value)
    assert "\n" not in msg and "team/clsr-test" in msg and "401" in msg and TOKEN not in msg
    method, path, headers, body = fake.requests[0]
    assert (method, path) == ("POST", "/api/v1/models") and b'"Name": "clsr-test"' in body
    assert headers.get("Authorization") == f"Bearer {TOKEN}"
    assert TOKEN not in caplog.text
    _no_token_anywhere(d)


def test_the_end_of_run_secret_scan_finds_a_planted_token(tmp_path):
    """conftest's end-of-run check (no file of the run holds the token or an API key) can fail."""
    from clsr_testing import find_secret_leaks

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "server.log").write_text("all fine\n")
    assert find_secret_leaks(tmp_path) == []
    planted = tmp_path / "logs" / "publish.log"
    planted.write_bytes(b"\x00binary " + TOKEN.encode() + b" tail")
    try:
        assert find_secret_leaks(tmp_path) == [f"{planted}: ModelScope token"]
    finally:
        planted.unlink()  # else the end-of-run check finds it, rightly

"""``funasr-clsr serve``: an HTTP API (FastAPI) and a web page over one segment index.

Needs the ``serve`` extra (fastapi, uvicorn, python-multipart). See docs/serve.md.
"""
from .app import API_KEY_ENV, create_app

__all__ = ["API_KEY_ENV", "create_app"]

"""The FastAPI application of ``funasr-clsr serve``: index recordings, search them, play segments.

    app = create_app(LongFormRetriever("exp/clsr/model"), "talks.idx", allowed_dirs=["/data/talks"])
    uvicorn.run(app, host="127.0.0.1", port=8000)

The model is loaded once; indexing jobs run one at a time in a worker thread (see
:mod:`.jobs`); searches run in the request threads meanwhile. docs/serve.md describes the
API, the options and the security model.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..audio import AudioError, audio_info, check_speech_header, load_audio
from ..longform import check_questions, check_top_k, safe_name, write_clip
from ..retrieval.pipeline import _wav_declared_seconds
from .archive import Archive, UnknownRecordingError
from .batching import QueryBatcher
from .jobs import IndexingJobs
from .middleware import APIKeyMiddleware, BodyLimitMiddleware

__all__ = ["API_KEY_ENV", "MAX_TOP_K", "create_app"]

logger = logging.getLogger(__name__)

API_KEY_ENV = "FUNASR_CLSR_API_KEY"
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_TOP_K = 100
MAX_WHERE_CHARS = 2000
MAX_JSON_BYTES = 1 << 20  # JSON and form bodies: a question, a path, metadata
MAX_FIELD_BYTES = 64 << 10  # one text field of a multipart form
#: Ids the server gives or accepts for new recordings: a file-name-safe word, no path.
NEW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
JOB_ID = re.compile(r"[0-9a-f]{32}")


# --------------------------------------------------------------------------- request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddByPath(_Body):
    path: str = Field(description="a file under one of the directories the operator allowed (--allowed-dir)")
    recording_id: str | None = Field(None, description="default: from the file name")
    meta: dict[str, Any] | None = Field(None, description="flat metadata stored with the recording (LanceDB store)")
    replace: StrictBool = False


class SearchRequest(_Body):
    question: str | None = Field(None, description="the question text")
    top_k: StrictInt = Field(3, description=f"segments to return, 1..{MAX_TOP_K}")
    where: str | None = Field(None, description="a filter on the segments (the store's SQL-like syntax)")
    recording_id: str | None = Field(None, description="search this recording only")
    timeline: StrictBool = Field(False, description="also return every segment's score in the recording searched "
                                                    "(recording_id, else the best hit's)")


# --------------------------------------------------------------------------- helpers


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _refuse(status: int, message: Any) -> HTTPException:
    return HTTPException(status, _one_line(message))


def _validation_message(errors: Sequence[dict]) -> str:
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def _parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _refuse(422, _validation_message(exc.errors())) from None


def check_known_id(recording_id: str) -> str:
    """An id from a URL: refused when it could be read as a path (``..``) or holds control characters."""
    if not recording_id or len(recording_id) > 1024:
        raise _refuse(400, "recording id must be 1 to 1024 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in recording_id):
        raise _refuse(400, "recording id holds control characters")
    if ".." in re.split(r"[/\\]", recording_id):
        raise _refuse(400, f"recording id {recording_id!r} contains a '..' path component")
    return recording_id


def check_new_id(recording_id: str) -> str:
    if not isinstance(recording_id, str) or not NEW_ID.fullmatch(recording_id) or ".." in recording_id:
        raise _refuse(400, f"recording id {recording_id!r} is not allowed: use 1-128 letters, digits, '.', '_' "
                           "or '-', starting with a letter or digit")
    return recording_id


def default_id(filename: str) -> str:
    return re.sub(r"\.{2,}", ".", safe_name(Path(filename or "recording").stem, 100)) or "recording"


def check_meta(meta: Any) -> dict[str, Any] | None:
    """The store's own metadata checks, as a 400."""
    from ..retrieval.store import check_meta as store_check_meta

    if meta is None:
        return None
    try:
        return store_check_meta(meta, "meta") or None
    except ValueError as exc:
        raise _refuse(400, exc) from None


def check_recording_file(path: Path, name: str) -> None:
    """Refuse (400) what is not usable speech audio, reading the header only.

    The same limits as :func:`funasr_clsr.audio.load_audio`; the full decode happens in the
    indexing job, where a damaged frame fails the job and leaves the store untouched.
    """
    if path.stat().st_size == 0:
        raise _refuse(400, f"{name}: empty file (zero bytes)")
    try:
        info = audio_info(path)
        check_speech_header(name, info.sample_rate, info.frames)
    except (AudioError, OSError) as exc:
        raise _refuse(400, str(exc).replace(str(path), name)) from None
    declared = _wav_declared_seconds(str(path))
    if declared is not None and declared > info.duration_s + 0.01:
        raise _refuse(400, f"{name}: cut off: the wav header announces {declared:.2f} s, the file holds "
                           f"{info.duration_s:.2f} s")


def _suffix(filename: str) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".audio"


def _form_text(form: Any, key: str) -> str | None:
    value = form.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _refuse(400, f"form field {key!r} must be text, not a file")


def _form_bool(form: Any, key: str) -> bool:
    value = (_form_text(form, key) or "false").strip().lower()
    if value not in ("true", "1", "false", "0"):
        raise _refuse(400, f"form field {key!r} must be true or false")
    return value in ("true", "1")


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(400, f"the body is not valid JSON ({type(exc).__name__})") from None


async def _form(request: Request):
    try:
        return await request.form(max_files=1, max_fields=8, max_part_size=MAX_FIELD_BYTES)
    except ClientDisconnect:
        logger.info("an upload was cut off by the client; nothing was kept")
        raise _refuse(400, "the upload was cut off before its end") from None


def _clip_url(recording_id: str, start: float, end: float) -> str:
    return f"/v1/recordings/{quote(recording_id, safe='')}/audio?start={float(start)!r}&end={float(end)!r}"


def _hit(h: dict[str, Any], rank: int) -> dict[str, Any]:
    return {"rank": rank, "score": round(float(h["score"]), 6), "recording_id": h["recording_id"],
            "start": float(h["start"]), "end": float(h["end"]), "transcript": h.get("transcript"),
            "clip_url": _clip_url(h["recording_id"], h["start"], h["end"])}


# --------------------------------------------------------------------------- the app


def create_app(retriever_or_model: Any, index_dir: str | os.PathLike, *, uploads_dir: str | os.PathLike | None = None,
               allowed_dirs: Sequence[str | os.PathLike] = (), api_key: str | None = None,
               max_upload_bytes: int = 512 << 20, cors_origins: Sequence[str] = (), max_clip_seconds: float = 600.0,
               max_question_seconds: float = 60.0, window_s: float = 40.0, batch_size: int = 8,
               search_workers: int = 1) -> FastAPI:
    """The server for one index.

    ``retriever_or_model``: a :class:`~funasr_clsr.retrieval.pipeline.LongFormRetriever`, or what
    it takes as a model (a CLSR, an AutoModel, a model directory); then ``window_s`` and
    ``batch_size`` configure it. ``uploads_dir`` keeps uploaded recordings (default: a sibling
    ``<index>.uploads`` of the index directory, never inside it). Requests may name files only
    under ``allowed_dirs``. ``api_key``: default ``$FUNASR_CLSR_API_KEY``; when set, every request
    but the page's static files and the API description needs ``Authorization: Bearer <key>``.
    ``search_workers``: threads that answer the text searches waiting at a time in one batch
    (:class:`~funasr_clsr.serve.batching.QueryBatcher`).
    """
    from ..retrieval.pipeline import LongFormRetriever

    retriever = retriever_or_model if isinstance(retriever_or_model, LongFormRetriever) else \
        LongFormRetriever(retriever_or_model, window_s=window_s, batch_size=batch_size)
    index_path = Path(index_dir).resolve()
    uploads = Path(uploads_dir) if uploads_dir is not None else index_path.with_name(index_path.name + ".uploads")
    if Path(uploads).resolve().is_relative_to(index_path):
        raise ValueError(f"{uploads}: the uploads folder must not lie inside the index directory {index_path}")
    allowed = [Path(os.path.realpath(d)) for d in allowed_dirs]
    for d in allowed:
        if not d.is_dir():
            raise ValueError(f"{d}: allowed directory does not exist")
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be >= 1, got {max_upload_bytes}")

    archive = Archive(retriever, index_path, uploads)
    jobs = IndexingJobs(archive)
    batcher = QueryBatcher(lambda qs: retriever.encode_questions(qs)[1],
                           lambda vectors, k: archive.search(vectors, k), workers=search_workers)
    submit_lock = threading.Lock()  # check-then-submit of a recording id is one step

    @asynccontextmanager
    async def lifespan(_app):
        yield
        jobs.close()
        batcher.close()

    from .. import __version__

    app = FastAPI(title="funasr-clsr", version=__version__, lifespan=lifespan,
                  description="Index long recordings with CLSR and search them by question. See docs/serve.md.")
    app.state.archive, app.state.jobs, app.state.retriever = archive, jobs, retriever
    # Documents the bearer scheme in /docs (its Authorize button); APIKeyMiddleware enforces it.
    bearer = [Depends(HTTPBearer(auto_error=False, description=f"the server's ${API_KEY_ENV}"))] if api_key else []

    # ------------------------------------------------------------ errors: one-line JSON

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        return JSONResponse({"error": _one_line(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        return JSONResponse({"error": _validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, _one_line(exc),
                     exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    # ------------------------------------------------------------ page and health

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    model = retriever.model
    backend = ({"none": "onnx", "all": "onnx int8", "text": "onnx int8 text"}[model.quantize]
               if hasattr(model, "speech_session") else "torch")

    @app.get("/health", dependencies=bearer, tags=["server"])
    def health():
        return {"status": "ok", "model_id": retriever.model_id, "model_version": retriever.model_version,
                "backend": backend, "segments": len(archive),
                "jobs_pending": len(jobs.pending()), "max_upload_bytes": max_upload_bytes,
                "path_inputs": bool(allowed)}

    # ------------------------------------------------------------ recordings

    def _submit(path: Path, recording_id: str, name: str, meta: dict | None, replace: bool, owned: bool):
        with submit_lock:
            busy = {j.recording_id for j in jobs.pending()}
            if recording_id in busy:
                raise _refuse(409, f"recording {recording_id!r} is being indexed already")
            if recording_id in archive and not replace:
                raise _refuse(409, f"recording {recording_id!r} is already indexed; pass replace=true to re-index "
                                   "it or choose another recording_id")
            job = jobs.submit(str(path), recording_id, name, meta=meta, replace=replace, owned=owned)
        return JSONResponse({**job.to_dict(), "job_url": f"/v1/jobs/{job.id}"}, status_code=202)

    def _keep_upload(upload: UploadFile, recording_id: str, meta, replace: bool):
        name = os.path.basename(upload.filename or "upload")
        dest = archive.upload_path(recording_id, safe_name(Path(name).stem, 100) + _suffix(name))
        try:
            with open(dest, "wb") as out:
                shutil.copyfileobj(upload.file, out, 1 << 20)
            check_recording_file(dest, name)
            return _submit(dest, recording_id, name, meta, replace, owned=True)
        except BaseException:
            archive.discard_upload(dest)
            raise

    def _add_path(body: AddByPath):
        if not allowed:
            raise _refuse(403, "this server takes no file paths (start it with --allowed-dir DIR); upload the file")
        if "\x00" in body.path or not body.path.strip():
            raise _refuse(400, "path is empty or holds a NUL byte")
        given = Path(body.path).expanduser()
        real = Path(os.path.realpath(given if given.is_absolute() else allowed[0] / given))
        if not any(real.is_relative_to(d) for d in allowed):
            raise _refuse(403, f"{body.path}: outside the directories this server may read")
        if not real.is_file():
            raise _refuse(404, f"{body.path}: no such file")
        check_recording_file(real, body.path)
        rid = check_new_id(body.recording_id if body.recording_id is not None else default_id(real.name))
        return _submit(real, rid, body.path, check_meta(body.meta), body.replace, owned=False)

    upload_doc = {"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}, "recording_id": {"type": "string"},
            "meta": {"type": "string", "description": "a JSON object"}, "replace": {"type": "boolean"}}}},
        "application/json": {"schema": AddByPath.model_json_schema()}}}}

    @app.post("/v1/recordings", status_code=202, dependencies=bearer, tags=["recordings"],
              openapi_extra=upload_doc, summary="Index a recording (upload, or a path the server may read)")
    async def add_recording(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            return await run_in_threadpool(_add_path, _parse(AddByPath, await _json(request)))
        if not ctype.startswith("multipart/form-data"):
            raise _refuse(415, "send the recording as multipart/form-data (field 'file') or JSON {\"path\": ...}")
        form = await _form(request)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise _refuse(400, "no file in the form field 'file' (or the upload was cut off before its end)")
            rid_text = _form_text(form, "recording_id")
            rid = check_new_id(rid_text if rid_text is not None else default_id(upload.filename or ""))
            meta = check_meta(_form_text(form, "meta") or None)  # a JSON object in a text field
            replace = _form_bool(form, "replace")
            return await run_in_threadpool(_keep_upload, upload, rid, meta, replace)
        finally:
            await form.close()

    @app.get("/v1/recordings", dependencies=bearer, tags=["recordings"], summary="The indexed recordings")
    def list_recordings():
        return {"recordings": archive.recordings()}

    @app.delete("/v1/recordings/{recording_id:path}", dependencies=bearer, tags=["recordings"])
    def delete_recording(recording_id: str):
        rid = check_known_id(recording_id)
        if rid in {j.recording_id for j in jobs.pending()}:
            raise _refuse(409, f"recording {rid!r} is being indexed; delete it once the job has finished")
        try:
            n = archive.remove(rid)
        except UnknownRecordingError as exc:
            raise _refuse(404, exc) from None
        return {"recording_id": rid, "segments_removed": n}

    @app.get("/v1/recordings/{recording_id:path}/audio", dependencies=bearer, tags=["recordings"],
             response_class=FileResponse, summary="One segment of a recording as wav")
    def segment_audio(recording_id: str, start: float, end: float):
        rid = check_known_id(recording_id)
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise _refuse(400, f"start={start} and end={end} are not a span of seconds (0 <= start < end)")
        if end - start > max_clip_seconds:
            raise _refuse(400, f"the span is {end - start:.1f} s; at most {max_clip_seconds:g} s per request")
        try:
            source = archive.source(rid)
        except UnknownRecordingError as exc:
            raise _refuse(404, exc) from None
        try:
            duration = audio_info(source).duration_s
        except (AudioError, OSError):
            raise _refuse(410, f"the audio of recording {rid!r} is no longer readable on the server") from None
        if end > duration + 1e-3:
            raise _refuse(400, f"end={end} is past the end of recording {rid!r} ({duration:.3f} s)")
        tmp = Path(tempfile.mkdtemp(prefix="clsr-clip-"))
        try:
            clip = write_clip(source, start, min(end, duration), tmp / "clip.wav", sr=retriever.sr)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FileResponse(clip, media_type="audio/wav", background=BackgroundTask(shutil.rmtree, tmp, True),
                            filename=f"{safe_name(rid, 60)}_{start:.2f}-{end:.2f}.wav")

    # ------------------------------------------------------------ jobs

    @app.get("/v1/jobs/{job_id}", dependencies=bearer, tags=["recordings"], summary="An indexing job's state")
    def get_job(job_id: str):
        if not JOB_ID.fullmatch(job_id):
            raise _refuse(400, "a job id is 32 hex digits")
        job = jobs.get(job_id)
        if job is None:
            raise _refuse(404, f"unknown job {job_id}")
        return job.to_dict()

    # ------------------------------------------------------------ search

    def _search(req: SearchRequest, wav: Path | None = None, wav_name: str = "") -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            k = check_top_k(req.top_k)
        except ValueError as exc:
            raise _refuse(400, exc) from None
        if k > MAX_TOP_K:
            raise _refuse(400, f"top_k must be at most {MAX_TOP_K}, got {k}")
        if req.where is not None and (not req.where.strip() or len(req.where) > MAX_WHERE_CHARS):
            raise _refuse(400, f"where must be a non-empty filter of at most {MAX_WHERE_CHARS} characters")
        rid = check_known_id(req.recording_id) if req.recording_id is not None else None
        if rid is not None and rid not in archive:
            raise _refuse(404, f"unknown recording id {rid!r}")
        if rid is not None and req.where is not None:
            raise _refuse(400, "give either recording_id or where, not both")
        timing = None
        try:
            if wav is not None:
                seconds = audio_info(wav).duration_s  # the header first: no decoding of an hour of "question"
                if seconds > max_question_seconds:
                    raise _refuse(400, f"{wav_name}: a spoken question of {seconds:.1f} s is longer than "
                                       f"{max_question_seconds:g} s")
                load_audio(wav, target_sr=retriever.sr, name=wav_name)  # its checks: rate, NaN, length
                records, vectors = retriever.encode_questions(question_wavs=[wav])
                record = {"question": wav_name, "question_transcript": records[0].get("question_transcript")}
            else:
                questions = check_questions(req.question)
                record = {"question": questions[0], "question_transcript": None}
                if rid is None and req.where is None:  # the common search: batched with concurrent ones
                    vectors, best, timing = batcher(questions[0], k)
                else:
                    _, vectors = retriever.encode_questions(questions)
        except AudioError as exc:
            raise _refuse(400, str(exc).replace(str(wav), wav_name)) from None
        except ValueError as exc:
            raise _refuse(400, exc) from None
        t_encoded = time.perf_counter()
        timeline = None
        try:
            if rid is not None:
                scored = archive.recording_scores(rid, vectors[:1])
                best = sorted(scored, key=lambda h: -h["score"])[:k]
                timeline = scored if req.timeline else None
            else:
                if timing is None:  # not searched by the batcher
                    try:
                        best = archive.search(vectors[:1], k, where=req.where)[0]
                    except ValueError as exc:  # FilterError: a where the store cannot parse or apply
                        raise _refuse(400, exc) from None
                if req.timeline and best:
                    timeline = archive.recording_scores(best[0]["recording_id"], vectors[:1])
        except UnknownRecordingError as exc:  # deleted meanwhile
            raise _refuse(404, exc) from None
        out = {**record, "top_k": k, "hits": [_hit(h, i) for i, h in enumerate(best, start=1)], "timeline": None}
        if timeline is not None:
            out["timeline"] = {"recording_id": timeline[0]["recording_id"] if timeline else rid,
                               "segments": [{"start": float(h["start"]), "end": float(h["end"]),
                                             "score": round(float(h["score"]), 6)} for h in timeline]}
        t_end = time.perf_counter()
        out["took_ms"] = round(1000 * (t_end - t0), 2)
        # where a search's time goes: the question through the model, then the store (batched: the
        # batch's passes, and how many questions it held)
        out["timing_ms"] = timing or {"encode": round(1000 * (t_encoded - t0), 2),
                                      "search": round(1000 * (t_end - t_encoded), 2), "batch": 1}
        return out

    search_doc = {"requestBody": {"content": {
        "application/json": {"schema": SearchRequest.model_json_schema()},
        "multipart/form-data": {"schema": {"type": "object", "required": ["audio"], "properties": {
            "audio": {"type": "string", "format": "binary", "description": "a spoken question"},
            "top_k": {"type": "integer"}, "where": {"type": "string"}, "recording_id": {"type": "string"},
            "timeline": {"type": "boolean"}}}}}}}

    @app.post("/v1/search", dependencies=bearer, tags=["search"], openapi_extra=search_doc,
              summary="The segments that best answer a question (text, or a spoken question upload)")
    async def search(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            return await run_in_threadpool(_search, _parse(SearchRequest, await _json(request)))
        if not ctype.startswith("multipart/form-data"):
            raise _refuse(415, "send JSON {\"question\": ...} or a multipart form with a spoken question in 'audio'")
        form = await _form(request)
        try:
            upload = form.get("audio")
            if not isinstance(upload, UploadFile):
                raise _refuse(400, "no spoken question in the form field 'audio'")
            top_k = _form_text(form, "top_k")
            if top_k is not None and not re.fullmatch(r"-?\d{1,6}", top_k.strip()):
                raise _refuse(400, f"top_k must be an integer, got {top_k!r}")
            req = _parse(SearchRequest, {"top_k": int(top_k) if top_k is not None else 3,
                                         "where": _form_text(form, "where"),
                                         "recording_id": _form_text(form, "recording_id"),
                                         "timeline": _form_bool(form, "timeline")})
            name = os.path.basename(upload.filename or "question")
            return await run_in_threadpool(_search_spoken, req, upload, name)
        finally:
            await form.close()

    def _search_spoken(req: SearchRequest, upload: UploadFile, name: str):
        fd, tmp = tempfile.mkstemp(prefix=".question-", suffix=_suffix(name), dir=archive.uploads_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(upload.file, out, 1 << 20)
            if os.path.getsize(tmp) == 0:
                raise _refuse(400, f"{name}: empty file (zero bytes)")
            return _search(req, Path(tmp), name)
        finally:
            os.unlink(tmp)

    # ------------------------------------------------------------ middleware (the last added runs first)

    def limit_for(content_type: str) -> int:
        return max_upload_bytes if content_type.startswith("multipart/form-data") else MAX_JSON_BYTES

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    if api_key:
        app.add_middleware(APIKeyMiddleware, key=api_key, public=_is_public)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def _is_public(path: str) -> bool:
    """The page's files and the API description: a browser loads them without a way to add a header, and
    they hold no data. Everything else needs the key."""
    return path in ("/", "/docs", "/docs/oauth2-redirect", "/openapi.json") or path.startswith("/static/")

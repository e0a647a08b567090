"""``funasr-clsr``: index long recordings, query them, cut clips, export and publish models.

    funasr-clsr index   --model DIR --index talks.idx talk1.wav talk2.wav [--list wav.scp] [--meta JSON]
    funasr-clsr index   --model DIR --index talks.idx --list all.scp --ray ray://head:10001 --num-workers 8
    funasr-clsr query   --model DIR --index talks.idx "Who founded the city?" [--question-wav q.wav] --top-k 3
    funasr-clsr query   --model DIR --index talks.idx "Who?" --where "date >= '2026-01-01' AND speaker = 'Ada'"
    funasr-clsr clips   --model DIR --index talks.idx "Who founded the city?" --out clips/
    funasr-clsr list    --index talks.idx [--json]
    funasr-clsr delete  --index talks.idx RECORDING_ID [RECORDING_ID ...]
    funasr-clsr migrate --index old_faiss.idx [--out new.idx]
    funasr-clsr export  --exp exp/clsr --checkpoint best --out exp/clsr/model [--cmvn am.mvn]
    funasr-clsr publish exp/clsr/model --repo-id owner/name [--results RESULTS.md] [--local]

``--model`` takes a model directory, the short name ``clsr`` (see docs/longform.md) or a hub id.
``--json`` prints machine-readable output on stdout (everything else goes to stderr). Errors are
one line on stderr and exit code 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

LIST_SUFFIXES = (".scp", ".list", ".lst", ".txt")
logger = logging.getLogger("funasr_clsr.cli")


class CLIError(Exception):
    """A user error with a one-line message."""


# --------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _hms(seconds: float) -> str:
    m, s = divmod(float(seconds), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h:d}:{m:02d}:{s:06.3f}"


def _emit(args, payload: Any, text: str) -> None:
    """JSON on stdout with --json, else the human-readable text."""
    out = sys.__stdout__ if getattr(args, "_stdout", None) is None else args._stdout
    if args.json:
        out.write(json.dumps(payload, ensure_ascii=False, indent=1) + "\n")
    else:
        out.write(text.rstrip("\n") + "\n")
    out.flush()


def _retriever(args, **kwargs):
    from funasr_clsr.retrieval.pipeline import LongFormRetriever

    model = args.model
    if getattr(args, "backend", "torch") == "onnx":  # the exported graphs on onnxruntime (docs/export.md)
        from funasr_clsr.onnx_runtime import OnnxCLSR

        model = OnnxCLSR(args.model, quantize=args.quantize)
    return LongFormRetriever(model, batch_size=args.batch_size, device=args.device, **kwargs)


def _recordings(args) -> list[tuple[str | None, str, dict | None]]:
    from funasr_clsr.retrieval.pipeline import read_list_file

    items: list[tuple[str | None, str, dict | None]] = []
    for lst in args.list or []:
        items += read_list_file(lst)
    for a in args.audio:
        if a.lower().endswith(LIST_SUFFIXES):
            items += read_list_file(a)
        else:
            items.append((None, a, None))
    if not items:
        raise CLIError("no recordings given: pass audio files and/or --list FILE")
    return items


def _meta_arg(text: str | None) -> dict | None:
    from funasr_clsr.retrieval.store import check_meta

    if text is None:
        return None
    try:
        return check_meta(text, "--meta")
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _open_store(path: str):
    """An index directory opened without a model (list, delete): the identity comes from the index."""
    from funasr_clsr.retrieval.store import LanceSegmentStore

    return LanceSegmentStore.load(path)


# --------------------------------------------------------------------------- commands


def cmd_index(args) -> int:
    meta = _meta_arg(args.meta)  # bad input fails before the model loads
    items = _recordings(args)
    if args.ray is None and (args.num_workers is not None or args.num_gpus_per_worker is not None):
        raise CLIError("--num-workers / --num-gpus-per-worker need --ray")
    if args.ray is not None and args.store != "lance":
        raise CLIError("--ray writes to the LanceDB store; drop --store faiss")
    options = {} if args.ann_threshold is None else {"ann_threshold": args.ann_threshold}
    retriever = _retriever(args, window_s=args.window, overlap_s=args.overlap, segmenter=args.segmenter,
                           vad_model=args.vad_model)
    report = retriever.index_recordings(items, args.index, kind=args.kind, progress=not args.no_progress,
                                        replace=args.replace, meta=meta, store=args.store, ray=args.ray,
                                        num_workers=args.num_workers or 2,
                                        num_gpus_per_worker=args.num_gpus_per_worker or 0.0, **options)
    report.update(model_id=retriever.model_id, model_version=retriever.model_version)
    lines = [f"{args.index}: {report['num_segments']} segments from {report['num_recordings']} recordings "
             f"({len(report['indexed'])} indexed now, {len(report['skipped'])} skipped, "
             f"{len(report['failed'])} failed)"]
    lines += [f"  skipped {s['path']} (already indexed or silent)" for s in report["skipped"]]
    _emit(args, report, "\n".join(lines))
    if report["failed"]:
        for f in report["failed"]:
            print(f"funasr-clsr index: error: {f['error']}", file=sys.stderr)
        return 2
    return 0


def _query(args) -> tuple[Any, list[list[dict]]]:
    if not args.questions and not args.question_wav:
        raise CLIError("no question given: pass question text and/or --question-wav WAV")
    retriever = _retriever(args)
    index = retriever.open_index(args.index, store=args.store)
    hits = retriever.query(index, args.questions or None, top_k=args.top_k, question_wavs=args.question_wav,
                           where=args.where)
    return retriever, hits


def _hits_text(hits: list[list[dict]]) -> str:
    lines = []
    for qi, qhits in enumerate(hits, start=1):
        q = qhits[0]["question"] if qhits else "?"
        lines.append(f"Q{qi}: {q}")
        if not qhits:
            lines.append("  (no segments in the index)")
        for h in qhits:
            text = (h.get("transcript") or "").strip()
            lines.append(f"  {h['rank']:>2}. {h['score']:.4f}  {h['path']}  {_hms(h['start'])}-{_hms(h['end'])}"
                         + (f"  \"{text[:120]}\"" if text else ""))
    return "\n".join(lines)


def cmd_query(args) -> int:
    _, hits = _query(args)
    _emit(args, [{"question": (q[0]["question"] if q else None), "hits": q} for q in hits], _hits_text(hits))
    return 0


def cmd_list(args) -> int:
    store = _open_store(args.index)
    recs = store.list_recordings()
    seconds = sum(r["seconds"] for r in recs)
    payload = {"index": str(args.index), "model_id": store.model_id, "model_version": store.model_version,
               "embedding_dim": store.embedding_dim, "kind": store.kind, "num_recordings": len(recs),
               "num_segments": sum(r["segments"] for r in recs), "hours": round(seconds / 3600, 4),
               "recordings": [{**r, "hours": round(r["seconds"] / 3600, 4)} for r in recs]}
    lines = [f"{args.index}: {len(recs)} recordings, {payload['num_segments']} segments, {seconds / 3600:.2f} hours "
             f"(model {store.model_id} {store.model_version})"]
    for r in recs:
        meta = json.dumps(r["meta"], ensure_ascii=False) if r["meta"] else ""
        lines.append(f"  {r['recording_id']}  {r['segments']} segments  {_hms(r['seconds'])}  {r['source']}"
                     + (f"  {meta}" if meta else ""))
    _emit(args, payload, "\n".join(lines))
    return 0


def cmd_delete(args) -> int:
    store = _open_store(args.index)
    counts = store.remove_many(args.recording_ids)
    left = len(store)
    _emit(args, {"index": str(args.index), "deleted": counts, "segments_deleted": sum(counts.values()),
                 "num_segments": left},
          f"{args.index}: deleted {len(counts)} recordings ({sum(counts.values())} segments); {left} segments left")
    return 0


def cmd_migrate(args) -> int:
    from funasr_clsr.retrieval.store import migrate_faiss_index

    res = migrate_faiss_index(args.index, out=args.out)
    text = f"{args.index}: {res['segments']} segments of {res['recordings']} recordings -> LanceDB at {res['index']}"
    if res["backup"]:
        text += f" (the FAISS index is kept as {res['backup']})"
    _emit(args, res, text)
    return 0


def cmd_clips(args) -> int:
    retriever, hits = _query(args)
    manifest = retriever.write_clips(hits, args.out)
    doc = json.loads(Path(manifest).read_text(encoding="utf-8"))
    n = sum(len(q["clips"]) for q in doc["questions"])
    _emit(args, {"manifest": str(manifest), **doc}, f"{n} clips and {manifest}")
    return 0


def cmd_export(args) -> int:
    result = export_experiment(args.exp, args.out, checkpoint=args.checkpoint, cmvn=args.cmvn,
                               text_encoder=args.text_encoder, tokens=args.tokens, readme=args.readme,
                               hub_id=args.hub_id, verify=not args.no_verify)
    _emit(args, result, f"exported {result['checkpoint']} -> {result['out']}")
    return 0


def cmd_publish(args) -> int:
    from funasr_clsr.hub import publish

    where = publish(args.model_dir, args.repo_id, token=args.token, visibility=args.visibility, local=args.local,
                    commit_message=args.commit_message, results=args.results, license=args.license,
                    language=args.language)
    _emit(args, {"published": where, "repo_id": args.repo_id, "local": args.local},
          f"{'installed' if args.local else 'published'}: {where}")
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from funasr_clsr.serve import API_KEY_ENV, create_app

    if args.search_workers < 1:  # before the model loads
        raise CLIError(f"--search-workers must be >= 1, got {args.search_workers}")
    retriever = _retriever(args, window_s=args.window)
    app = create_app(retriever, args.index, uploads_dir=args.uploads, allowed_dirs=args.allowed_dir,
                     max_upload_bytes=int(args.max_upload_mb * 2 ** 20), cors_origins=args.cors_origin,
                     search_workers=args.search_workers)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(API_KEY_ENV):
        logger.warning("serving on %s without %s: anyone who can reach it can index and search", args.host,
                       API_KEY_ENV)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0

# --------------------------------------------------------------------------- export


def _find_checkpoint(exp: Path, checkpoint: str) -> Path:
    """``auto`` (newest model.pt.avg*, else .best, else model.pt), ``best``, ``last``, ``avgN``,
    a file name in ``exp`` or a path."""
    available = sorted(p.name for p in exp.glob("model.pt*") if p.is_file())
    if checkpoint == "auto":
        avg = sorted(exp.glob("model.pt.avg*"), key=lambda p: p.stat().st_mtime)
        for cand in ([avg[-1]] if avg else []) + [exp / "model.pt.best", exp / "model.pt"]:
            if cand.is_file():
                return cand
        raise CLIError(f"{exp}: no checkpoint (model.pt, model.pt.best, model.pt.avgN); is it a training output dir?")
    names = {"best": "model.pt.best", "last": "model.pt"}
    name = names.get(checkpoint) or (f"model.pt.{checkpoint}" if checkpoint.startswith(("avg", "ep")) else checkpoint)
    for cand in (exp / name, Path(checkpoint)):
        if cand.is_file():
            return cand
    raise CLIError(f"{exp}: checkpoint {checkpoint!r} not found (available: {', '.join(available) or 'none'})")


def _resolve_path(value: str | None, exp: Path, what: str, flag: str) -> str:
    """A path from a training config: as given, else relative to the experiment or its parents."""
    if not value:
        raise CLIError(f"the training config has no {what}; pass {flag}")
    p = Path(str(value)).expanduser()
    cands = [p] if p.is_absolute() else [p] + [base / p for base in [exp, *list(exp.parents)[:4]]]
    for c in cands:
        if c.exists():
            return str(c.resolve())
    raise CLIError(f"{what} {value!r} from {exp}/config.yaml not found (looked in the current directory and "
                   f"{exp} and its parents); pass {flag}")


def _load_state(path: Path) -> dict:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # older checkpoints pickle non-tensor objects; the file is the user's own
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise CLIError(f"{path}: not a readable torch checkpoint ({_one_line(exc)[:160]})") from None
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not ckpt or not all(hasattr(v, "shape") for v in ckpt.values()):
        raise CLIError(f"{path}: holds no model state_dict")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in ckpt.items()}


def export_experiment(exp_dir: str, out_dir: str, checkpoint: str = "auto", cmvn: str | None = None,
                      text_encoder: str | None = None, tokens: str | None = None, readme: str | None = None,
                      hub_id: str = "", verify: bool = True) -> dict:
    """Build the model of a FunASR training output dir, load a checkpoint, export a model dir.

    Works for every model the plugin registers (CLSR and the ParaBGE / CLAP-style baselines).
    """
    exp = Path(exp_dir)
    if not (exp / "config.yaml").is_file():
        raise CLIError(f"{exp}: no config.yaml (not a FunASR training output dir)")
    ckpt = _find_checkpoint(exp, checkpoint)
    from funasr_clsr.export import read_training_config

    try:
        cfg = read_training_config(exp / "config.yaml")
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    cfg.setdefault("tokenizer_conf", {})
    cfg.setdefault("frontend_conf", {})
    cfg["tokenizer_conf"]["token_list"] = _resolve_path(tokens or cfg["tokenizer_conf"].get("token_list"), exp,
                                                        "tokenizer_conf.token_list", "--tokens")
    cmvn_value = cmvn or cfg["frontend_conf"].get("cmvn_file") or (str(exp / "am.mvn") if (exp / "am.mvn").is_file()
                                                                    else None)
    from funasr_clsr.hub import needs_cmvn

    if needs_cmvn(cfg):
        cfg["frontend_conf"]["cmvn_file"] = _resolve_path(cmvn_value, exp, "frontend_conf.cmvn_file (am.mvn)", "--cmvn")
    else:
        cfg["frontend_conf"].pop("cmvn_file", None)
    te_conf = (cfg.get("model_conf") or {}).get("text_encoder_conf") or {}
    if te_conf:
        te_conf["path"] = _resolve_path(text_encoder or te_conf.get("path"), exp,
                                        "model_conf.text_encoder_conf.path", "--text-encoder")
        te_conf["load_weights"] = True  # fills text_encoder.* should the checkpoint lack them

    import torch

    import funasr_clsr  # noqa: F401
    from funasr import AutoModel
    from funasr.register import tables

    from funasr_clsr.export import MODEL_KEYS, export_model_dir

    model_class = tables.model_classes.get(str(cfg.get("model")))
    if not isinstance(model_class, type) or not model_class.__module__.startswith("funasr_clsr."):
        raise CLIError(f"{exp}/config.yaml trains model {cfg.get('model')!r}, not a funasr_clsr model "
                       "(CLSR, ParaBGE, CLAPStyle)")

    build = {k: cfg[k] for k in MODEL_KEYS if cfg.get(k) is not None}
    if cfg.get("clsr_format_version") is not None:
        build["clsr_format_version"] = cfg["clsr_format_version"]
    with contextlib.redirect_stdout(sys.stderr):
        model = AutoModel(**build, device="cpu", disable_update=True, log_level="ERROR",
                          ncpu=torch.get_num_threads()).model
    state = _load_state(ckpt)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    te = getattr(model, "text_encoder", None)
    te_ok = te is not None and getattr(te, "loaded_pretrained", False)
    hard_missing = [k for k in missing if not (te_ok and k.startswith("text_encoder."))]
    if wrong or hard_missing:
        what = wrong[:3] if wrong else hard_missing[:5]
        raise CLIError(f"{ckpt} does not fit the model in {exp}/config.yaml: "
                       f"{'shape mismatch' if wrong else f'{len(hard_missing)} missing tensors'}: {', '.join(what)}")
    if missing:
        logger.warning("%s: %d text-encoder tensors not in the checkpoint; kept from %s", ckpt, len(missing), te.folder)
    if unexpected:
        logger.warning("%s: %d tensors the model does not use were ignored (e.g. %s)", ckpt, len(unexpected),
                       ", ".join(unexpected[:3]))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    model.eval()
    readme_text = Path(readme).read_text(encoding="utf-8") if readme else None
    out = export_model_dir(cfg, model, out_dir, cmvn_file=cfg["frontend_conf"].get("cmvn_file"), readme=readme_text,
                           hub_id=hub_id)
    if verify:
        import torch

        with contextlib.redirect_stdout(sys.stderr):
            back = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").model
        theirs = back.state_dict()
        bad = [k for k, v in model.state_dict().items() if k not in theirs or not torch.equal(v, theirs[k])]
        if bad:
            raise CLIError(f"{out}: the exported model does not reload identically ({len(bad)} tensors differ, "
                           f"e.g. {bad[0]})")
    from funasr_clsr.hub import model_identity

    model_id, model_version = model_identity(out)
    return {"out": str(out), "checkpoint": str(ckpt), "model_id": model_id, "model_version": model_version,
            "verified": bool(verify)}


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="funasr-clsr", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress details (INFO)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, model=True):
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        if model:
            p.add_argument("--model", default="clsr",
                           help="model directory, 'clsr' (short name; $FUNASR_CLSR_MODEL) or a hub id")
            p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
            p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
            p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                           help="onnx: the model dir's model.onnx/model_eb.onnx on onnxruntime (CPU; docs/export.md)")
            p.add_argument("--quantize", action="store_const", const="all", default="none",
                           help="with --backend onnx: the int8 *_quant.onnx files of both branches")
            p.add_argument("--quantize-text", action="store_const", const="text", dest="quantize",
                           help="with --backend onnx: int8 for the text encoder only (questions), recordings "
                                "through the exact fp32 speech graph (for models whose tokens int8 flips)")

    p = sub.add_parser("index", help="index recordings (resumable: recordings already indexed are skipped)")
    common(p)
    p.add_argument("audio", nargs="*", help="audio files, or list files (.scp/.list/.txt: 'path' or 'id path' lines)")
    p.add_argument("--list", action="append", help="list file of recordings (repeatable)")
    p.add_argument("--index", required=True, help="index directory (created, or extended)")
    p.add_argument("--window", type=float, default=40.0, help="window (max segment) length in seconds")
    p.add_argument("--overlap", type=float, default=0.0, help="overlap between fixed windows in seconds")
    p.add_argument("--segmenter", choices=("fixed", "vad"), default="fixed")
    p.add_argument("--vad-model", default=None, help="VAD model for --segmenter vad (default fsmn-vad)")
    p.add_argument("--store", choices=("lance", "faiss"), default="lance",
                   help="lance (default): a LanceDB table; faiss: the older in-memory FAISS format")
    p.add_argument("--kind", choices=("flat", "ivf", "hnsw"), default=None,
                   help="ANN index: lance hnsw (IVF-HNSW-SQ, default), ivf (IVF-PQ), flat (exact only); "
                        "faiss flat (default), ivf, hnsw. Kept from an existing index")
    p.add_argument("--ann-threshold", type=int, default=None,
                   help="lance: build the ANN index once the table holds this many segments (default 100000; "
                        "set when the index is created)")
    p.add_argument("--meta", default=None,
                   help='metadata (a JSON object) for the recordings without their own in a list file, e.g. '
                        '\'{"title": "...", "date": "2026-03-01", "speaker": "Ada", "tags": ["physics"]}\'')
    p.add_argument("--replace", action="store_true", help="re-index recordings already in the index")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="encode on Ray: no value or 'local' (this machine), 'auto' (the cluster joined with "
                        "`ray start`), or ray://host:10001")
    p.add_argument("--num-workers", type=int, default=None, help="with --ray: encoder actors (default 2)")
    p.add_argument("--num-gpus-per-worker", type=float, default=None,
                   help="with --ray: GPUs per actor (default 0: CPU); fractions share a GPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_index)

    for name, func, helptext in (("query", cmd_query, "search the index with questions"),
                                 ("clips", cmd_clips, "write the top segments as wav clips + manifest.json")):
        p = sub.add_parser(name, help=helptext)
        common(p)
        p.add_argument("questions", nargs="*", help="question text (one argument per question)")
        p.add_argument("--question-wav", action="append", default=[], help="a spoken question (repeatable)")
        p.add_argument("--index", required=True, help="index directory")
        p.add_argument("--top-k", type=int, default=5 if name == "query" else 3)
        p.add_argument("--where", default=None,
                       help="search only matching segments (SQL), e.g. \"date >= '2026-01-01' AND speaker = 'Ada'\", "
                            "\"recording_id IN ('a', 'b')\", \"start >= 600 AND end <= 1200\"")
        p.add_argument("--store", choices=("lance", "faiss"), default="lance", help="the index's format")
        if name == "clips":
            p.add_argument("--out", required=True, help="output folder for the clips and manifest.json")
        p.set_defaults(func=func)

    p = sub.add_parser("list", help="recordings in an index: segments, hours, metadata")
    common(p, model=False)
    p.add_argument("--index", required=True, help="index directory")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("delete", help="remove recordings from an index (all must be there)")
    common(p, model=False)
    p.add_argument("--index", required=True, help="index directory")
    p.add_argument("recording_ids", nargs="+", metavar="RECORDING_ID", help="ids as `list` shows them")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("migrate", help="convert a FAISS index directory (the format before LanceDB) into LanceDB")
    common(p, model=False)
    p.add_argument("--index", required=True, help="the FAISS index directory (converted in place; kept as DIR.faiss-v1)")
    p.add_argument("--out", default=None, help="write the LanceDB index here instead, leaving --index as it is")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("export", help="export a training output dir as a self-contained model dir")
    common(p, model=False)
    p.add_argument("--exp", required=True, help="FunASR training output dir (config.yaml + model.pt*)")
    p.add_argument("--checkpoint", default="auto",
                   help="auto (newest avgN, else best, else last), best, last, avgN, a file in --exp or a path")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--cmvn", help="am.mvn (default: the config's frontend_conf.cmvn_file)")
    p.add_argument("--text-encoder", help="text encoder folder (default: the config's)")
    p.add_argument("--tokens", help="token list (default: the config's tokenizer_conf.token_list)")
    p.add_argument("--readme", help="model card to include as README.md")
    p.add_argument("--hub-id", default="", help="hub id to record in configuration.json")
    p.add_argument("--no-verify", action="store_true", help="skip reloading the export to compare weights")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("publish", help="upload a model dir to ModelScope (or --local: into the local cache)")
    common(p, model=False)
    p.add_argument("model_dir")
    from funasr_clsr.hub import DEFAULT_LICENSE, HUB_MODEL_ID, VISIBILITIES

    p.add_argument("--repo-id", default=HUB_MODEL_ID, help=f"owner/name on ModelScope (default {HUB_MODEL_ID})")
    p.add_argument("--token", default=None, help="ModelScope API token (default $MODELSCOPE_API_TOKEN)")
    p.add_argument("--visibility", choices=VISIBILITIES, default="public")
    p.add_argument("--local", action="store_true", help="install into the local ModelScope cache, no upload")
    p.add_argument("--results", help="a recipe's RESULTS.md: generates README.md (the model card)")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--license", default=DEFAULT_LICENSE)
    p.add_argument("--language", default="en")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("serve", help="HTTP API and web page over an index (docs/serve.md); key: $FUNASR_CLSR_API_KEY")
    common(p)
    p.add_argument("--index", required=True, help="index directory (created when missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--window", type=float, default=40.0, help="window length in seconds for new recordings")
    p.add_argument("--uploads", help="folder for uploaded recordings (default: <index>.uploads next to the index)")
    p.add_argument("--allowed-dir", action="append", default=[],
                   help="a directory whose files requests may name by path (repeatable; default: none)")
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="largest upload accepted (MiB)")
    p.add_argument("--cors-origin", action="append", default=[], help="an origin allowed to call the API (repeatable)")
    p.add_argument("--search-workers", type=int, default=1,
                   help="threads that encode and look up the text searches waiting at a time, batched (default 1: measured faster on 2 cores, docs/serve.md)")
    p.set_defaults(func=cmd_serve)
    return ap


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)  # FunASR sets INFO
    logging.getLogger("funasr_clsr").setLevel(logging.INFO if verbose else logging.WARNING)
    # FunASR logs "trust_remote_code: True" on the root logger at WARNING for every model load.
    root = logging.getLogger()
    if not any(getattr(f, "_clsr", False) for f in root.filters):
        def quiet(record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith("trust_remote_code")

        quiet._clsr = True  # type: ignore[attr-defined]
        root.addFilter(quiet)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    args._stdout = sys.stdout
    # Libraries print notices to stdout (FunASR's version line, "Loading remote code", download
    # failures): stdout carries only our output; the notices go to stderr with --verbose only.
    sink = sys.stderr if args.verbose else open(os.devnull, "w")
    try:
        with contextlib.redirect_stdout(sink):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"funasr-clsr {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line unless --debug
        if args.debug:
            raise
        print(f"funasr-clsr {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if sink is not sys.stderr:
            sink.close()


if __name__ == "__main__":
    sys.exit(main())

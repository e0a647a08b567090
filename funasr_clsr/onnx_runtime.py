"""CLSR on onnxruntime: the graphs ``CLSR.export()`` writes, with the frontend in Python.

    AutoModel(model=DIR).export(type="onnx", quantize=True)     # once: model(_quant).onnx, model_eb(_quant).onnx
    model = OnnxCLSR(DIR, quantize=True)
    vecs, texts = model.encode_speech(["talk.wav"], return_text=True)   # (B, H) float32 unit vectors
    q = model.encode_text(["Who founded the city?"])                   # (B, H)
    LongFormRetriever(model).index_recordings([...], "talks.idx")      # or funasr-clsr index --backend onnx

As FunASR's own onnx runtime does, features (fbank + LFR + CMVN, or Whisper's log-mel) are
computed outside the graph, here by the model's own frontend class from ``config.yaml``, so both
backends see the same features. :class:`OnnxCLSR` duck-types what
:class:`~funasr_clsr.retrieval.pipeline.LongFormRetriever` uses of a CLSR model
(``encode_speech``, ``encode_text``, ``frontend``, ``text_encoder.hidden_size``) and reports
the model directory's identity, so an index built with one backend is searched with the other.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from funasr_clsr.models.clsr.export_meta import ONNX_FORMAT_VERSION, exported_paths, quantize_mode
from funasr_clsr.models.dual_encoder import (as_input_list, check_piece_seconds, features_from_waves, group_by_counts,
                                             load_speech_features, load_speech_pieces)

__all__ = ["OnnxCLSR", "OnnxModelError", "OnnxTextEncoder"]


class OnnxModelError(ValueError):
    """An exported model that this runtime cannot use (one-line message)."""


def session_options(threads: int):
    """The onnxruntime settings every CLSR session runs with (the benchmarks time the same)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        # the same choice as torch's libgomp: idle threads sleep instead of spinning, which on
        # shared cores keeps a parked thread from stalling every parallel region
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = session_options(threads)
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a truncated or foreign file
        raise OnnxModelError(f"{path}: not a loadable ONNX model ({' '.join(str(exc).split())[:200]})") from None
    raw = sess.get_modelmeta().custom_metadata_map
    try:
        meta = {k: json.loads(v) for k, v in raw.items() if k != "onnx.infer"}
    except json.JSONDecodeError:
        meta = {}
    if "clsr_onnx_format" not in meta:
        raise OnnxModelError(f"{path}: not written by CLSR's export (no clsr_onnx_format metadata); "
                             "re-export with AutoModel(model=DIR).export(type='onnx')")
    if int(meta["clsr_onnx_format"]) != ONNX_FORMAT_VERSION:
        raise OnnxModelError(f"{path}: exported by funasr_clsr {meta.get('funasr_clsr_version', '?')} with ONNX format "
                             f"{meta['clsr_onnx_format']}, this funasr_clsr reads format {ONNX_FORMAT_VERSION}: "
                             "re-export it")
    return sess, meta


def padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) int64 arrays: ``rows`` right-padded with ``pad_id`` to the longest, 1 where real."""
    lengths = np.array([len(r) for r in rows])
    ids = np.full((len(rows), max(1, int(lengths.max(initial=0)))), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return ids, (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)


class OnnxTextEncoder:
    """The text encoder's graph (``model_eb.onnx``) with its tokenizer: the ONNX counterpart of
    :class:`funasr_clsr.text_encoder.TextEncoder` (``hidden_size``, ``tokenize``, ``encode``)."""

    def __init__(self, session, meta: dict, vocab: Path):
        from funasr_clsr.tokenizer import WordPieceTokenizer

        self.session = session
        self.hidden_size = int(meta["embedding_dim"])
        self.max_length = int(meta["max_length"])
        self.query_instruction = meta.get("query_instruction") or ""
        self.tokenizer = WordPieceTokenizer(vocab, do_lower_case=bool(meta["do_lower_case"]))

    def tokenize(self, texts: Sequence[str], is_query: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Padded (ids, mask) int64 arrays with [CLS]/[SEP], truncated to max_length (as TextEncoder.tokenize)."""
        if is_query and self.query_instruction:
            texts = [self.query_instruction + t for t in texts]
        ids, _ = self.tokenizer.batch_encode(texts, self.max_length)
        return padded(ids, self.tokenizer.pad_id)

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(B, H) unit vectors of padded ids that already hold [CLS]/[SEP]."""
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def encode(self, texts: Sequence[str], is_query: bool = False, batch_size: int = 64) -> np.ndarray:
        vecs = [self.run(*self.tokenize(texts[start:start + batch_size], is_query=is_query))
                for start in range(0, len(texts), batch_size)]
        return np.concatenate(vecs) if vecs else np.zeros((0, self.hidden_size), np.float32)


class OnnxCLSR:
    """CLSR's exported speech branch and text encoder on onnxruntime (CPU).

    ``model_dir``: a CLSR model directory (or the short name ``clsr``) after
    ``AutoModel(model=DIR).export(type="onnx"[, quantize=True])``; ``quantize`` picks the int8
    ``*_quant.onnx`` files: ``True`` or "all" for both branches, "text" for the text encoder only
    (questions in int8, recordings through the exact fp32 speech graph). ``intra_op_num_threads`` defaults to torch's thread count
    (OMP_NUM_THREADS), as :func:`~funasr_clsr.retrieval.pipeline.load_model` does; with
    ``OMP_WAIT_POLICY=PASSIVE`` idle onnxruntime threads sleep too.
    """

    def __init__(self, model_dir: str | os.PathLike, quantize: bool | str = False,
                 intra_op_num_threads: int | None = None):
        import onnxruntime as ort
        import yaml
        from funasr.register import tables  # the frontends are registered by importing funasr_clsr

        from funasr_clsr.hub import is_model_dir, model_identity, resolve_model
        from funasr_clsr.tokenizer import WordPieceTokenizer
        from funasr_clsr.version import check_model_format

        target = resolve_model(os.fspath(model_dir))
        d = Path(target)
        if not (d / "config.yaml").is_file():
            raise FileNotFoundError(f"{target}: not a CLSR model directory (no config.yaml); the ONNX backend "
                                    "needs a local model directory")
        mode = quantize_mode(quantize)
        speech_path, text_path = exported_paths(d, mode)
        missing = [p.name for p in (speech_path, text_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{d}: no {' / '.join(missing)}; export it first: AutoModel(model='{d}').export(type='onnx'"
                f"{', quantize=True' if mode != 'none' else ''}) or funasr-export ++model={d} ++type=onnx"
                f"{' ++quantize=true' if mode != 'none' else ''}")
        cfg = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8")) or {}
        check_model_format(cfg.get("clsr_format_version"), d, OnnxModelError)
        model_conf = cfg.get("model_conf") or {}
        try:
            self.piece_seconds = check_piece_seconds(model_conf.get("piece_seconds"))
        except ValueError as err:
            raise OnnxModelError(f"{d}/config.yaml: {err}") from None
        if self.piece_seconds is not None and not model_conf.get("use_vq", True):
            raise OnnxModelError(f"{d}/config.yaml: piece_seconds needs the VQ adaptor (use_vq) on the ONNX "
                                 "backend; set model_conf.piece_seconds: null")
        if intra_op_num_threads is None:
            import torch

            intra_op_num_threads = torch.get_num_threads()
        self.model_dir = str(d)
        self.quantize = mode
        self.speech_session, self.speech_meta = _session(speech_path, intra_op_num_threads)
        text_session, text_meta = _session(text_path, intra_op_num_threads)
        for meta, path in ((self.speech_meta, speech_path), (text_meta, text_path)):
            if meta.get("branch") != ("speech" if path == speech_path else "text"):
                raise OnnxModelError(f"{path}: holds CLSR's {meta.get('branch')} graph, not the one its name says")
        stamped = (self.speech_meta.get("model_id", ""), self.speech_meta.get("model_version", ""))
        if text_meta.get("model_id", "") != stamped[0]:
            raise OnnxModelError(f"{d}: {speech_path.name} and {text_path.name} come from different exports; re-export")
        if is_model_dir(d):
            current = model_identity(d)
            if stamped[0] and stamped != current:
                raise OnnxModelError(
                    f"{speech_path} was exported from another model ({stamped[0]}) than the one in {d} "
                    f"({current[0]}): re-export it")
            self.model_identity = current
        elif stamped[0]:
            self.model_identity = stamped  # a deployment folder without model.pt
        else:
            raise OnnxModelError(f"{d}: the ONNX files record no model identity and there is no model.pt to "
                                 "derive one: export from a model directory")
        frontend_conf = dict(cfg.get("frontend_conf") or {})
        if (d / "am.mvn").is_file():  # as FunASR's model-directory loader wires it
            frontend_conf["cmvn_file"] = str(d / "am.mvn")
        frontend_class = tables.frontend_classes.get(cfg.get("frontend"))
        if frontend_class is None:
            raise OnnxModelError(f"{d}/config.yaml: frontend {cfg.get('frontend')!r} is not registered")
        self.frontend = frontend_class(**frontend_conf)
        if int(self.frontend.output_size()) != int(self.speech_meta["feats_dim"]):
            raise OnnxModelError(f"{speech_path} takes {self.speech_meta['feats_dim']} features per frame, the "
                                 f"frontend in config.yaml gives {self.frontend.output_size()}: re-export it")
        tok_conf = cfg.get("tokenizer_conf") or {}
        self.asr_tokenizer = WordPieceTokenizer(d / "tokens.txt", do_lower_case=tok_conf.get("do_lower_case", True))
        te_dir = d / (model_conf.get("text_encoder_conf") or {}).get("path", "text_encoder")
        self.text_encoder = OnnxTextEncoder(text_session, text_meta, te_dir / "vocab.txt")
        if self.piece_seconds is not None:
            # pieces' token ids, joined, go through the text graph: what the speech graph's VQ does
            te_index = {t: i for i, t in enumerate(self.text_encoder.tokenizer.token_list)}
            self._to_text_ids = np.array([te_index[t] for t in self.asr_tokenizer.token_list], dtype=np.int64)
            # the recordings' side at the speech graph's precision ("text": fp32 recordings, int8 questions)
            self._piece_text = self.text_encoder
            if mode == "text":
                fp32_text, fp32_meta = _session(exported_paths(d, "none")[1], intra_op_num_threads)
                self._piece_text = OnnxTextEncoder(fp32_text, fp32_meta, te_dir / "vocab.txt")
        self._drop = {int(self.speech_meta[k]) for k in ("blank_id", "sos", "eos")}
        self._max_frames = int(self.speech_meta.get("max_feats_length") or 0)
        # A batch of 40 s windows needs GBs of attention scores; without shrinkage onnxruntime's CPU
        # arena keeps its high-water mark for the life of the process (a server kept ~7 GB).
        self._shrink_arena = ort.RunOptions()
        self._shrink_arena.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def __repr__(self) -> str:
        return f"OnnxCLSR({self.model_dir!r}, quantize={self.quantize!r})"

    # ------------------------------------------------------------------ speech
    def _run_speech(self, inputs, sample_rate: int | None):
        return self._run_features(*load_speech_features(self.frontend, inputs, sample_rate)[:2])

    def _run_features(self, feats, lengths):
        if self._max_frames and int(lengths.max()) > self._max_frames:
            raise ValueError(f"input of {int(lengths.max()) / 100:.0f} s is longer than this encoder's limit of "
                             f"{self._max_frames / 100:.0f} s (raise encoder_conf.max_windows and re-export, or "
                             "split the recording)")
        return self.speech_session.run(None, {"speech": feats.numpy().astype(np.float32, copy=False),
                                              "speech_lengths": lengths.numpy().astype(np.int32)},
                                       self._shrink_arena)

    def _run_in_pieces(self, inputs, batch_size: int, sample_rate: int | None):
        """As :meth:`CLSR._decode_in_pieces`: the speech graph on the inputs' pieces, their tokens
        joined per input and embedded by the text graph (the VQ adaptor's rows are W_te's)."""
        pieces, counts = load_speech_pieces(self.frontend, inputs, self.piece_seconds, sample_rate)
        tokens = []
        for start in range(0, len(pieces), batch_size):
            _, ids, num = self._run_features(*features_from_waves(self.frontend, pieces[start:start + batch_size]))
            tokens += [row[:n].tolist() for row, n in zip(ids, num)]
        joined = [[t for piece in group for t in piece] for group in group_by_counts(tokens, counts)]
        te = self._piece_text
        limit = te.max_length - 2
        vec = te.run(*padded([[te.tokenizer.cls_id, *self._to_text_ids[t[:limit]].tolist(), te.tokenizer.sep_id]
                              for t in joined], te.tokenizer.pad_id))
        token_ids, _ = padded(joined, 0)
        return vec, token_ids, np.array([len(t) for t in joined], dtype=np.int64)

    def _texts(self, ids: np.ndarray, num: np.ndarray) -> list[str]:
        return [self.asr_tokenizer.decode([t for t in row[:n].tolist() if t not in self._drop])
                for row, n in zip(ids, num)]

    def encode_speech(self, inputs, batch_size: int = 8, sample_rate: int | None = None,
                      return_text: bool = False):
        """(B, H) float32 unit vectors for wav paths or 16 kHz float arrays (and transcripts), as
        :meth:`CLSR.encode_speech <funasr_clsr.models.clsr.model.CLSR.encode_speech>`."""
        inputs = as_input_list(inputs)
        vecs, texts = [], []
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start:start + batch_size]
            if self.piece_seconds is None:
                vec, ids, num = self._run_speech(batch, sample_rate)
            else:
                vec, ids, num = self._run_in_pieces(batch, batch_size, sample_rate)
            vecs.append(vec)
            if return_text:
                texts.extend(self._texts(ids, num))
        out = np.concatenate(vecs) if vecs else np.zeros((0, self.text_encoder.hidden_size), np.float32)
        return (out, texts) if return_text else out

    def transcribe(self, inputs, batch_size: int = 8, sample_rate: int | None = None) -> list[str]:
        return self.encode_speech(inputs, batch_size=batch_size, sample_rate=sample_rate, return_text=True)[1]

    # ------------------------------------------------------------------ text
    def encode_text(self, texts: Sequence[str], is_query: bool = True, batch_size: int = 64) -> np.ndarray:
        """(B, H) float32 unit vectors for text (questions, or transcripts with ``is_query=False``)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.text_encoder.encode(list(texts), is_query=is_query, batch_size=batch_size)

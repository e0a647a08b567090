"""ONNX export of CLSR the way FunASR exports Paraformer (funasr/models/paraformer/export_meta.py).

``CLSR.export(**kwargs)`` rebuilds the model from FunASR's ``*Export`` modules and returns two
modules, each with ``export_dummy_inputs`` / ``export_input_names`` / ``export_output_names`` /
``export_dynamic_axes`` / ``export_name``, which ``funasr.utils.export_utils`` writes next to
``model.pt`` (``AutoModel(model=DIR).export(type="onnx", quantize=True)`` or ``funasr-export``):

* ``model.onnx`` (``model_quant.onnx``), the speech branch: features ``speech`` (B, T, F) and
  ``speech_lengths`` (B,) -> ``embedding`` (B, H) unit vectors, plus ``token_ids`` (B, N) and
  ``token_num`` (B,) for the transcript. Encoder (``SANMEncoderExport`` or
  :class:`WhisperAudioEncoderExport`), ``CifPredictorV2Export`` (FunASR's vectorised CIF),
  ``ParaformerSANMDecoderExport``, the VQ adaptor (argmax -> the text encoder's word-embedding
  rows), [CLS]/[SEP] and the text encoder with its pooling, all in one graph: the one-hot times
  W_te is a row lookup, so cutting the graph there would only add a second session and a
  round trip through Python for every batch.
* ``model_eb.onnx`` (``model_eb_quant.onnx``), the text encoder: ``input_ids`` and
  ``attention_mask`` (B, L) -> ``embedding`` (B, H); "eb" as FunASR's SeACo/contextual
  Paraformers name their text-side embedder.

The frontend (fbank + LFR + CMVN, or Whisper's log-mel) stays in Python, as in FunASR's own
onnx runtime. Each file carries metadata (format versions, the source model's identity, what the
runtime needs to tokenise and to bound input lengths): :mod:`funasr_clsr.onnx_runtime` reads it.
"""
from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from funasr.register import tables

#: Encoders, predictors and decoders whose export path is built and tested here.
SUPPORTED = {"encoder": ("SANMEncoder", "WhisperAudioEncoder"), "predictor": ("CifPredictorV2",),
             "decoder": ("ParaformerSANMDecoder",)}
#: Bumped whenever the inputs, outputs or metadata of the exported graphs change.
ONNX_FORMAT_VERSION = 1
SPEECH_NAME, TEXT_NAME = "model", "model_eb"


class ExportError(ValueError):
    """A model that this export path cannot write (one-line message)."""


# --------------------------------------------------------------------------- Whisper encoder


class _MultiHeadAttention(torch.autograd.Function):
    """softmax(QK^T / sqrt(d)) V over projected (B, T, H*d) inputs, written to ONNX as onnxruntime's
    fused ``com.microsoft.MultiHeadAttention``. The exporter would otherwise write the scores, mask,
    softmax and product step by step over the whole (B, H, T, T) tensor: on a 40 s batch that took
    twice torch's fused kernel (docs/benchmarks.md, "Why onnxruntime trails torch")."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding, num_heads: int):
        b, t, e = q.shape
        heads = [x.reshape(b, -1, num_heads, e // num_heads).transpose(1, 2) for x in (q, k, v)]
        mask = None
        if key_padding is not None:  # additive, as Whisper's own attention: an empty window gets no NaN
            mask = torch.zeros(key_padding.shape, dtype=q.dtype).masked_fill(key_padding == 0,
                                                                             torch.finfo(q.dtype).min)
            mask = mask[:, None, None, :]
        out = F.scaled_dot_product_attention(*heads, attn_mask=mask)
        return out.transpose(1, 2).reshape(b, t, e)

    @staticmethod
    def symbolic(g, q, k, v, key_padding, num_heads: int):
        if key_padding is None:
            return g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=num_heads)
        no_bias = g.op("prim::Constant")
        no_bias.setType(torch._C.OptionalType.ofTensor())
        return g.op("com.microsoft::MultiHeadAttention", q, k, v, no_bias, key_padding, num_heads_i=num_heads)


class _FusedWhisperSelfAttention(nn.Module):
    """Stands in for a Whisper encoder layer's ``self_attn`` in the export copy (same projections).
    Its ``attention_mask`` is the (windows, T) int32 key padding mask (1 = a frame of the window) or
    None: the export module passes that through the unchanged ``WhisperEncoderLayer``."""

    def __init__(self, attn):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj
        self.num_heads = int(attn.num_heads)

    def forward(self, hidden_states, attention_mask=None, layer_head_mask=None, output_attentions=False, **_):
        x = hidden_states
        ctx = _MultiHeadAttention.apply(self.q_proj(x), self.k_proj(x), self.v_proj(x), attention_mask, self.num_heads)
        return self.out_proj(ctx), None


@tables.register("encoder_classes", "WhisperAudioEncoderExport")
class WhisperAudioEncoderExport(nn.Module):
    """:class:`~funasr_clsr.models.whisper_encoder.WhisperAudioEncoder` as one traceable graph.

    The torch module cuts each item into windows in Python; here the windows are gathered with
    index arithmetic on the (dynamic) input shape, so one graph serves any batch and length:
    every window of every item is encoded on its own frames (keys past its end masked, or the
    window padded to 30 s for ``input_layout: padded``), the windows' outputs are joined per item
    and ``output_stride`` runs are averaged, exactly as the torch module does.
    """

    def __init__(self, model, onnx: bool = True, **kwargs):
        super().__init__()
        self.whisper = model.whisper  # the export's copy: its attention can be swapped in place
        for layer in self.whisper.layers:
            layer.self_attn = _FusedWhisperSelfAttention(layer.self_attn)
        self.window_frames = int(model.window_frames)
        self.positions = int(model.positions)
        self.output_stride = int(model.output_stride)
        self.padded = model.input_layout == "padded"
        self.max_frames = int(model.window_frames) * int(model.max_windows)

    @staticmethod
    def out_length(frames: torch.Tensor) -> torch.Tensor:
        return torch.div(frames - 1, 2, rounding_mode="floor") + 1

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        lengths = speech_lengths.to(torch.int64)
        batch, feat_dim = speech.size(0), speech.size(2)
        total = torch._shape_as_tensor(speech)[1]
        wf = self.window_frames
        # one window of the batch's length when it fits (no padding to window_frames), else windows of wf
        width = torch.clamp(total, max=wf)
        n_win = torch.div(total + width - 1, width, rounding_mode="floor")
        starts = torch.arange(n_win) * width
        frame_idx = (starts[:, None] + torch.arange(width)[None, :]).reshape(-1)
        x = speech.index_select(1, torch.minimum(frame_idx, total - 1)).reshape(batch * n_win, width, feat_dim)
        win_lens = torch.minimum((lengths[:, None] - starts[None, :]).clamp(min=0), width).reshape(-1)
        if self.padded:  # Whisper's own input: the window padded to 30 s with its smallest feature value
            valid = torch.arange(width)[None, :] < win_lens[:, None]
            full = 2 * self.positions
            pos = torch.arange(full)
            floor = x.masked_fill(~valid[:, :, None], float("inf")).amin(dim=(1, 2))
            floor = torch.where(torch.isfinite(floor), floor, torch.full_like(floor, -1.5))
            x = x.index_select(1, torch.minimum(pos, width - 1))
            x = torch.where((pos[None, :] < win_lens[:, None])[:, :, None], x, floor[:, None, None])
            h = self._encode_group(x, None)
            win_out = h.size(1)
        else:
            h, win_out = self._windows_in_groups(x, win_lens, width)
        hidden_size = h.size(-1)
        h = h.reshape(batch, n_win * win_out, hidden_size)
        # join each item's windows: window k's outputs start at k * win_out, full windows give per_full
        per_full = (wf - 1) // 2 + 1
        count = torch.div(lengths + wf - 1, wf, rounding_mode="floor").clamp(min=1)
        out_lens = (count - 1) * per_full + self.out_length(lengths - (count - 1) * wf).clamp(min=0)
        j = torch.arange(out_lens.max())
        src = torch.div(j, per_full, rounding_mode="floor") * win_out + torch.remainder(j, per_full)
        h = h.index_select(1, torch.minimum(src, n_win * win_out - 1))
        h = torch.where((j[None, :] < out_lens[:, None])[:, :, None], h, torch.zeros_like(h))
        k = self.output_stride
        if k > 1:  # mean over runs of k frames; the last run of an item may be shorter
            runs = torch.div(out_lens.max() + k - 1, k, rounding_mode="floor")
            idx = torch.arange(runs * k)
            g = h.index_select(1, torch.minimum(idx, out_lens.max() - 1)).reshape(batch, runs, k, hidden_size)
            v = (idx[None, :] < out_lens[:, None]).reshape(batch, runs, k, 1)
            counts = v.to(h.dtype).sum(2).clamp(min=1.0)
            h = torch.where(v, g, torch.zeros_like(g)).sum(2) / counts
            out_lens = torch.div(out_lens + k - 1, k, rounding_mode="floor")
        return h, out_lens.to(torch.int32)

    def _encode_group(self, x: torch.Tensor, lens: torch.Tensor | None) -> torch.Tensor:
        """Conv stem, positions, the layers and the final norm for windows (W, T, D) -> (W, T', H);
        ``lens`` None: every window is whole (no zeroing, no attention mask)."""
        w = self.whisper
        valid = None
        if lens is not None:
            valid = torch.arange(x.size(1))[None, :] < lens[:, None]
            x = torch.where(valid[:, :, None], x, torch.zeros_like(x))
        h = F.gelu(w.conv1(x.transpose(1, 2)))
        if valid is not None:
            h = h * valid[:, None, :].to(h.dtype)  # conv2 sees zeros past each window's end
        h = F.gelu(w.conv2(h)).transpose(1, 2)
        h = h + w.embed_positions.weight[: h.size(1)]
        mask = None
        if lens is not None:
            mask = (torch.arange(h.size(1))[None, :] < self.out_length(lens)[:, None]).to(torch.int32)
        for layer in w.layers:
            h = layer(h, attention_mask=mask, layer_head_mask=None)[0]
        return w.layer_norm(h)

    def _windows_in_groups(self, x: torch.Tensor, win_lens: torch.Tensor, width: torch.Tensor):
        """Whole windows (no mask) and the rest (cut to the longest of them, masked) through the encoder
        apart, as ``WhisperAudioEncoder._encode_windows`` does: (windows * win_out, H) rows in window
        order, and win_out. The longest item's first window is always whole, so the first group is
        never empty; the second also encodes window 0 (rows never read) so that it is never empty either."""
        full = win_lens == width
        idx_a = torch.nonzero(full).reshape(-1)
        idx_b = torch.cat([torch.nonzero(~full).reshape(-1), torch.zeros(1, dtype=torch.int64)])
        width_b = torch.where(full, torch.ones_like(win_lens), win_lens).max()
        lens_b = torch.minimum(win_lens.index_select(0, idx_b), width_b)
        h_a = self._encode_group(x.index_select(0, idx_a), None)
        h_b = self._encode_group(x.index_select(0, idx_b).index_select(1, torch.arange(width_b)), lens_b)
        out_a, out_b, hidden = h_a.size(1), h_b.size(1), h_a.size(2)
        frames = torch.arange(out_a)
        rank_a = torch.cumsum(full.to(torch.int64), 0) - 1
        rank_b = torch.cumsum((~full).to(torch.int64), 0) - 1
        src_a = rank_a[:, None] * out_a + frames[None, :]
        src_b = idx_a.size(0) * out_a + rank_b[:, None] * out_b + torch.minimum(frames, out_b - 1)[None, :]
        src = torch.where(full[:, None], src_a, src_b).clamp(min=0).reshape(-1)
        pool = torch.cat([h_a.reshape(-1, hidden), h_b.reshape(-1, hidden)])
        return pool.index_select(0, src), out_a


# --------------------------------------------------------------------------- CLSR graphs


class _ExportModule(nn.Module):
    """What ``funasr.utils.export_utils`` needs of an export module, plus the metadata stamped
    into the written file (see :func:`_use_torchscript_exporter`)."""

    export_name = ""
    onnx_metadata: dict = {}

    def export_input_names(self):
        raise NotImplementedError

    def export_output_names(self):
        raise NotImplementedError


class CLSRSpeechExport(_ExportModule):
    """Features -> (unit vector, argmax token ids, number of text tokens): CLSR's speech branch."""

    export_name = SPEECH_NAME

    def __init__(self, model, names: dict, feats_dim: int, onnx: bool = True):
        super().__init__()
        from funasr.utils.torch_function import sequence_mask

        self.encoder = tables.encoder_classes.get(names["encoder"] + "Export")(model.encoder, onnx=onnx)
        # The modules that take discrete decisions (where CIF fires, which token wins the argmax) are
        # named output_*: FunASR's quantize_dynamic (funasr/utils/export_utils.py) leaves every node
        # whose name contains "output" in fp32, so int8 flips no token that fp32 would not.
        self.output_predictor = tables.predictor_classes.get(names["predictor"] + "Export")(model.predictor,
                                                                                          onnx=onnx)
        self.output_decoder = tables.decoder_classes.get(names["decoder"] + "Export")(model.decoder, onnx=onnx)
        self.make_pad_mask = sequence_mask(flip=False)
        self.feats_dim = int(feats_dim)
        self.predictor_bias = int(model.predictor_bias)
        self.use_vq = bool(model.use_vq)
        self.output_ctc_lo = model.ctc.ctc_lo if model.ctc_readout else None
        if self.output_ctc_lo is not None:  # the CTC blank is no token of a CIF step (CLSR._decode_pass)
            keep = torch.ones(model.vocab_size)
            keep[model.blank_id] = 0.0
            self.register_buffer("readout_keep", keep)
        self.hidden_proj = None if model.use_vq else model.hidden_proj
        te = model.text_encoder
        self.text_encoder = te
        w = te.word_embeddings.detach()
        # W_te restricted to the ASR vocabulary: the VQ adaptor's forward is a row lookup in it
        self.register_buffer("token_rows", w.index_select(0, model.text_ids).clone())
        self.register_buffer("cls_row", w[te.tokenizer.cls_id].clone())
        self.register_buffer("sep_row", w[te.tokenizer.sep_id].clone())
        self.limit = int(te.max_length) - 2

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        enc, enc_lens = self.encoder(speech, speech_lengths)
        mask = self.make_pad_mask(enc_lens)[:, None, :]
        acoustic, token_num, _, _ = self.output_predictor(enc, mask)
        token_num = token_num.to(torch.int64)
        # at least one decoder step, as CLSR._decode pads an utterance where nothing fired
        steps = torch.clamp(token_num.max(), min=1)
        acoustic = torch.cat([acoustic, torch.zeros_like(enc[:, :1])], dim=1).index_select(1, torch.arange(steps))
        logits, hidden, _ = self.output_decoder(enc, enc_lens, acoustic, token_num.clamp(min=1),
                                                return_hidden=True, return_both=True)
        if self.output_ctc_lo is not None:
            logits = logits + self.output_ctc_lo(acoustic) * self.readout_keep
        n_text = torch.minimum((token_num - self.predictor_bias).clamp(min=0), steps)
        ids = logits.argmax(-1)
        body = self.token_rows[ids] if self.use_vq else self.hidden_proj(hidden)
        body = body[:, : self.limit]  # the text encoder's limit, [CLS] and [SEP] included
        lengths = n_text.clamp(max=self.limit)
        width = body.size(1)
        body = torch.where((torch.arange(width)[None, :] < lengths[:, None])[:, :, None], body,
                           torch.zeros_like(body))
        batch = body.size(0)
        seq = torch.cat([self.cls_row.expand(batch, 1, -1), body, torch.zeros_like(body[:, :1])], dim=1)
        positions = torch.arange(width + 2)[None, :]
        seq = seq + (positions == (lengths + 1)[:, None]).unsqueeze(-1).to(seq.dtype) * self.sep_row
        vec = self.text_encoder.forward_embeds(seq, positions < (lengths + 2)[:, None])
        return vec, ids.to(torch.int32), n_text.to(torch.int32)

    def export_dummy_inputs(self):
        frames = 60
        return torch.randn(2, frames, self.feats_dim), torch.tensor([frames // 2, frames], dtype=torch.int32)

    def export_input_names(self):
        return ["speech", "speech_lengths"]

    def export_output_names(self):
        return ["embedding", "token_ids", "token_num"]

    def export_dynamic_axes(self):
        return {"speech": {0: "batch_size", 1: "feats_length"}, "speech_lengths": {0: "batch_size"},
                "embedding": {0: "batch_size"}, "token_ids": {0: "batch_size", 1: "num_tokens"},
                "token_num": {0: "batch_size"}}


class CLSRTextExport(_ExportModule):
    """Token ids -> unit vector: CLSR's (frozen) text encoder with its pooling."""

    export_name = TEXT_NAME

    def __init__(self, model, onnx: bool = True):
        super().__init__()
        self.text_encoder = model.text_encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.text_encoder.forward_ids(input_ids, attention_mask)

    def export_dummy_inputs(self):
        tok = self.text_encoder.tokenizer
        ids = torch.tensor([[tok.cls_id, 5, 6, 7, tok.sep_id], [tok.cls_id, 5, tok.sep_id, tok.pad_id, tok.pad_id]])
        return ids, (ids != tok.pad_id).to(torch.int64)

    def export_input_names(self):
        return ["input_ids", "attention_mask"]

    def export_output_names(self):
        return ["embedding"]

    def export_dynamic_axes(self):
        return {"input_ids": {0: "batch_size", 1: "text_length"},
                "attention_mask": {0: "batch_size", 1: "text_length"}, "embedding": {0: "batch_size"}}


# --------------------------------------------------------------------------- rebuild + metadata


def _component_names(model, kwargs: dict) -> dict:
    names = {}
    for part in ("encoder", "predictor", "decoder"):
        name = kwargs.get(part) or type(getattr(model, part)).__name__
        if name not in SUPPORTED[part]:
            raise ExportError(f"ONNX export supports the {part}s {', '.join(SUPPORTED[part])}; this CLSR model's "
                              f"{part} is {name!r}")
        names[part] = name
    return names


def _check_exportable(model, names: dict) -> None:
    from funasr.models.transformer.embedding import SinusoidalPositionEncoder

    if model.text_encoder is None:
        raise ExportError("this CLSR model has no text encoder (an ASR-only checkpoint): there is nothing to "
                          "retrieve with, so nothing to export")
    if model.normalize is not None:
        raise ExportError(f"ONNX export does not include a feature normaliser ({type(model.normalize).__name__}); "
                          "use a frontend CMVN (am.mvn) instead")
    if names["encoder"] == "SANMEncoder":
        if not isinstance(model.encoder.embed, SinusoidalPositionEncoder) or not model.encoder.normalize_before:
            raise ExportError("ONNX export supports SAN-M encoders with input_layer 'pe' and normalize_before "
                              "true (FunASR's SANMEncoderExport), as in CLSR's configs")


def source_identity(kwargs: dict) -> tuple[str, str]:
    """(model_id, model_version) of the model directory being exported, or ('', '') without one."""
    from funasr_clsr.hub import is_model_dir, model_identity

    model_dir = kwargs.get("model_path")
    if not model_dir and kwargs.get("init_param"):
        model_dir = os.path.dirname(str(kwargs["init_param"]))
    if model_dir and is_model_dir(model_dir):
        return model_identity(model_dir)
    return "", ""


def export_rebuild_model(model, **kwargs):
    """FunASR's export hook for CLSR: ``(speech module, text module)`` to write as ONNX."""
    from funasr_clsr.models.fused_attention import use_fused_attention
    from funasr_clsr.version import MODEL_FORMAT_VERSION, __version__, check_model_format

    kind = kwargs.get("type", "onnx")
    if kind != "onnx":
        raise ExportError(f"CLSR exports type='onnx' only, not {kind!r}")
    check_model_format(kwargs.get("clsr_format_version"), kwargs.get("model_path"), ExportError)
    if not kwargs.get("output_dir") and not kwargs.get("init_param"):
        raise ExportError("no directory to export into: the model was not loaded from a model directory, "
                          "pass output_dir=DIR")
    names = _component_names(model, kwargs)
    _check_exportable(model, names)
    # FunASR's export modules rewire the modules they wrap: work on a copy, the caller's model stays usable
    model = copy.deepcopy(model).eval()
    use_fused_attention(model, False)  # FunASR's *Export attention classes replace the plain ones
    model_id, model_version = source_identity(kwargs)
    te = model.text_encoder
    common = {"clsr_onnx_format": ONNX_FORMAT_VERSION, "clsr_format_version": MODEL_FORMAT_VERSION,
              "funasr_clsr_version": __version__, "model_id": model_id, "model_version": model_version,
              "embedding_dim": te.hidden_size}
    speech = CLSRSpeechExport(model, names, _feature_dim(model, kwargs), onnx=True)
    scheme = kwargs.get("speech_int8", "blockwise")
    if scheme not in SPEECH_INT8_SCHEMES:
        raise ExportError(f"speech_int8 must be one of {', '.join(SPEECH_INT8_SCHEMES)}, got {scheme!r}")
    speech.onnx_metadata = {**common, "branch": "speech", "encoder": names["encoder"], "int8_scheme": scheme,
                            "feats_dim": speech.feats_dim,
                            "max_feats_length": getattr(speech.encoder, "max_frames", 0),
                            "blank_id": model.blank_id, "sos": model.sos, "eos": model.eos}
    text = CLSRTextExport(model, onnx=True)
    text.onnx_metadata = {**common, "branch": "text", "max_length": te.max_length,
                          "query_instruction": te.query_instruction,
                          "do_lower_case": te.tokenizer.do_lower_case, "pad_id": te.tokenizer.pad_id}
    _use_torchscript_exporter()
    return speech, text


def _feature_dim(model, kwargs: dict) -> int:
    frontend = model.__dict__.get("frontend") or kwargs.get("frontend")
    if frontend is not None and hasattr(frontend, "output_size"):
        return int(frontend.output_size())
    if kwargs.get("input_size"):
        return int(kwargs["input_size"])
    raise ExportError("cannot tell the feature dimension: load the model with its frontend (AutoModel(model=DIR))")


def stamp_metadata(path: str | os.PathLike, metadata: dict) -> None:
    """Write ``metadata`` (JSON-encoded values) into the ONNX file's metadata_props."""
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in metadata.items()})
    onnx.save(proto, str(path))


def _use_torchscript_exporter() -> None:
    """Export CLSR's modules with torch's TorchScript-based ONNX exporter.

    FunASR 1.4.16's ``export_utils`` calls ``torch.onnx.export`` without ``dynamo``; since torch
    2.9 that means the torch.export-based exporter (it needs onnxscript, and FunASR's export
    modules, such as the TorchScript-scripted ``cif_v1_export``, are written for the TorchScript
    exporter). The wrapper passes ``dynamo=False`` and stamps the metadata for calls on CLSR's
    export modules only; every other call goes through unchanged.
    """
    original = torch.onnx.export
    if getattr(original, "_clsr_wrapper", False):
        return

    @functools.wraps(original)
    def export(model, args=(), f=None, *rest, **kwargs):
        if not isinstance(model, _ExportModule):
            return original(model, args, f, *rest, **kwargs)
        kwargs.setdefault("dynamo", False)
        import warnings

        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notices
            warnings.simplefilter("ignore")
            out = original(model, args, f, *rest, **kwargs)
        if f is not None:
            stamp_metadata(f, model.onnx_metadata)
        return out

    export._clsr_wrapper = True
    torch.onnx.export = export
    _use_speech_int8_scheme()


#: How ``quantize=True`` writes the speech graph's ``model_quant.onnx`` (export kwarg ``speech_int8``):
#: "blockwise" (:func:`quantize_blockwise`, the default) or "dynamic" (FunASR's ``quantize_dynamic``,
#: as for every other FunASR model). The text encoder always gets FunASR's.
SPEECH_INT8_SCHEMES = ("blockwise", "dynamic")


def _use_speech_int8_scheme() -> None:
    """Route FunASR's ``quantize_dynamic`` call for CLSR's speech graph to its int8 scheme.

    ``funasr.utils.export_utils._onnx`` imports ``onnxruntime.quantization.quantize_dynamic`` when it
    quantises and leaves nodes named ``output`` in fp32; a speech graph (metadata ``branch`` "speech")
    whose ``int8_scheme`` is "blockwise" is written by :func:`quantize_blockwise` with the same
    exclusions instead. Every other call goes through unchanged.
    """
    import onnxruntime.quantization as ortq

    original = ortq.quantize_dynamic
    if getattr(original, "_clsr_wrapper", False):
        return

    @functools.wraps(original)
    def quantize_dynamic(model_input, model_output, *args, **kwargs):
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(model_input), load_external_data=False).metadata_props}
        if meta.get("branch") == '"speech"' and meta.get("int8_scheme") == '"blockwise"':
            quantize_blockwise(model_input, model_output, exclude=kwargs.get("nodes_to_exclude") or ())
            return None
        return original(model_input, model_output, *args, **kwargs)

    quantize_dynamic._clsr_wrapper = True
    ortq.quantize_dynamic = quantize_dynamic


#: ``quantize`` of the ONNX runtime: which branches run their int8 ``*_quant.onnx`` graph.
#: "text" is for models whose speech argmax int8 flips (docs/benchmarks.md, "Which MatMuls int8
#: can take"): recordings are indexed exactly, questions get int8's speed.
QUANTIZE_CHOICES = ("none", "text", "all")


def quantize_mode(quantize: bool | str | None) -> str:
    """``quantize`` as one of :data:`QUANTIZE_CHOICES` (``True``: "all", ``False``/``None``: "none")."""
    if quantize is True or quantize is False or quantize is None:
        return "all" if quantize else "none"
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)} (or a bool), got {quantize!r}")
    return quantize


def exported_paths(model_dir: str | os.PathLike, quantize: bool | str = False) -> tuple[Path, Path]:
    """(speech, text) ONNX files in ``model_dir``, as ``funasr.utils.export_utils`` names them."""
    mode = quantize_mode(quantize)
    d = Path(model_dir)
    speech = "_quant.onnx" if mode == "all" else ".onnx"
    text = "_quant.onnx" if mode != "none" else ".onnx"
    return d / f"{SPEECH_NAME}{speech}", d / f"{TEXT_NAME}{text}"


def quantize_blockwise(fp32_path: str | os.PathLike, out_path: str | os.PathLike, exclude=(),
                       block_size: int = 128, accuracy_level: int = 4) -> int:
    """Write ``out_path``: ``fp32_path`` with the weights of its MatMuls in int8 blocks of ``block_size``
    along the input dimension (onnxruntime's ``MatMulNBits``, 8 bits, symmetric), nodes named in
    ``exclude`` left fp32; returns how many MatMuls were quantised. ``accuracy_level`` 4 quantises the
    activations to int8 per row and block as well, so the product runs on int8 kernels.

    Why not ``quantize_dynamic`` (FunASR's rule) for the speech graph: it scales each activation with
    one number per tensor, and Whisper's outlier channels then leave the other channels a few levels
    of int8 (docs/benchmarks.md, "Which MatMuls int8 can take"); a scale per row and 128 inputs
    follows them."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    proto = onnx.load(str(fp32_path))
    quantizer = MatMulNBitsQuantizer(proto, bits=8, block_size=block_size, is_symmetric=True,
                                     accuracy_level=accuracy_level, nodes_to_exclude=list(exclude))
    quantizer.process()
    out = quantizer.model.model
    onnx.helper.set_model_props(out, {p.key: p.value for p in proto.metadata_props})
    onnx.save(out, str(out_path))
    return sum(1 for n in out.graph.node if n.op_type == "MatMulNBits")

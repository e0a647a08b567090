"""CLAP-style dual encoder: the paper's "typical E2E audio-text contrastive model" (Fig. 2).

Like CLAP (Wu et al. 2023): an audio encoder and a text encoder, each followed by a
two-layer MLP projection into a joint space, compared by cosine similarity with a
learnable temperature; the only loss is the symmetric contrastive loss. The audio encoder
is a small generic one (strided 1-d convolutions over the fbank frames + a Transformer)
with no notion of tokens; ``encoder: SANMEncoder`` (or any FunASR encoder) can replace it
from the config. The text encoder is frozen by default; ``freeze_text_encoder: false``
trains it too, as CLAP does.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from funasr.models.transformer.utils.nets_utils import make_pad_mask
from funasr.register import tables
from funasr.train_utils.device_funcs import force_gatherable

from funasr_clsr.models.clsr.losses import symmetric_info_nce
from funasr_clsr.models.dual_encoder import DualEncoderMixin, masked_mean
from funasr_clsr.text_encoder import TextEncoder
from funasr_clsr.version import check_model_format


class CLAPFormatError(ValueError):
    """A model directory written by an incompatible funasr_clsr version."""


def sinusoid_positions(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(length, dim) fixed sin/cos position codes, computed for any length."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim, device=device, dtype=torch.float32)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return out.to(dtype)


@tables.register("encoder_classes", "CLAPAudioEncoder")
class CLAPAudioEncoder(nn.Module):
    """Strided conv front end + pre-norm Transformer; FunASR encoder interface.

    ``forward(xs (B, T, D), lens (B,)) -> (out (B, T', output_size), out_lens, None)``;
    each conv layer halves the frame rate. Padded frames are zeroed before every conv so an
    utterance gets the same output alone or in a padded batch.
    """

    def __init__(self, input_size: int, output_size: int = 256, conv_layers: int = 2, conv_kernel: int = 3,
                 attention_heads: int = 4, linear_units: int = 1024, num_blocks: int = 4,
                 dropout_rate: float = 0.1, **kwargs):
        super().__init__()
        if output_size % attention_heads:
            raise ValueError(f"output_size {output_size} is not divisible by attention_heads {attention_heads}")
        if conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {conv_kernel}")
        self._output_size = output_size
        self.conv_kernel = conv_kernel
        self.input_proj = nn.Linear(input_size, output_size)
        self.convs = nn.ModuleList(
            nn.Conv1d(output_size, output_size, conv_kernel, stride=2, padding=conv_kernel // 2)
            for _ in range(conv_layers))
        self.dropout = nn.Dropout(dropout_rate)
        layer = nn.TransformerEncoderLayer(output_size, attention_heads, linear_units, dropout_rate,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_blocks, enable_nested_tensor=False)
        self.after_norm = nn.LayerNorm(output_size)

    def output_size(self) -> int:
        return self._output_size

    def forward(self, xs_pad: torch.Tensor, ilens: torch.Tensor, *args, **kwargs):
        lens = ilens.long()
        x = self.input_proj(xs_pad)
        pad = self.conv_kernel // 2
        for conv in self.convs:
            keep = (~make_pad_mask(lens, maxlen=x.size(1))).to(x.device).unsqueeze(-1).to(x.dtype)
            x = F.gelu(conv((x * keep).transpose(1, 2))).transpose(1, 2)
            lens = (lens + 2 * pad - self.conv_kernel) // 2 + 1
        lens = lens.clamp(min=1)
        x = x + sinusoid_positions(x.size(1), x.size(2), x.device, x.dtype)
        padding = make_pad_mask(lens, maxlen=x.size(1)).to(x.device)
        x = self.blocks(self.dropout(x), src_key_padding_mask=padding)
        return self.after_norm(x), lens, None


class ProjectionHead(nn.Module):
    """CLAP's projection: Linear -> ReLU -> Linear into the joint space."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))

    def forward(self, x):
        return self.net(x)


@tables.register("model_classes", "CLAPStyle")
class CLAPStyle(DualEncoderMixin, nn.Module):
    """Audio tower + text tower with projection heads; symmetric contrastive loss only."""

    def __init__(
        self,
        encoder: str = "CLAPAudioEncoder",
        encoder_conf: dict | None = None,
        input_size: int = 560,
        specaug: str | None = None,
        specaug_conf: dict | None = None,
        normalize: str | None = None,
        normalize_conf: dict | None = None,
        text_encoder_conf: dict | None = None,
        freeze_text_encoder: bool = True,
        embed_dim: int = 512,
        audio_pooling: str = "mean",
        init_temperature: float = 0.07,
        learn_temperature: bool = True,
        min_temperature: float = 0.01,
        clsr_format_version: int | None = None,
        tokenizer=None,
        token_list=None,
        model_path: str | None = None,
        **kwargs,
    ):
        super().__init__()
        check_model_format(clsr_format_version, model_path, CLAPFormatError)
        if not text_encoder_conf:
            raise ValueError("CLAPStyle needs a text encoder: set model_conf.text_encoder_conf.path")
        if audio_pooling not in ("mean", "cls"):
            raise ValueError(f"audio_pooling must be 'mean' or 'cls', not {audio_pooling!r}")
        if not 0 < min_temperature <= init_temperature:
            raise ValueError(f"need 0 < min_temperature <= init_temperature, got {min_temperature}, "
                             f"{init_temperature}")
        self._build_speech_encoder(encoder, encoder_conf, input_size, specaug, specaug_conf, normalize,
                                   normalize_conf, fused_attention=kwargs.pop("fused_attention", True))
        audio_dim = self.encoder.output_size()
        self.audio_pooling = audio_pooling
        if audio_pooling == "cls":
            # a trainable summary token prepended to the encoder output, read out after one more layer
            self.cls_token = nn.Parameter(torch.randn(audio_dim) * 0.02)
            heads = next((h for h in (8, 4, 2, 1) if audio_dim % h == 0))
            self.cls_layer = nn.TransformerEncoderLayer(audio_dim, heads, 2 * audio_dim, 0.0, activation="gelu",
                                                        batch_first=True, norm_first=True)
        self.text_encoder = TextEncoder(base_dir=model_path, **dict(text_encoder_conf))
        self.audio_proj = ProjectionHead(audio_dim, embed_dim)
        self.text_proj = ProjectionHead(self.text_encoder.hidden_size, embed_dim)
        # CLAP/CLIP parametrise the temperature by log(1/T); it is clamped at min_temperature.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)),
                                        requires_grad=learn_temperature)
        self.max_logit_scale = math.log(1.0 / min_temperature)
        self.embed_dim = embed_dim
        self.freeze_text_encoder = freeze_text_encoder
        if freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
        self._set_asr_tokenizer(tokenizer, token_list)
        self.__dict__["frontend"] = kwargs.get("frontend")  # not part of model.pt
        self.train(self.training)

    @property
    def temperature(self) -> torch.Tensor:
        return torch.exp(-self.logit_scale.clamp(max=self.max_logit_scale))

    # ----------------------------------------------------------------- towers
    def audio_embed(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features -> (B, embed_dim) unit vectors."""
        enc, pad = self._encode_frames(speech, speech_lengths)
        if self.audio_pooling == "cls":
            cls = self.cls_token.to(enc.dtype).expand(enc.size(0), 1, -1)
            seq = torch.cat([cls, enc], dim=1)
            pad = torch.cat([pad.new_zeros(enc.size(0), 1), pad], dim=1)
            pooled = self.cls_layer(seq, src_key_padding_mask=pad)[:, 0]
        else:
            pooled = masked_mean(enc, pad)
        return F.normalize(self.audio_proj(pooled), dim=-1)

    def _text_tower(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_text_encoder):
            pooled = self.text_encoder.forward_ids(ids, mask)
        # the text encoder returns unit vectors; rescale to unit RMS so the MLP sees O(1) inputs
        pooled = pooled * math.sqrt(self.text_encoder.hidden_size)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def text_embed(self, texts: Sequence[str], is_query: bool = True) -> torch.Tensor:
        ids, mask = self.text_encoder.tokenize(list(texts), is_query=is_query)
        return self._text_tower(ids, mask)

    # ----------------------------------------------------------------- training
    def forward(self, speech, speech_lengths, text=None, text_lengths=None, question=None,
                question_speech=None, question_speech_lengths=None, **kwargs):
        """Symmetric contrastive loss between contexts and their questions (text, or speech)."""
        batch_size = speech.shape[0]
        if question is None and question_speech is None:
            raise ValueError("CLAPStyle trains on question-context pairs: the batch has neither `question` "
                             "nor `question_speech` (use AudioQADataset with a jsonl that has them)")
        ctx = self.audio_embed(speech, speech_lengths)
        if question_speech is not None:
            q = self.audio_embed(question_speech, question_speech_lengths)
        else:
            q = self.text_embed(question, is_query=True)
        temperature = self.temperature
        loss = symmetric_info_nce(q, ctx, temperature)
        with torch.no_grad():
            sims = q @ ctx.t()
            r1 = (sims.argmax(1) == torch.arange(batch_size, device=sims.device)).float().mean()
        stats = {"loss": loss.detach(), "loss_nce": loss.detach(), "r1_q2c": r1,
                 "temperature": temperature.detach(), "batch_size": batch_size}
        if text_lengths is not None:
            stats["target_tokens"] = text_lengths.sum().float()
        return force_gatherable((loss, stats, batch_size), loss.device)

    # ------------------------------------------------- hooks of DualEncoderMixin
    # (which provides encode_speech, encode_text, inference and the feature loading)
    def _embed_features(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.audio_embed(feats, lengths)

    @property
    def _embedding_dim(self) -> int:
        return self.embed_dim

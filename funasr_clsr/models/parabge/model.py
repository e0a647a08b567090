"""ParaBGE: Paraformer's speech encoder + a (frozen) BERT-like text encoder as a plain dual encoder.

The paper's second end-to-end baseline (Table 4): the SAN-M speech encoder of the CLSR
speech branch, without CIF, decoder or VQ bridge. Its frames are mean-pooled, mapped
linearly to the text encoder's width and L2-normalised; questions go through the text
encoder exactly as in CLSR. The only loss is the symmetric InfoNCE, so whatever the model
knows about speech content has to be learnt from the question-context pairs.

The encoder's parameter names (``encoder.*``) match Paraformer/CLSR checkpoints, so
``++init_param=<asr or clsr>/model.pt`` starts it from a trained ASR encoder.

``distill_weight`` > 0 makes it the SpeechDPR-style baseline (Lin et al. 2024): the context
embedding is also (or, at 1.0, only) trained to match the frozen text encoder's embedding of a
teacher transcript of the same context (the jsonl's ``teacher_text``: an ASR cascade's transcript),
i.e. the speech tower is distilled from an ASR -> text-retriever cascade.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from funasr.register import tables
from funasr.train_utils.device_funcs import force_gatherable

from funasr_clsr.models.clsr.losses import symmetric_info_nce
from funasr_clsr.models.dual_encoder import DualEncoderMixin, masked_mean
from funasr_clsr.text_encoder import TextEncoder
from funasr_clsr.version import check_model_format


class ParaBGEFormatError(ValueError):
    """A model directory written by an incompatible funasr_clsr version."""


@tables.register("model_classes", "ParaBGE")
class ParaBGE(DualEncoderMixin, nn.Module):
    """Speech encoder -> masked mean pool -> linear -> unit vector, in the text encoder's space."""

    def __init__(
        self,
        encoder: str = "SANMEncoder",
        encoder_conf: dict | None = None,
        input_size: int = 560,
        specaug: str | None = None,
        specaug_conf: dict | None = None,
        normalize: str | None = None,
        normalize_conf: dict | None = None,
        text_encoder_conf: dict | None = None,
        freeze_text_encoder: bool = True,
        nce_temperature: float = 0.05,
        distill_weight: float = 0.0,
        clsr_format_version: int | None = None,
        tokenizer=None,
        token_list=None,
        model_path: str | None = None,
        **kwargs,
    ):
        super().__init__()
        check_model_format(clsr_format_version, model_path, ParaBGEFormatError)
        if not text_encoder_conf:
            raise ValueError("ParaBGE needs a text encoder: set model_conf.text_encoder_conf.path")
        if nce_temperature <= 0:
            raise ValueError(f"nce_temperature must be > 0, got {nce_temperature}")
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight}")
        self._build_speech_encoder(encoder, encoder_conf, input_size, specaug, specaug_conf, normalize,
                                   normalize_conf, fused_attention=kwargs.pop("fused_attention", True))
        self.text_encoder = TextEncoder(base_dir=model_path, **dict(text_encoder_conf))
        self.speech_proj = nn.Linear(self.encoder.output_size(), self.text_encoder.hidden_size)
        self.nce_temperature = float(nce_temperature)
        self.distill_weight = float(distill_weight)
        self.freeze_text_encoder = freeze_text_encoder
        if freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
        self._set_asr_tokenizer(tokenizer, token_list)
        # kept out of the module tree: the frontend is not part of model.pt
        self.__dict__["frontend"] = kwargs.get("frontend")
        self.train(self.training)

    # ------------------------------------------------------------------ set-up
    def on_pretrained_model_loaded(self, loaded_keys: frozenset) -> None:
        """Say how much of the speech encoder an init checkpoint (Paraformer/CLSR) provided."""
        enc = [k for k in self.state_dict() if k.startswith("encoder.")]
        got = [k for k in enc if k in loaded_keys]
        if len(got) < len(enc):
            logging.warning("ParaBGE: %d of %d speech-encoder tensors loaded from the checkpoint; the rest "
                            "(e.g. %s) keep their random initialisation", len(got), len(enc),
                            ", ".join([k for k in enc if k not in loaded_keys][:5]))
        else:
            logging.info("ParaBGE: speech encoder loaded from the checkpoint (%d tensors)", len(enc))

    # ----------------------------------------------------------------- encoders
    def speech_embed(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features -> (B, H) unit vectors."""
        enc, pad = self._encode_frames(speech, speech_lengths)
        pooled = masked_mean(enc, pad)
        return F.normalize(self.speech_proj(pooled), dim=-1)

    def text_embed(self, texts: Sequence[str], is_query: bool = True) -> torch.Tensor:
        ids, mask = self.text_encoder.tokenize(list(texts), is_query=is_query)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_text_encoder):
            return self.text_encoder.forward_ids(ids, mask)

    # ----------------------------------------------------------------- training
    def forward(self, speech, speech_lengths, text=None, text_lengths=None, question=None,
                question_speech=None, question_speech_lengths=None, teacher_text=None, **kwargs):
        """Symmetric InfoNCE between each context and its question (text, or speech), and with
        ``distill_weight`` the distillation loss 1 - cos(context, text encoder(teacher_text)).

        ``text``/``text_lengths`` (the context transcripts) play no part in the loss.
        """
        batch_size = speech.shape[0]
        if question is None and question_speech is None:
            raise ValueError("ParaBGE trains on question-context pairs: the batch has neither `question` "
                             "nor `question_speech` (use AudioQADataset with a jsonl that has them)")
        ctx = self.speech_embed(speech, speech_lengths)
        if question_speech is not None:
            q = self.speech_embed(question_speech, question_speech_lengths)
        else:
            q = self.text_embed(question, is_query=True)
        loss_nce = symmetric_info_nce(q, ctx, self.nce_temperature)
        stats = {"loss_nce": loss_nce.detach()}
        loss = loss_nce
        if self.distill_weight > 0:
            if teacher_text is None or len(teacher_text) != batch_size:
                raise ValueError("distill_weight > 0 needs a teacher_text for every context in the batch: "
                                 "give each jsonl line a \"teacher_text\" (an ASR transcript of its audio)")
            with torch.no_grad():
                teacher = self.text_embed(teacher_text, is_query=False)
            loss_distill = (1.0 - (ctx * teacher).sum(-1)).mean()
            loss = (1.0 - self.distill_weight) * loss_nce + self.distill_weight * loss_distill
            stats["loss_distill"] = loss_distill.detach()
        with torch.no_grad():
            sims = q @ ctx.t()
            r1 = (sims.argmax(1) == torch.arange(batch_size, device=sims.device)).float().mean()
        stats.update(loss=loss.detach(), r1_q2c=r1, batch_size=batch_size)
        if text_lengths is not None:
            stats["target_tokens"] = text_lengths.sum().float()
        return force_gatherable((loss, stats, batch_size), loss.device)

    # ------------------------------------------------- hooks of DualEncoderMixin
    # (which provides encode_speech, encode_text, inference and the feature loading)
    def _embed_features(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.speech_embed(feats, lengths)

    @property
    def _embedding_dim(self) -> int:
        return self.text_encoder.hidden_size

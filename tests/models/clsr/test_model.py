"""CLSR model: registration, save/load round trip, frozen text encoder, sampler, learning, bad input."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from clsr_testing import CONTEXTS, QUESTIONS, TINY_TE, build_tiny, tiny_config, tone_speech, recall_at_1, train_nce, training_batch


@pytest.fixture(scope="module")
def tiny(cmvn):
    return build_tiny(frontend_cmvn=cmvn)


def test_importing_registers_everything():
    import funasr_clsr  # noqa: F401
    from funasr.register import tables

    assert tables.model_classes["CLSR"].__name__ == "CLSR"
    assert "WordPieceTokenizer" in tables.tokenizer_classes
    assert "AudioQADataset" in tables.dataset_classes
    assert "IndexDSJsonlQA" in tables.index_ds_classes


def test_uses_funasr_components_and_bert_special_ids(tiny):
    from funasr.models.paraformer.model import Paraformer
    from funasr.register import tables

    m = tiny.model
    assert isinstance(m, Paraformer)
    assert type(m.encoder) is tables.encoder_classes["SANMEncoder"]
    assert type(m.predictor) is tables.predictor_classes["CifPredictorV2"]
    assert type(m.decoder) is tables.decoder_classes["ParaformerSANMDecoder"]
    tok = m.asr_tokenizer
    assert (m.blank_id, m.sos, m.eos) == (tok.pad_id, tok.cls_id, tok.sep_id)
    assert m.decoder.output_layer.out_features == len(tok.token_list)
    assert m.decoder.embed is None  # sampler embeddings come from the output layer


def test_export_and_automodel_round_trip(tiny, cmvn, pair_dir, tmp_path):
    from funasr import AutoModel
    from funasr_clsr.export import export_model_dir

    m = tiny.model.eval()
    wavs = [str(pair_dir / f"ctx{i}.wav") for i in range(3)]
    before_speech = m.encode_speech(wavs)
    before_text = m.encode_text(QUESTIONS[:3])
    before_asr = m.transcribe(wavs)
    out = export_model_dir(tiny_config(cmvn), m, tmp_path / "model")
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "model.pt", "tokens.txt", "am.mvn",
                                              "text_encoder", "configuration.json"}
    assert str(tmp_path) not in (out / "config.yaml").read_text()  # no absolute paths
    for variant in ("with configuration.json", "config.yaml only"):
        if variant == "config.yaml only":
            (out / "configuration.json").unlink()
        loaded = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").model
        assert type(loaded).__name__ == "CLSR"
        assert torch.allclose(loaded.encode_speech(wavs), before_speech, atol=1e-5), variant
        assert torch.allclose(loaded.encode_text(QUESTIONS[:3]), before_text, atol=1e-6), variant
        assert loaded.transcribe(wavs) == before_asr
    res = AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR").generate(input=wavs[0])
    assert res[0]["text"] == before_asr[0]
    assert np.allclose(res[0]["embedding"], before_speech[0].numpy(), atol=1e-5)


def test_frozen_text_encoder_gets_no_gradient_but_passes_it_through(tiny, pair_dir):
    m = build_tiny(frontend_cmvn=pair_dir / "am.mvn").model
    m.train()
    assert not m.text_encoder.training  # the trainer's train() must not enable its dropout
    assert all(not p.requires_grad for p in m.text_encoder.parameters())
    m.asr_weight, m.mae_weight, m.nce_weight = 0.0, 0.0, 1.0  # L_NCE alone
    before = {k: v.clone() for k, v in m.text_encoder.state_dict().items()}
    # every parameter, as a generic optimiser sees them, with weight decay: frozen ones must still not move
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    batch = training_batch(tiny, pair_dir / "text_q.jsonl")
    loss, stats, _ = m(**batch)
    assert "loss_nce" in stats
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in m.text_encoder.parameters())
    out_grad = m.decoder.output_layer.weight.grad
    assert out_grad is not None and out_grad.abs().sum() > 0  # reached through the VQ adaptor
    assert m.encoder.encoders0[0].self_attn.linear_out.weight.grad.abs().sum() > 0
    opt.step()
    after = m.text_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sampler_swaps_in_output_layer_rows(tiny):
    m = build_tiny(sampling_ratio=1.0).model.eval()
    torch.manual_seed(0)
    enc = torch.randn(2, 20, 64)
    enc_lens = torch.tensor([20, 15])
    ys = torch.tensor([[7, 8, 9, 10], [11, 12, 13, -1]])
    ys_lens = torch.tensor([4, 3])
    acoustic = torch.randn(2, 4, 64)
    mixed, _ = m.sampler(enc, enc_lens, ys, ys_lens, acoustic)
    rows = m.decoder.output_layer.weight
    swapped = 0
    for b in range(2):
        for i in range(int(ys_lens[b])):
            if torch.allclose(mixed[b, i], acoustic[b, i]):
                continue
            assert torch.allclose(mixed[b, i], rows[ys[b, i]]), (b, i)
            swapped += 1
        assert torch.all(mixed[b, int(ys_lens[b]):] == 0)
    assert swapped > 0  # an untrained decoder gets tokens wrong, so ratio 1.0 must swap some


@pytest.mark.parametrize("question_kind", ["text", "speech"])
def test_joint_training_learns_to_retrieve_eight_pairs(pair_dir, cmvn, question_kind):
    am = build_tiny(frontend_cmvn=cmvn, nce_temperature=0.05)
    m = am.model
    contexts = [str(pair_dir / f"ctx{i}.wav") for i in range(8)]
    if question_kind == "text":
        # precondition: the frozen (random) text encoder separates the clean texts
        assert recall_at_1(m.encode_text(QUESTIONS), m.encode_text(CONTEXTS, is_query=False)) == 1.0
    batch = training_batch(am, pair_dir / f"{question_kind}_q.jsonl")
    nce = train_nce(am.model, batch, steps=50 if question_kind == "text" else 100, lr=4e-3)
    assert np.mean(nce[-5:]) < 0.6 * np.mean(nce[:3]), nce
    c = m.encode_speech(contexts)
    q = m.encode_text(QUESTIONS) if question_kind == "text" else \
        m.encode_speech([str(pair_dir / f"q{i}.wav") for i in range(8)])
    assert recall_at_1(q, c) == 1.0


def test_ablation_without_vq_trains_a_linear_bridge(pair_dir, cmvn):
    am = build_tiny(frontend_cmvn=cmvn, use_vq=False)
    m = am.model
    loss, stats, _ = m(**training_batch(am, pair_dir / "text_q.jsonl"))
    loss.backward()
    assert m.hidden_proj.weight.grad.abs().sum() > 0
    wav = [str(pair_dir / "ctx0.wav")]
    before = m.encode_speech(wav)
    with torch.no_grad():
        m.hidden_proj.weight.mul_(-1.0)  # the bridge, not the VQ rows, must decide the embedding
    assert before.shape == (1, m.text_encoder.hidden_size) and not torch.allclose(before, m.encode_speech(wav))


def test_trainable_text_encoder_switch(pair_dir, cmvn):
    am = build_tiny(frontend_cmvn=cmvn, freeze_text_encoder=False)
    m = am.model.train()
    assert m.text_encoder.training
    loss, _, _ = m(**training_batch(am, pair_dir / "text_q.jsonl"))
    loss.backward()
    grad = m.text_encoder.model.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_negative_banks_fill_in_training_and_the_question_bank_needs_a_frozen_text_encoder(pair_dir, cmvn,
                                                                                            tmp_path):
    am = build_tiny(frontend_cmvn=cmvn, nce_question_bank=16, nce_context_bank=16)
    m = am.model.train()
    half_jsonl = tmp_path / "half.jsonl"
    half_jsonl.write_text("".join((pair_dir / "text_q.jsonl").read_text().splitlines(True)[:4]))
    half = training_batch(am, half_jsonl)
    _, alone, _ = m(**half)
    batch = training_batch(am, pair_dir / "text_q.jsonl")
    _, first, _ = m(**batch)
    assert len(m.question_bank.vectors) == len(m.context_bank.vectors) == len(batch["question"])
    # the same pairs again: their banked copies are left out, so the loss is what it was
    _, second, _ = m(**batch)
    assert torch.isclose(first["loss_nce"], second["loss_nce"], atol=1e-5)
    # half of them: the other half, banked, are extra negatives now
    _, banked, _ = m(**half)
    assert banked["loss_nce"] > alone["loss_nce"] + 1e-3
    m.eval()
    m(**batch)
    assert len(m.question_bank.vectors) == len(batch["question"])  # validation leaves the banks alone
    with pytest.raises(ValueError, match="freeze_text_encoder"):
        build_tiny(frontend_cmvn=cmvn, nce_question_bank=16, freeze_text_encoder=False)


def test_infonce_alone_skips_the_auxiliary_asr_losses(pair_dir, cmvn):
    """nce_weight 1 (ASR weight 0, the mini recipe's stage 4): no CTC / CIF-alignment work, InfoNCE only."""
    batch = None
    stats = {}
    for name, weights in (("paper", {}), ("nce_only", {"nce_weight": 1.0, "mae_weight": 0.0})):
        am = build_tiny(frontend_cmvn=cmvn, ctc_weight=0.3, cif_align_weight=1.0, **weights)
        batch = batch or training_batch(am, pair_dir / "text_q.jsonl")
        loss, stats[name], _ = am.model.train()(**batch)
        if name == "nce_only":
            assert torch.isclose(loss, stats[name]["loss_nce"])
    assert {"loss_ctc", "loss_cif_align"} <= set(stats["paper"])
    assert not {"loss_ctc", "loss_cif_align"} & set(stats["nce_only"]) and "loss_nce" in stats["nce_only"]


def test_subset_vocabulary_maps_rows_back_to_the_text_encoder(tmp_path, cmvn, pair_dir):
    from funasr_clsr.bin.make_tokens import main as make_tokens

    tokens = tmp_path / "tokens.txt"
    make_tokens(["--text-encoder", str(TINY_TE), "--out", str(tokens), "--subset-from",
                 str(pair_dir / "text_q.jsonl")])
    subset = tokens.read_text().split()
    full = (TINY_TE / "vocab.txt").read_text().split()
    assert len(subset) < len(full)
    from funasr import AutoModel

    cfg = tiny_config(cmvn)
    cfg["tokenizer_conf"]["token_list"] = str(tokens)
    m = AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR").model
    assert m.decoder.output_layer.out_features == len(subset)
    w = m.text_encoder.word_embeddings
    for i, tok in enumerate(subset):
        assert torch.equal(m.text_embedding_matrix[i], w[full.index(tok)])
    # regression: posteriors that are exactly the one-hot rows of a sentence's tokens, through the VQ
    # adaptor and the subset-to-text-encoder row map, embed as the text encoder embeds that sentence
    m.eval()
    sentences = ["the king of the city", "music at church"]
    ids = [m.asr_tokenizer.encode(t) for t in sentences]
    lengths = torch.tensor([len(i) for i in ids])
    logits = torch.full((2, int(lengths.max()), len(subset)), -30.0)
    for b, row in enumerate(ids):
        logits[b, torch.arange(len(row)), torch.tensor(row)] = 30.0
    seq, mask = m.text_like_embeddings(logits.requires_grad_(True), None, lengths)
    from_speech_path = m.text_encoder.forward_embeds(seq, mask).detach()
    torch.testing.assert_close(from_speech_path, m.encode_text(sentences, is_query=False), atol=1e-5, rtol=1e-4)


def test_cls_pooling_through_the_model_matches_the_text_encoder_and_the_speech_path():
    """BGE pools the [CLS] row: encode_text is transformers' hidden state 0, and the speech path
    (one-hot posteriors -> VQ -> [CLS] ... [SEP] embeddings) gives the same vector."""
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel
    from transformers import AutoModel as HFModel

    def build(pooling):
        cfg = tiny_config()
        cfg["model_conf"]["text_encoder_conf"]["pooling"] = pooling
        return AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR").model.eval()

    m = build("cls")
    assert m.text_encoder.pooling == "cls"
    sentences = ["the king of the city", "music at church"]
    got = m.encode_text(sentences, is_query=False)
    hf = HFModel.from_pretrained(TINY_TE, add_pooling_layer=False).eval()
    ids = [[m.text_encoder.tokenizer.cls_id, *m.text_encoder.tokenizer.encode(t), m.text_encoder.tokenizer.sep_id]
           for t in sentences]
    with torch.no_grad():
        ref = torch.stack([hf(input_ids=torch.tensor([row])).last_hidden_state[0, 0] for row in ids])
    torch.testing.assert_close(got, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5, rtol=1e-4)
    # mean pooling is a different vector: the check above sees which pooling ran
    assert (build("mean").encode_text(sentences, is_query=False) * got).sum(-1).max() < 0.999

    asr_ids = [m.asr_tokenizer.encode(t) for t in sentences]
    lengths = torch.tensor([len(i) for i in asr_ids])
    logits = torch.full((2, int(lengths.max()), m.decoder.output_layer.out_features), -30.0)
    for b, row in enumerate(asr_ids):
        logits[b, torch.arange(len(row)), torch.tensor(row)] = 30.0
    seq, mask = m.text_like_embeddings(logits, None, lengths)
    torch.testing.assert_close(m.text_encoder.forward_embeds(seq, mask).detach(), got, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ bad input
def test_bad_audio_inputs(tiny, tmp_path, pair_dir):
    from funasr_clsr.audio import AudioError

    m = tiny.model.eval()
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        m.encode_speech([str(tmp_path / "missing.wav")])
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioError, match="corrupt.wav"):
        m.encode_speech([str(corrupt)])
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        m.transcribe([str(empty)])


def test_other_rates_and_channels_are_converted(tiny, tmp_path):
    import librosa

    m = tiny.model.eval()
    wav16 = tone_speech(CONTEXTS[0])
    ref = m.encode_speech([wav16])
    wav8 = librosa.resample(wav16, orig_sr=16000, target_sr=8000)
    sf.write(tmp_path / "a8k.wav", wav8, 8000)
    sf.write(tmp_path / "stereo.wav", np.stack([wav16, wav16], axis=1), 16000)
    stereo = m.encode_speech([str(tmp_path / "stereo.wav")])
    assert torch.allclose(stereo, ref, atol=1e-4)
    low = m.encode_speech([str(tmp_path / "a8k.wav")])
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert torch.allclose(m.encode_speech([wav8], sample_rate=8000), low, atol=1e-5)


def test_silent_audio_warns_but_embeds(tiny, caplog):
    with caplog.at_level(logging.WARNING):
        vec = tiny.model.encode_speech([np.zeros(16000, np.float32)])
    assert "silent" in caplog.text
    assert torch.isfinite(vec).all()


def test_empty_and_overlong_text(tiny, caplog):
    m = tiny.model
    with pytest.raises(ValueError, match="empty"):
        m.encode_text(["what is it", "   "])
    long_q = " ".join(["king"] * 500)
    with caplog.at_level(logging.WARNING):
        vec = m.encode_text([long_q])
    assert "truncated" in caplog.text and vec.shape == (1, m.text_encoder.hidden_size)


def test_vocabulary_that_does_not_match_the_text_encoder_is_refused(tmp_path, cmvn):
    from funasr import AutoModel

    tokens = tmp_path / "tokens.txt"
    tokens.write_text((TINY_TE / "vocab.txt").read_text() + "zebra\nquux\n")
    cfg = tiny_config(cmvn)
    cfg["tokenizer_conf"]["token_list"] = str(tokens)
    with pytest.raises(ValueError, match="not in the text encoder's vocabulary"):
        AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR")


def test_model_dir_from_another_format_version_is_refused(tiny, cmvn, tmp_path):
    import yaml
    from funasr import AutoModel
    from funasr_clsr.export import export_model_dir
    from funasr_clsr.models.clsr import ModelFormatError

    out = export_model_dir(tiny_config(cmvn), tiny.model, tmp_path / "m")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["clsr_format_version"] = 999
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ModelFormatError, match="format version 999"):
        AutoModel(model=str(out), device="cpu", disable_update=True, log_level="ERROR")


def test_export_without_cmvn_is_a_clear_error(tiny, tmp_path):
    from funasr_clsr.export import export_model_dir

    with pytest.raises(FileNotFoundError, match="am.mvn"):
        export_model_dir(tiny_config(), tiny.model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_inference_runs_in_eval_mode_and_restores_the_mode(tiny, pair_dir):
    m = tiny.model
    wav = [str(pair_dir / "ctx0.wav")]
    m.eval()
    ref = m.encode_speech(wav)
    m.train()
    seen = []
    hook = m.decoder.register_forward_pre_hook(lambda mod, args: seen.append(mod.training))
    try:
        again = m.encode_speech(wav)
        text = m.transcribe(wav)
    finally:
        hook.remove()
    assert m.training and seen and not any(seen)  # decoder ran in eval mode, module back in train mode
    assert torch.allclose(again, ref, atol=1e-6) and isinstance(text[0], str)
    m.eval()


def test_pad_not_first_is_refused_when_ctc_is_on(tmp_path, cmvn):
    vocab = (TINY_TE / "vocab.txt").read_text().split("\n")
    vocab = [t for t in vocab if t]
    moved = vocab[1:2] + vocab[:1] + vocab[2:]  # [PAD] at id 1
    (tmp_path / "tokens.txt").write_text("\n".join(moved) + "\n")
    with pytest.raises(ValueError, match=r"\[PAD\] \(the CTC blank\) at id 1"):
        _build_with_tokens(tmp_path / "tokens.txt", cmvn, ctc_weight=0.3)


def _build_with_tokens(tokens, cmvn, **model_conf):
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    cfg = tiny_config(cmvn, **model_conf)
    cfg["tokenizer_conf"]["token_list"] = str(tokens)
    return AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR")


def test_truncation_warning_is_logged_once(tiny, caplog):
    m = tiny.model.eval()
    logits = torch.zeros(2, 400, len(m.asr_tokenizer.token_list))
    lengths = torch.tensor([400, 10])
    m.__dict__.pop("_warned_truncation", None)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            m.text_like_embeddings(logits, None, lengths)
    assert caplog.text.count("truncated to the text encoder's limit") == 1


def test_asr_tokenizer_casing_must_match_the_text_encoder(cmvn):
    import funasr_clsr  # noqa: F401
    from funasr import AutoModel

    cfg = tiny_config(cmvn)
    cfg["tokenizer_conf"]["do_lower_case"] = False  # the tiny text encoder is uncased (lower-cases)
    with pytest.raises(ValueError, match="do_lower_case is False but the text encoder"):
        AutoModel(**cfg, device="cpu", disable_update=True, log_level="ERROR")


def _lines(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_a_batch_may_mix_asr_lines_text_and_spoken_questions(tiny, pair_dir, tmp_path):
    """InfoNCE pairs each question with its own context row; plain ASR rows only add ASR loss."""
    text, speech = _lines(pair_dir / "text_q.jsonl"), _lines(pair_dir / "speech_q.jsonl")
    asr_only = {k: v for k, v in text[2].items() if k != "question"}

    def loss_nce(lines, name):
        path = tmp_path / name
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        batch = training_batch(tiny, path)
        m = tiny.model.eval()  # no dropout and no negative banks: losses comparable across batches
        with torch.no_grad():
            _, stats, _ = m(**batch)
        return float(stats["loss_nce"]), float(stats["r1_q2c"])

    pairs_only, _ = loss_nce([text[0], text[1]], "pairs.jsonl")
    mixed, _ = loss_nce([asr_only, text[0], text[1]], "mixed.jsonl")
    assert mixed == pytest.approx(pairs_only, abs=1e-4)  # the ASR row is no negative of anything
    both, r1 = loss_nce([asr_only, text[0], speech[1], text[3], speech[4]], "both.jsonl")
    assert np.isfinite(both) and r1 in (0.0, 0.25, 0.5, 0.75, 1.0)  # r1 over the 4 pairs, not 5 rows


def test_questions_without_their_rows_are_refused(tiny, pair_dir):
    batch = training_batch(tiny, pair_dir / "text_q.jsonl")
    batch.pop("question_index")
    batch["question"] = batch["question"][:3]
    with pytest.raises(ValueError, match="3 question entries for 8 contexts.*question_index"):
        tiny.model(**batch)


def test_mwer_scores_the_pass_inference_uses(pair_dir, cmvn, monkeypatch):
    """With the sampler on, MWER must see the decoder on the pure CIF embeddings, not the pass that
    already holds reference embeddings."""
    import funasr_clsr.models.clsr.model as model_module

    am = build_tiny(frontend_cmvn=cmvn, sampling_ratio=0.75, mwer_weight=0.1)
    m = am.model.train()
    seen = {}
    predictor_out = []
    m.predictor.register_forward_hook(lambda mod, args, out: predictor_out.append(out[0]))
    passes = []
    real_pass = m._decode_pass

    def recording_pass(enc, enc_lens, token_embeds, token_lens):
        out = real_pass(enc, enc_lens, token_embeds, token_lens)
        passes.append((token_embeds, out[0]))
        return out

    real_mwer = model_module.mwer_negative_sampling

    def recording_mwer(logits, *args, **kwargs):
        seen["logits"] = logits
        return real_mwer(logits, *args, **kwargs)

    monkeypatch.setattr(model_module, "mwer_negative_sampling", recording_mwer)
    monkeypatch.setattr(m, "_decode_pass", recording_pass)
    loss, stats, _ = m(**training_batch(am, pair_dir / "text_q.jsonl"))
    inputs = [emb for emb, logits in passes if logits is seen["logits"]]
    assert len(inputs) == 1 and inputs[0] is predictor_out[0]  # the predictor's acoustic embeddings
    assert seen["logits"].requires_grad and torch.isfinite(stats["loss_mwer"])


def test_ctc_readout_starts_the_decoder_as_the_ctc_head_on_cif_embeddings(cmvn):
    am = build_tiny(frontend_cmvn=cmvn, sampling_ratio=0.0, ctc_readout=True, ctc_weight=0.3)
    m = am.model.eval()
    torch.manual_seed(1)
    enc = torch.randn(2, 30, m.encoder.output_size())
    enc_lens = torch.tensor([30, 21])
    embeds = torch.randn(2, 5, enc.size(-1))
    logits, _ = m._decode_pass(enc, enc_lens, embeds, torch.tensor([5, 3]))
    expect = m.ctc.ctc_lo(embeds)
    others = [i for i in range(expect.size(-1)) if i != m.blank_id]
    torch.testing.assert_close(logits[..., others], expect[..., others])  # the decoder's own part starts at 0
    assert torch.all(logits[..., m.blank_id] == 0)  # the blank gets no CTC score
    with pytest.raises(ValueError, match="ctc_readout reads CIF embeddings"):
        build_tiny(frontend_cmvn=cmvn, sampling_ratio=0.5, ctc_readout=True, ctc_weight=0.3)
    with pytest.raises(ValueError, match="ctc_readout needs the CTC head"):
        build_tiny(frontend_cmvn=cmvn, sampling_ratio=0.0, ctc_readout=True, ctc_weight=0.0, cif_align_weight=0.0)


def test_batch_whose_last_item_fires_no_cif_token_decodes(tiny):
    """funasr 1.4.16's cif_v1 indexes past its fired frames when only the batch's last item fires
    nothing (here: no frames at all); CLSR's calc_predictor then runs the items one by one."""
    from funasr.models.paraformer.model import Paraformer

    m = tiny.model.eval()
    torch.manual_seed(0)
    enc = torch.randn(2, 40, m.encoder.output_size())
    lens = torch.tensor([40, 0])
    with torch.no_grad():
        with pytest.raises(IndexError):
            Paraformer.calc_predictor(m, enc, lens)
        acoustic, token_num, alphas, peaks = m.calc_predictor(enc, lens)
        own = m.calc_predictor(enc[:1], lens[:1])
    assert float(own[1][0]) >= 1 and token_num[1] < 1 and acoustic.size(0) == 2
    torch.testing.assert_close(acoustic[0, :own[0].size(1)], own[0][0])
    torch.testing.assert_close(alphas[0], own[2][0])
    assert not acoustic[1].any()


def test_piece_seconds_decodes_long_input_in_pieces_and_joins_their_tokens(cmvn, pair_dir):
    from funasr_clsr.audio import load_audio, pause_cuts

    whole = build_tiny(frontend_cmvn=cmvn).model.eval()
    pieced = build_tiny(frontend_cmvn=cmvn, piece_seconds=1.0).model.eval()
    pieced.load_state_dict(whole.state_dict())
    wavs = [str(pair_dir / f"ctx{i}.wav") for i in range(3)]
    audio = [load_audio(w) for w in wavs]
    long_one = np.concatenate(audio)  # longer than 1 s: cut into pieces at its pauses
    assert len(long_one) > 16000
    cuts = pause_cuts(long_one, 16000, 1.0)
    parts = [long_one[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    # the pieces' own tokens, joined, are what the pieced model reads (in batches of 2 pieces too)
    by_piece = [t for lg, _, n in whole._decoded_batches(parts, 8, None) for ids in whole._ids(lg, n) for t in ids]
    logits, _, n_text = pieced._decode_in_pieces([long_one], 2, None)
    assert pieced._ids(logits, n_text) == [by_piece]
    short = long_one[:15000]
    vec, text = pieced.encode_speech([long_one, short], batch_size=2, return_text=True)
    assert text[0] == whole.asr_tokenizer.decode(by_piece)
    # an input no longer than a piece is decoded whole, as without the option
    torch.testing.assert_close(vec[1], whole.encode_speech([short])[0], rtol=1e-4, atol=1e-5)
    assert text[1] == whole.transcribe([short])[0]
    assert vec.shape == (2, whole.text_encoder.hidden_size)
    with pytest.raises(ValueError, match="piece_seconds must be positive"):
        build_tiny(frontend_cmvn=cmvn, piece_seconds=0)

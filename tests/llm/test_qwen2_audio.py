"""Qwen2-Audio adapter on a tiny random model built from config, with a tokenizer made here (offline)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from clsr_testing import tone_speech

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]


@pytest.fixture(scope="module")
def tiny_qwen():
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (PreTrainedTokenizerFast, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, WhisperFeatureExtractor)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["You are a helpful assistant.", "Who founded the city? The king of the city.", "Audio 1: system user"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=SPECIALS[1:],
                                        model_input_names=["input_ids", "attention_mask"])  # as Qwen2's
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer)
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    config = Qwen2AudioConfig(
        audio_config={"d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
                      "num_mel_bins": 128, "max_source_positions": 1500},
        text_config={"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 16,
                     "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "max_position_embeddings": 4096},
        audio_token_index=audio_id)
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    return model, processor


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    short = d / "short.wav"
    sf.write(short, tone_speech("the king of the city"), 16000)
    long = d / "long44k.wav"  # 41 s at 44.1 kHz: resampled, and split at 30 s
    rng = np.random.default_rng(0)
    sf.write(long, (0.05 * rng.standard_normal(int(41 * 44100))).astype(np.float32), 44100)
    return short, long


def test_prompt_has_one_audio_item_per_piece_and_the_question(tiny_qwen, clips):
    from funasr_clsr.llm import Qwen2AudioLLM

    model, processor = tiny_qwen
    llm = Qwen2AudioLLM(model, processor=processor, max_new_tokens=4)
    short, long = clips
    pieces = llm.load_clips([short, long])
    assert [len(p) for p in pieces[1:]] == [30 * 16000, 11 * 16000]  # 41 s -> 30 s + 11 s at 16 kHz
    prompt = llm.prompt("Who founded the city?", len(pieces))
    assert prompt.startswith("<|im_start|>system\n" + llm.system_prompt + "<|im_end|>\n<|im_start|>user\n")
    for i in (1, 2, 3):
        assert f"Audio {i}: <|audio_bos|><|AUDIO|><|audio_eos|>\n" in prompt
    assert "Audio 4:" not in prompt
    assert prompt.endswith("Who founded the city?<|im_end|>\n<|im_start|>assistant\n")


def test_answer_runs_generate_and_returns_its_text(tiny_qwen, clips, monkeypatch):
    import torch

    from funasr_clsr.llm import Qwen2AudioLLM

    model, processor = tiny_qwen
    llm = Qwen2AudioLLM(model, processor=processor, max_new_tokens=6)
    short, _ = clips
    seen = {}
    real_generate = model.generate

    def spy(**inputs):
        seen.update(inputs)
        return real_generate(**inputs)

    monkeypatch.setattr(model, "generate", spy)
    answer = llm.answer("Who founded the city?", [short])
    assert isinstance(answer, str)
    ids = seen["input_ids"][0]
    # 1.5 s of audio -> 150 mel frames -> 75 encoder frames -> 38 audio tokens after pooling
    frames = int(seen["feature_attention_mask"][0].sum())
    expect = ((frames - 1) // 2 + 1 - 2) // 2 + 1
    assert int((ids == processor.audio_token_id).sum()) == expect > 0
    assert seen["input_features"].shape[:2] == (1, 128)
    assert seen["max_new_tokens"] == 6 and seen["do_sample"] is False
    # the answer is exactly the decoded continuation (greedy, so reproducible)
    with torch.no_grad():
        out = real_generate(**{k: v for k, v in seen.items()})
    cont = processor.batch_decode(out[:, ids.shape[0]:], skip_special_tokens=True)[0].strip()
    assert answer == cont


def test_answer_manifest_and_bad_input(tiny_qwen, clips, tmp_path):
    from funasr_clsr.llm import AudioLLM, Qwen2AudioLLM, read_manifest

    model, processor = tiny_qwen
    short, _ = clips
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format": "funasr_clsr.clips/1", "questions": [
        {"question": "Who founded the city?", "clips": [{"path": "/moved/away.wav", "file": "c.wav"}]}]}))
    (tmp_path / "c.wav").write_bytes(short.read_bytes())
    assert read_manifest(manifest)[0]["clips"][0]["path"] == str(tmp_path / "c.wav")  # relative file wins

    class Echo(AudioLLM):  # the interface: one method
        def answer(self, question, clips):
            return f"{question}|{len(clips)}"

    assert Echo().answer_manifest(manifest)[0]["answer"] == "Who founded the city?|1"
    llm = Qwen2AudioLLM(model, processor=processor, max_new_tokens=2)
    assert isinstance(llm.answer_manifest(manifest)[0]["answer"], str)
    with pytest.raises(ValueError, match="empty"):
        llm.answer("  ", [short])
    with pytest.raises(ValueError, match="no clips"):
        llm.answer("Who?", [])
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        llm.answer("Who?", [tmp_path / "missing.wav"])
    with pytest.raises(ValueError, match="processor"):
        Qwen2AudioLLM(model)
    with pytest.raises(ValueError, match="30"):
        Qwen2AudioLLM(model, processor=processor, max_clip_s=40)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a clips manifest"):
        read_manifest(bad)

"""Answering questions from retrieved clips with an audio LLM (Qwen2-Audio through transformers).

    from funasr_clsr.llm import Qwen2AudioLLM
    llm = Qwen2AudioLLM("Qwen/Qwen2-Audio-7B-Instruct", device="cuda")   # or a local folder
    llm.answer("Who founded the city?", ["clips/q01_r01_talk_80.00-120.00.wav", ...])
    llm.answer_manifest("clips/manifest.json")   # every question of `funasr-clsr clips`

The clips go into one user turn, each as an audio item of Qwen2-Audio's chat template
(``Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>``), followed by the question. Qwen2-Audio's
encoder takes at most 30 s per audio, so longer clips (CLSR's windows are 40 s) are split into
consecutive pieces of at most ``max_clip_s`` seconds, each its own audio item.
"""
from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from funasr_clsr.audio import load_audio

__all__ = ["AudioLLM", "DEFAULT_SYSTEM_PROMPT", "Qwen2AudioLLM", "read_manifest"]

DEFAULT_SYSTEM_PROMPT = ("You are a helpful assistant. The audio clips are the passages of a long recording that "
                         "a retriever found most relevant to the question, best first. Answer the question from "
                         "what is said in them; say so if they do not contain the answer.")


def read_manifest(manifest: str | os.PathLike) -> list[dict[str, Any]]:
    """The questions of a clips manifest with absolute clip paths (``file`` is relative to it)."""
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        questions = doc["questions"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a clips manifest (expected {{'questions': [...]}})") from None
    out = []
    for q in questions:
        clips = []
        for c in q.get("clips", []):
            p = path.parent / c["file"] if c.get("file") and (path.parent / c["file"]).is_file() else Path(c["path"])
            clips.append({**c, "path": str(p)})
        out.append({**q, "clips": clips})
    return out


class AudioLLM(abc.ABC):
    """Anything that answers a text question from a few audio clips (wav paths)."""

    @abc.abstractmethod
    def answer(self, question: str, clips: Sequence[str | os.PathLike]) -> str:
        """The answer to ``question`` given ``clips`` (most relevant first)."""

    def answer_manifest(self, manifest: str | os.PathLike) -> list[dict[str, Any]]:
        """``[{"question", "answer", "clips"}]`` for every question of a clips manifest."""
        return [{"question": q["question"], "answer": self.answer(q["question"], [c["path"] for c in q["clips"]]),
                 "clips": q["clips"]} for q in read_manifest(manifest)]


class Qwen2AudioLLM(AudioLLM):
    """Qwen2-Audio (``Qwen2AudioForConditionalGeneration`` + its processor) as an :class:`AudioLLM`.

    ``model`` is a hub id / local folder (loaded with ``from_pretrained``) or a model object, in
    which case ``processor`` (a ``Qwen2AudioProcessor``) must be given too. Decoding is greedy
    unless ``generate_kwargs`` say otherwise.
    """

    def __init__(self, model: Any = "Qwen/Qwen2-Audio-7B-Instruct", processor: Any = None, device: str = "cpu",
                 dtype: Any = None, max_new_tokens: int = 256, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                 max_clip_s: float = 30.0, **generate_kwargs: Any):
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

            name = os.fspath(model)
            processor = processor or AutoProcessor.from_pretrained(name)
            model = Qwen2AudioForConditionalGeneration.from_pretrained(name, torch_dtype=dtype or "auto")
        elif processor is None:
            raise ValueError("pass the model's processor (Qwen2AudioProcessor) along with a model object")
        if not 0 < max_clip_s <= 30.0:
            raise ValueError(f"max_clip_s must be in (0, 30] (Qwen2-Audio's encoder limit), got {max_clip_s}")
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.system_prompt = system_prompt
        self.max_clip_s = float(max_clip_s)
        self.generate_kwargs = {"do_sample": False, **generate_kwargs}

    @property
    def sampling_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    def load_clips(self, clips: Sequence[str | os.PathLike]) -> list[np.ndarray]:
        """Mono float32 pieces at the feature extractor's rate, each at most ``max_clip_s``."""
        sr = self.sampling_rate
        step = int(self.max_clip_s * sr)
        pieces = []
        for clip in clips:
            x = load_audio(clip, target_sr=sr)
            pieces += [x[i:i + step] for i in range(0, len(x), step) if len(x[i:i + step]) >= sr // 100]
        return pieces

    def messages(self, question: str, n_audio: int) -> list[dict[str, Any]]:
        """The chat: optional system turn, then one user turn with the audio items and the question."""
        msgs: list[dict[str, Any]] = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        content: list[dict[str, Any]] = [{"type": "audio", "audio_url": f"clip{i + 1}"} for i in range(n_audio)]
        content.append({"type": "text", "text": question})
        msgs.append({"role": "user", "content": content})
        return msgs

    def prompt(self, question: str, n_audio: int) -> str:
        return self.processor.apply_chat_template(self.messages(question, n_audio), add_generation_prompt=True,
                                                  tokenize=False)

    def answer(self, question: str, clips: Sequence[str | os.PathLike]) -> str:
        import torch

        if not isinstance(question, str) or not question.strip():
            raise ValueError("question is empty")
        if isinstance(clips, (str, os.PathLike)):
            clips = [clips]
        if not clips:
            raise ValueError("no clips to answer from")
        audios = self.load_clips(clips)
        text = self.prompt(question, len(audios))
        inputs = self.processor(text=text, audio=audios, sampling_rate=self.sampling_rate, return_tensors="pt",
                                padding=True)
        inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()
                  if k != "token_type_ids"}  # Qwen2 has no segment embeddings
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **self.generate_kwargs)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True,
                                           clean_up_tokenization_spaces=False)[0].strip()

"""Audio LLMs that answer a question from the clips CLSR retrieved.

``AudioLLM.answer(question, clips) -> str`` is the whole interface; :class:`Qwen2AudioLLM`
implements it with Qwen2-Audio through transformers. ``answer_manifest`` runs it over the
``manifest.json`` written by ``funasr-clsr clips`` / ``LongFormRetriever.write_clips``.
"""
from funasr_clsr.llm.qwen2_audio import AudioLLM, Qwen2AudioLLM, read_manifest

__all__ = ["AudioLLM", "Qwen2AudioLLM", "read_manifest"]

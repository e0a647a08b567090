"""WordPiece tokenizer over a BERT vocabulary, shaped like a FunASR tokenizer.

CLSR's ASR output vocabulary *is* the text encoder's vocabulary (or a subset of its
rows), so the speech branch must tokenise transcripts exactly the way the text
encoder does. A BERT ``vocab.txt`` already has FunASR's ``tokens.txt`` format (one
token per line, id = line number), so the same file serves both.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

from funasr.register import tables

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


class VocabularyError(ValueError):
    """A token list that cannot serve as (part of) a BERT WordPiece vocabulary."""


def text_encoder_vocab(token_list: str | Path) -> Path | None:
    """``vocab.txt`` of a text encoder named by ``token_list`` (a folder or a hub id), else None.

    The ASR vocabulary defaults to the text encoder's own (configs say
    ``token_list: ${model_conf.text_encoder_conf.path}``), so a folder stands for its vocab.txt.
    """
    path = Path(token_list).expanduser()
    if path.is_dir():
        folder = path
    elif "/" in str(token_list) and not path.exists():  # a hub id
        from funasr_clsr.text_encoder import resolve_text_encoder_dir  # text_encoder imports this module

        folder = resolve_text_encoder_dir(str(token_list))
    else:  # a token file (or a missing one: read_token_list says so)
        return None
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"token list {token_list} is a folder without vocab.txt: pass a tokens.txt "
                                "or a text encoder folder")
    return vocab


def read_token_list(token_list: str | Path | Iterable[str]) -> list[str]:
    """Tokens from a vocab.txt/tokens.txt path, a tokens.json path, a text encoder folder or an iterable."""
    if isinstance(token_list, (str, Path)):
        path = text_encoder_vocab(token_list) or Path(token_list)
        if not path.is_file():
            raise FileNotFoundError(f"token list not found: {path}")
        if path.suffix == ".json":
            import json

            tokens = json.loads(path.read_text(encoding="utf-8"))
        else:
            tokens = path.read_text(encoding="utf-8").split("\n")
            if tokens and tokens[-1] == "":
                tokens = tokens[:-1]
    else:
        tokens = list(token_list)
    if not tokens:
        raise VocabularyError(f"empty token list: {token_list}")
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise VocabularyError(f"token list {token_list if isinstance(token_list, (str, Path)) else '<list>'} "
                              f"lacks the BERT special tokens {missing}")
    if len(set(tokens)) != len(tokens):
        raise VocabularyError("token list has duplicate tokens")
    return tokens


@tables.register("tokenizer_classes", "WordPieceTokenizer")
class WordPieceTokenizer:
    """BERT WordPiece (greedy longest match) over ``token_list``.

    With a subset of a text encoder's vocabulary that keeps every single-character
    piece, any word still tokenises, and every produced piece exists in the full
    vocabulary, so ids map back to the text encoder's rows by token string.
    """

    def __init__(self, token_list, do_lower_case: bool | None = None, max_input_chars_per_word: int = 100,
                 **kwargs):
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

        if token_list is None or (isinstance(token_list, str) and token_list in ("", "???")):
            raise ValueError("WordPieceTokenizer needs tokenizer_conf.token_list: a tokens.txt, or the text "
                             "encoder's folder for its whole vocabulary")
        vocab = text_encoder_vocab(token_list) if isinstance(token_list, (str, Path)) else None  # resolved once
        if do_lower_case is None:  # a text encoder folder says how it cases; a bare token list: uncased
            from funasr_clsr.text_encoder import read_lowercase

            do_lower_case = read_lowercase(vocab.parent) if vocab is not None else True
        self.token_list = read_token_list(vocab or token_list)
        self.token2id = {t: i for i, t in enumerate(self.token_list)}
        self.do_lower_case = do_lower_case
        tok = Tokenizer(models.WordPiece(vocab=self.token2id, unk_token="[UNK]",
                                         max_input_chars_per_word=max_input_chars_per_word))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        self._tok = tok
        self.pad_id = self.token2id["[PAD]"]
        self.unk_id = self.token2id["[UNK]"]
        self.cls_id = self.token2id["[CLS]"]
        self.sep_id = self.token2id["[SEP]"]
        self.special_ids = frozenset(self.token2id[t] for t in SPECIAL_TOKENS)

    # --- FunASR tokenizer interface -------------------------------------------------
    def encode(self, text: str, **kwargs) -> list[int]:
        """Ids without [CLS]/[SEP] (ASR targets)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def text2tokens(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def ids2tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.token_list[int(i)] for i in ids]

    def tokens2ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.token2id.get(t, self.unk_id) for t in tokens]

    def tokens2text(self, tokens: Iterable[str]) -> str:
        kept = [t for t in tokens if t not in SPECIAL_TOKENS]
        return self._tok.decoder.decode(kept) if kept else ""

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokens2text(self.ids2tokens(i for i in ids if int(i) not in self.special_ids))

    def get_vocab(self) -> dict[str, int]:
        return dict(self.token2id)

    def get_vocab_size(self) -> int:
        return len(self.token_list)

    # --- text-encoder side --------------------------------------------------------
    def batch_encode(self, texts: Sequence[str], max_length: int):
        """[CLS] ids [SEP] per text, truncated to ``max_length`` with a warning.

        Returns (ids, lengths) as plain lists; padding is the caller's business.
        """
        out, lengths = [], []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"empty question/text at batch position {i}")
            ids = self.encode(text)
            if len(ids) > max_length - 2:
                logging.warning("text %d has %d tokens, truncated to the text encoder's limit of %d",
                                i, len(ids) + 2, max_length)
                ids = ids[: max_length - 2]
            ids = [self.cls_id, *ids, self.sep_id]
            out.append(ids)
            lengths.append(len(ids))
        return out, lengths

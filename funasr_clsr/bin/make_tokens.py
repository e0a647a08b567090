"""Write the ASR token list: the text encoder's vocabulary, or a subset of its rows.

    python -m funasr_clsr.bin.make_tokens --text-encoder DIR --out tokens.txt \
        [--subset-from train.jsonl ...]

The subset keeps the BERT specials, every single-character piece (``c`` and
``##c``, so any word still tokenises) and every piece seen in the given jsonl
files' ``target``/``question``/``question_target`` text. Ids keep the text
encoder's order; the model maps each token back to its row of W_te by string.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from funasr_clsr.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer, read_token_list

TEXT_FIELDS = ("target", "question", "question_target")


def is_single_char_piece(token: str) -> bool:
    return len(token) == 1 or (token.startswith("##") and len(token) == 3)


def subset_tokens(vocab: list[str], texts, lowercase: bool = True, ascii_chars_only: bool = False,
                  min_count: int = 1) -> list[str]:
    """Specials + single-character pieces (all, or ASCII only) + pieces ``texts`` use >= min_count times.

    Rarer words are then spelled with shorter pieces by the subset's own WordPiece
    pass, so a from-scratch ASR sees more examples per output token.
    """
    from collections import Counter

    full = WordPieceTokenizer(vocab, do_lower_case=lowercase)
    keep = set(SPECIAL_TOKENS) | {t for t in vocab if is_single_char_piece(t)
                                  and (not ascii_chars_only or t[-1].isascii())}
    counts = Counter()
    for text in texts:
        counts.update(full.text2tokens(text))
    keep.update(t for t, n in counts.items() if n >= min_count)
    return [t for t in vocab if t in keep]


def iter_texts(paths):
    for path in paths:
        with open(path, encoding="utf-8") as fin:
            for lineno, line in enumerate(fin, 1):
                if line.strip():
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError:
                        raise SystemExit(f"{path}:{lineno}: not valid JSON") from None
                    for field in TEXT_FIELDS:
                        if isinstance(item.get(field), str):
                            yield item[field]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text-encoder", required=True, help="text encoder folder (with vocab.txt)")
    ap.add_argument("--out", required=True, help="tokens.txt to write")
    ap.add_argument("--subset-from", nargs="*", default=[], help="jsonl files whose text defines the subset")
    ap.add_argument("--ascii-chars-only", action="store_true",
                    help="keep only ASCII single-character pieces (English data: drops ~5k CJK/other-script rows)")
    ap.add_argument("--min-count", type=int, default=1, help="keep pieces seen at least this often")
    args = ap.parse_args(argv)
    from funasr_clsr.text_encoder import read_lowercase

    folder = Path(args.text_encoder)
    vocab = read_token_list(folder / "vocab.txt")
    tokens = subset_tokens(vocab, iter_texts(args.subset_from), read_lowercase(folder),
                                                   args.ascii_chars_only, args.min_count) if args.subset_from else vocab
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(json.dumps({"tokens": len(tokens), "text_encoder_vocab": len(vocab), "out": str(out)}))


if __name__ == "__main__":
    main()

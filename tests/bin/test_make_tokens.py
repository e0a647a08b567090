import json

from clsr_testing import TINY_TE
from funasr_clsr.bin.make_tokens import main, subset_tokens
from funasr_clsr.tokenizer import SPECIAL_TOKENS, read_token_list


def test_full_vocabulary_is_copied(tmp_path, capsys):
    out = tmp_path / "tokens.txt"
    main(["--text-encoder", str(TINY_TE), "--out", str(out)])
    assert read_token_list(out) == read_token_list(TINY_TE / "vocab.txt")
    assert json.loads(capsys.readouterr().out)["tokens"] == len(read_token_list(out))


def test_subset_keeps_specials_single_chars_and_frequent_pieces():
    vocab = read_token_list(TINY_TE / "vocab.txt")
    sub = subset_tokens(vocab, ["the king", "the war", "the city"], min_count=2)
    assert all(t in sub for t in SPECIAL_TOKENS)
    assert "the" in sub and "king" not in sub and "music" not in sub  # seen once / never
    assert all(t in sub for t in ("k", "##g", "z", "##z"))
    assert [t for t in vocab if t in sub] == sub  # keeps the text encoder's order
    assert len(subset_tokens(vocab, ["the king"], min_count=1)) == len(sub) + 1


def test_subset_from_jsonl(tmp_path, pair_dir):
    out = tmp_path / "t.txt"
    main(["--text-encoder", str(TINY_TE), "--out", str(out), "--subset-from", str(pair_dir / "speech_q.jsonl")])
    toks = read_token_list(out)
    assert "church" in toks and "[UNK]" in toks and len(toks) < len(read_token_list(TINY_TE / "vocab.txt"))

import pytest

from clsr_testing import TINY_TE
from funasr_clsr.tokenizer import VocabularyError, WordPieceTokenizer, read_token_list


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer(TINY_TE / "vocab.txt")


def test_wordpiece_greedy_longest_match_and_round_trip(tok):
    pieces = tok.text2tokens("The King of Music")
    assert pieces == ["the", "king", "of", "music"]
    assert tok.text2tokens("kings") == ["king", "##s"]
    ids = tok.encode("the kings of zed")
    assert tok.decode(ids) == "the kings of zed"
    assert tok.ids2tokens(tok.tokens2ids(["king", "##s"])) == ["king", "##s"]


def test_special_ids_and_specials_dropped_on_decode(tok):
    assert tok.token_list[tok.pad_id] == "[PAD]" and tok.token_list[tok.cls_id] == "[CLS]"
    assert tok.decode([tok.cls_id, *tok.encode("a war"), tok.sep_id, tok.pad_id]) == "a war"
    assert tok.get_vocab_size() == len(tok.token_list) == len(tok.get_vocab())


def test_batch_encode_wraps_truncates_and_rejects_empty(tok, caplog):
    ids, lengths = tok.batch_encode(["a war", "king " * 50], max_length=10)
    assert ids[0] == [tok.cls_id, *tok.encode("a war"), tok.sep_id]
    assert lengths[1] == 10 and ids[1][-1] == tok.sep_id
    assert "truncated" in caplog.text
    with pytest.raises(ValueError, match="empty"):
        tok.batch_encode([""], max_length=10)


def test_subset_vocabulary_still_spells_any_word():
    full = read_token_list(TINY_TE / "vocab.txt")
    subset = [t for t in full if t not in ("king", "music")]
    tok = WordPieceTokenizer(subset)
    assert tok.text2tokens("king music") == ["k", "##i", "##n", "##g", "m", "##u", "##s", "##i", "##c"]


def test_bad_token_lists(tmp_path):
    with pytest.raises(VocabularyError, match="special"):
        read_token_list(["a", "b"])
    with pytest.raises(VocabularyError, match="duplicate"):
        read_token_list(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "a"])
    with pytest.raises(FileNotFoundError):
        read_token_list(tmp_path / "nope.txt")


def test_a_text_encoder_folder_stands_for_its_vocabulary_and_casing(tmp_path):
    """The configs' default token list is the text encoder folder: its vocab.txt, cased as it says."""
    import json
    import shutil

    assert WordPieceTokenizer(TINY_TE).token_list == read_token_list(TINY_TE / "vocab.txt")
    cased = tmp_path / "cased"
    shutil.copytree(TINY_TE, cased)
    (cased / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    assert WordPieceTokenizer(cased).do_lower_case is False
    assert WordPieceTokenizer(TINY_TE).do_lower_case is True
    assert WordPieceTokenizer(cased / "vocab.txt").do_lower_case is True  # a bare list: uncased unless told
    assert WordPieceTokenizer(cased, do_lower_case=True).do_lower_case is True  # an explicit setting wins
    (cased / "vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match="folder without vocab.txt"):
        WordPieceTokenizer(cased)
    for missing in (None, "???"):
        with pytest.raises(ValueError, match="needs tokenizer_conf.token_list"):
            WordPieceTokenizer(missing)

"""funasr_clsr.bin.train_text_encoder: FlagEmbedding fine-tuning of the tiny text encoder.

16 toy pairs whose question and context share no word (an arbitrary mapping, so retrieval is at
chance before training and only learning can raise it).  One run trains 15 epochs, a --resume
run continues to 30 from the epoch checkpoint; in-batch loss and R@1 on the pairs must improve,
and the saved folder must load in TextEncoder and sentence-transformers with equal vectors.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from clsr_testing import TINY_TE
from funasr_clsr.bin import train_text_encoder as tte
from funasr_clsr.text_encoder import TextEncoder

WORDS = "city river king war year game team music church school law one two three four five".split()
PAIRS = [{"query": f"what is the {w}", "pos": [f"the {WORDS[(i + 5) % 16]} and {WORDS[(i + 9) % 16]}"]}
         for i, w in enumerate(WORDS)]
TRAIN = ["--batch-size", "8", "--lr", "5e-3", "--temperature", "0.05"]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def in_batch_metrics(folder, pairs=PAIRS, temperature=0.05):
    """(InfoNCE loss, R@1) of query -> positive over all pairs, with TextEncoder."""
    te = TextEncoder(str(folder)).eval()
    with torch.no_grad():
        q = te.encode([p["query"] for p in pairs], is_query=True)
        c = te.encode([p["pos"][0] for p in pairs])
    sim = q @ c.T
    target = torch.arange(len(pairs))
    return F.cross_entropy(sim / temperature, target).item(), (sim.argmax(1) == target).float().mean().item()


@pytest.fixture(scope="module")
def weighted_src(tmp_path_factory):
    """The tiny encoder with (seeded random) weights saved, so 'before' is measurable."""
    src = tmp_path_factory.mktemp("src") / "tiny"
    shutil.copytree(TINY_TE, src)
    torch.manual_seed(0)
    TextEncoder(str(TINY_TE)).model.save_pretrained(src)
    return src


def test_training_improves_retrieval_and_resume_continues(tmp_path, weighted_src, capsys):
    pairs = _write(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "out"
    loss0, r1_0 = in_batch_metrics(weighted_src)
    base = ["--pairs", str(pairs), "--text-encoder", str(weighted_src), "--out", str(out)] + TRAIN
    assert tte.main(base + ["--epochs", "15"]) == 0
    first = json.loads((out / tte.STATE_FILE).read_text())
    assert first["complete"] and first["epochs_done"] == 15 and first["steps"] == 30
    assert len(first["loss_per_epoch"]) == 15 and first["loss_per_epoch"][-1] < first["loss_per_epoch"][0]
    loss1, r1_1 = in_batch_metrics(out)
    assert loss1 < loss0

    # more epochs without --resume: refused, nothing touched
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert tte.main(base + ["--epochs", "30"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime

    capsys.readouterr()
    assert tte.main(base + ["--epochs", "30", "--resume"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["resumed_from"] == "checkpoint-30"
    assert state["steps"] == 60 and state["epochs_done"] == 30
    assert state["loss_per_epoch"][:15] == first["loss_per_epoch"]  # history carried over
    loss2, r1_2 = in_batch_metrics(out)
    assert loss2 < loss1 < loss0
    assert r1_2 > r1_0 and r1_2 >= 0.5  # from chance (1/16) to most pairs retrieved
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-60"]

    # rerunning the finished command does nothing
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert tte.main(base + ["--epochs", "30", "--resume"]) == 0
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime

    # resuming with other settings is refused
    assert tte.main(base[:-6] + ["--batch-size", "4", "--lr", "5e-3", "--temperature", "0.05",
                                 "--epochs", "40", "--resume"]) == 2
    assert "settings differ" in capsys.readouterr().err

    # finished epochs whose checkpoint is gone are never retrained over
    shutil.rmtree(out / "checkpoint-60")
    assert tte.main(base + ["--epochs", "40", "--resume"]) == 2
    assert "no checkpoint-* left" in capsys.readouterr().err
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_config_only_encoder_is_saved_complete_and_loads(tmp_path):
    """The fixture has no weights: the output must have them, plus the sentence-transformers files."""
    pairs = _write(tmp_path / "pairs.jsonl", [{**p, "neg": [PAIRS[(i + 1) % 16]["pos"][0]]} if i % 2 else p
                                              for i, p in enumerate(PAIRS)])
    out = tmp_path / "out"
    import shutil

    config_only = tmp_path / "config_only_te"
    shutil.copytree(TINY_TE, config_only)
    for f in tte.WEIGHT_FILES:
        (config_only / f).unlink(missing_ok=True)
    assert tte.main(["--pairs", str(pairs), "--text-encoder", str(config_only), "--out", str(out), "--epochs", "1",
                     "--symmetric", "--query-instruction", "query: "] + TRAIN) == 0
    state = json.loads((out / tte.STATE_FILE).read_text())
    assert state["config"]["group_size"] == 2 and state["config"]["symmetric"]
    for f in ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json", "modules.json",
              "1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        assert (out / f).is_file(), f
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    assert json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]["query"] == "query: "

    te = TextEncoder(str(out)).eval()
    assert te.loaded_pretrained and te.pooling == "mean"
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu")
    texts = ["the king of the city", "what music was at church"]
    with torch.no_grad():
        ours = te.encode(texts)
    theirs = torch.as_tensor(st.encode(texts, convert_to_numpy=True))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_symmetric_loss_adds_the_reverse_direction():
    from transformers import AutoConfig, AutoModel

    _, model_cls = tte.flag_classes()
    torch.manual_seed(0)
    base = AutoModel.from_config(AutoConfig.from_pretrained(TINY_TE), add_pooling_layer=False)
    model = model_cls(base, temperature=0.05, sentence_pooling_method="mean")
    scores = torch.randn(3, 6)  # 3 queries, group of 2 (positive at 0, 2, 4)
    target = torch.arange(3) * 2
    one_way = F.cross_entropy(scores, target)
    assert torch.allclose(model.compute_loss(scores, target), one_way)
    model.symmetric = True
    back = F.cross_entropy(scores[:, target].t(), torch.arange(3))
    assert torch.allclose(model.compute_loss(scores, target), (one_way + back) / 2)
    # a non-in-batch layout (FlagEmbedding's local scores) keeps the one-way loss
    local = torch.randn(3, 2)
    assert torch.allclose(model.compute_loss(local, torch.zeros(3, dtype=torch.long)),
                          F.cross_entropy(local, torch.zeros(3, dtype=torch.long)))


@pytest.mark.parametrize("content, needle", [
    ("", "no pairs (the file is empty)"),
    ('{"query": "a", "pos": ["b"]}\n{"query": "a", "pos": []}\n', "pairs.jsonl:2: 'pos' must be"),
    ('{"query": "a", "pos": ["b"]}\n\n{broken\n', "pairs.jsonl:3: invalid JSON"),
    ('{"query": "", "pos": ["b"]}\n', "pairs.jsonl:1: 'query' must be"),
    ('{"query": "a", "pos": ["b"], "neg": "c"}\n', "pairs.jsonl:1: 'neg' must be"),
])
def test_bad_pairs_file_is_one_clear_error(tmp_path, capsys, content, needle):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(content)
    out = tmp_path / "out"
    assert tte.main(["--pairs", str(pairs), "--text-encoder", str(TINY_TE), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_inputs_and_foreign_out_dir(tmp_path, capsys):
    pairs = _write(tmp_path / "pairs.jsonl", PAIRS)
    assert tte.main(["--pairs", str(tmp_path / "nope.jsonl"), "--text-encoder", str(TINY_TE),
                     "--out", str(tmp_path / "o")]) == 2
    assert "nope.jsonl: pairs file not found" in capsys.readouterr().err
    assert tte.main(["--pairs", str(pairs), "--text-encoder", str(tmp_path / "no_model"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "no_model: text encoder folder not found" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert tte.main(["--pairs", str(pairs), "--text-encoder", str(TINY_TE), "--out", str(foreign)]) == 2
    assert "not an earlier train_text_encoder run" in capsys.readouterr().err
    assert (foreign / "keep.txt").read_text() == "mine"
    assert tte.main(["--pairs", str(pairs), "--text-encoder", str(TINY_TE), "--out", str(tmp_path / "o"),
                     "--max-length", "512"]) == 2
    assert "must be in 3..128" in capsys.readouterr().err


def test_group_negatives_fills_queries_without_neg():
    pairs = [{"query": "q0", "pos": ["p0"], "neg": ["n0a", "n0b", "n0c"]},
             {"query": "q1", "pos": ["p1"], "neg": []},
             {"query": "q2", "pos": ["p2"], "neg": ["n2"]}]
    out, group = tte.group_negatives(pairs, hard_negatives=2)
    assert group == 3
    assert out[0]["neg"] == ["n0a", "n0b", "n0c"] and out[2]["neg"] == ["n2"]
    assert set(out[1]["neg"]) == {"p0", "p2"}
    assert tte.group_negatives(pairs, hard_negatives=0)[1] == 1
    assert all(p["neg"] == [] for p in tte.group_negatives(pairs, hard_negatives=0)[0])
    no_neg = [{"query": "q", "pos": ["p"], "neg": []}]
    assert tte.group_negatives(no_neg, hard_negatives=7) == ([{"query": "q", "pos": ["p"], "neg": []}], 1)

"""Plots are real, readable, non-blank PNG files."""

import numpy as np
import pytest

from funasr_clsr.evaluation import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_bytes=5000):
    from matplotlib.image import imread

    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    import os

    assert os.path.getsize(path) > min_bytes
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas


def test_recall_curves(tmp_path):
    p = plots.plot_recall_curves({"clsr": [50, 70, 80, 85, 88], "bm25": np.linspace(30, 60, 50)},
                                 tmp_path / "sub" / "curves.png")
    assert p.endswith("curves.png")
    check_png(p)


def test_wer_vs_recall_skips_systems_without_wer(tmp_path):
    p = plots.plot_wer_vs_recall({"clsr": (15.1, 70.0), "cascade": (19.4, 69.9), "clean_text": (None, 67.1)},
                                 tmp_path / "wer.png")
    check_png(p)
    with pytest.raises(ValueError, match="no system"):
        plots.plot_wer_vs_recall({"clean_text": (None, 67.1)}, tmp_path / "x.png")


def test_similarity_map(tmp_path):
    rng = np.random.default_rng(0)
    q = ["what", "river", "carries", "most", "water"]
    s = ["the", "amazon", "river", "carries", "more", "water", "than", "any"]
    p = plots.plot_similarity_map(rng.random((5, 8)), q, s, tmp_path / "map.png", "question x speech tokens")
    check_png(p)
    with pytest.raises(ValueError, match="5x8"):
        plots.plot_similarity_map(rng.random((5, 8)), q, s[:-1], tmp_path / "bad.png")


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=".png"):
        plots.plot_recall_curves({"a": [1, 2]}, tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="no curves"):
        plots.plot_recall_curves({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-finite"):
        plots.plot_recall_curves({"a": [1, float("nan")]}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())

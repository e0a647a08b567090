"""PNG figures for RESULTS.md: recall@k curves, WER vs R@1, token similarity maps.

matplotlib is imported lazily and only through its object API with the Agg canvas, so
these functions never touch pyplot's global backend (safe on headless machines and
inside a caller's interactive session).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import to_numpy

__all__ = ["plot_recall_curves", "plot_wer_vs_recall", "plot_similarity_map"]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> str:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plot path must end in .png, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, format="png", bbox_inches="tight")
    os.replace(tmp, path)  # never leave a half-written PNG under the final name
    return str(path)


def plot_recall_curves(
    curves: Mapping[str, Sequence[float]], path: str | os.PathLike, title: str = "Recall@k"
) -> str:
    """One line per system: recall@k (percent) against k = 1..len(curve)."""
    if not curves:
        raise ValueError("plot_recall_curves: no curves given")
    fig = _new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        y = np.asarray(list(curve), dtype=np.float64)
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"plot_recall_curves: curve for {name!r} must be a non-empty list of numbers")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"plot_recall_curves: curve for {name!r} has non-finite values")
        ax.plot(np.arange(1, y.size + 1), y, marker="o" if y.size <= 20 else None, markersize=3, label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # k is a count
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_wer_vs_recall(
    points: Mapping[str, tuple[float | None, float | None]],
    path: str | os.PathLike,
    title: str = "WER vs Q->C R@1",
) -> str:
    """Scatter of (WER %, R@1 %) per system, labelled; systems without a WER are skipped."""
    kept = {}
    for name, pt in points.items():
        if pt is None or len(pt) != 2:
            raise ValueError(f"plot_wer_vs_recall: point for {name!r} must be a (wer, r1) pair")
        wer, r1 = pt
        if wer is None or r1 is None:
            continue
        wer, r1 = float(wer), float(r1)
        if not (math.isfinite(wer) and math.isfinite(r1)):
            raise ValueError(f"plot_wer_vs_recall: point for {name!r} is not finite: {pt}")
        kept[name] = (wer, r1)
    if not kept:
        raise ValueError("plot_wer_vs_recall: no system has both a WER and an R@1")
    fig = _new_figure(6.0, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    # labels of points that sit close together are stacked upwards instead of printed over each other
    placed: list[tuple[float, float]] = []
    for name, (wer, r1) in sorted(kept.items(), key=lambda kv: (kv[1][1], kv[1][0])):
        ax.scatter([wer], [r1], s=40)
        crowd = sum(1 for w, r in placed if abs(w - wer) < 12 and abs(r - r1) < 6)
        placed.append((wer, r1))
        ax.annotate(name, (wer, r1), textcoords="offset points", xytext=(5, 4 + 11 * crowd), fontsize="small",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if crowd else None)
    ax.set_xlabel("WER (%)")
    ax.set_ylabel("Q->C R@1 (%)")
    max_wer = max(w for w, _ in kept.values())
    ax.set_xlim(0, max(1.0, max_wer * 1.15))
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_similarity_map(
    matrix: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "token similarity",
) -> str:
    """Heatmap of a (rows, cols) token-level similarity, e.g. question tokens x speech tokens."""
    m = to_numpy(matrix, "matrix")
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"plot_similarity_map: matrix must be a non-empty 2-d array, got shape {m.shape}")
    if len(row_labels) != m.shape[0] or len(col_labels) != m.shape[1]:
        raise ValueError(
            f"plot_similarity_map: matrix is {m.shape[0]}x{m.shape[1]} but got "
            f"{len(row_labels)} row labels and {len(col_labels)} column labels"
        )
    if not np.all(np.isfinite(m)):
        raise ValueError("plot_similarity_map: matrix has non-finite values")
    # ~0.28 inch per token keeps labels legible; capped so huge maps stay a sane size.
    width = min(40.0, max(4.0, 1.5 + 0.28 * m.shape[1]))
    height = min(40.0, max(3.0, 1.2 + 0.28 * m.shape[0]))
    fig = _new_figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xticks(np.arange(m.shape[1]))
    ax.set_xticklabels([str(c) for c in col_labels], rotation=90, fontsize="x-small")
    ax.set_yticks(np.arange(m.shape[0]))
    ax.set_yticklabels([str(r) for r in row_labels], fontsize="x-small")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return _save(fig, path)

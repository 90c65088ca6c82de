"""Matplotlib figures of the RLAIF-V analysis (paper Sec. 4), used by the notebooks and the demo.

Every function builds and returns a ``matplotlib.figure.Figure`` without touching pyplot's
global state, so nothing is shown twice in a notebook (Jupyter displays a returned figure),
nothing leaks in a loop, and any backend works (the tests use Agg). Inputs are the plain dicts
and lists of ``hallucination``, ``metrics_coco``, ``breakdowns`` and ``pope``, the numbers of
``pairs`` (margins, lengths) and TRL's ``trainer.state.log_history``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_METRICS",
    "before_after_bars",
    "metrics_per_round",
    "breakdown_bars",
    "pope_bars",
    "margin_histogram",
    "length_histogram",
    "dpo_curves",
    "scene_grid",
    "save_figure",
]

DEFAULT_METRICS: tuple[str, ...] = ("chair_i", "chair_s", "coverage", "labeler_accuracy")
_POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def _figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.5, 3.2)) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def _numeric(d: Mapping[str, Any], keys: Sequence[str] | None) -> list[str]:
    keys = keys if keys is not None else [k for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [k for k in keys if isinstance(d.get(k), (int, float))]


def before_after_bars(before: Mapping[str, Any], after: Mapping[str, Any], keys: Sequence[str] | None = DEFAULT_METRICS, labels: tuple[str, str] = ("before", "after"), title: str = "before vs after RLAIF-V") -> Figure:
    """Side-by-side bars of the metrics present in both dicts, each bar labelled with its value."""
    keys = [k for k in _numeric(before, keys) if isinstance(after.get(k), (int, float))]
    fig, (ax,) = _figure(size=(max(4.5, 1.3 * len(keys) + 1), 3.2))
    x = np.arange(len(keys))
    for j, (d, label) in enumerate(((before, labels[0]), (after, labels[1]))):
        bars = ax.bar(x + (j - 0.5) * 0.38, [float(d[k]) for k in keys], 0.38, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, keys)
    ax.set_title(title)
    ax.legend()
    return fig


def metrics_per_round(history: Sequence[Mapping[str, Any]], keys: Sequence[str] = DEFAULT_METRICS, title: str = "metrics per RLAIF-V round") -> Figure:
    """One line per metric over rounds; x is each entry's ``round`` (else its index; 0 = before training)."""
    fig, (ax,) = _figure(size=(5.5, 3.4))
    xs = [h.get("round", i) for i, h in enumerate(history)]
    for k in keys:
        pts = [(x, float(h[k])) for x, h in zip(xs, history) if isinstance(h.get(k), (int, float))]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=k)
    ax.set_xlabel("round")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return fig


def breakdown_bars(breakdown: Mapping[str, Any]) -> Figure:
    """Four panels from ``breakdowns.breakdown_all``: by sentence position, by object, by claim kind, by length."""
    fig, axes = _figure(ncols=2, nrows=2, size=(4.8, 3.0))
    pos = breakdown.get("position", [])
    axes[0].bar([str(r["position"]) for r in pos], [r["rate"] for r in pos])
    axes[0].set(title="hallucination rate by sentence", xlabel="sentence position", ylabel="hallucinated / mentions")
    obj = breakdown.get("object", {})
    per = obj.get("per_shape", {})
    shapes = list(per)
    hall = np.array([per[s]["n_hallucinated"] for s in shapes])
    tied = np.array([per[s]["n_partner_present"] for s in shapes])
    axes[1].bar(shapes, tied, label="partner present")
    axes[1].bar(shapes, hall - tied, bottom=tied, label="partner absent")
    axes[1].set(title=f"hallucinated objects (partner share {obj.get('partner_present_share', 0):.2f}, "
                f"chance {obj.get('partner_present_chance', 0):.2f})", ylabel="count")  # fmt: skip
    axes[1].title.set_fontsize(8)
    axes[1].tick_params(axis="x", labelrotation=45)
    axes[1].legend(fontsize=7)
    kind = breakdown.get("kind", {})
    axes[2].bar(list(kind), [r["rate"] for r in kind.values()])
    axes[2].set(title="error rate by claim kind", ylabel="wrong / claims")
    length = breakdown.get("length", [])
    axes[3].bar([r["label"] for r in length], [r["chair_s"] for r in length], label="CHAIR_s")
    axes[3].plot([r["label"] for r in length], [r["chair_i"] for r in length], "ko-", label="CHAIR_i")
    axes[3].set(title="hallucination by response length", xlabel="words")
    axes[3].legend(fontsize=7)
    return fig


def pope_bars(results: Mapping[str, Mapping[str, Mapping[str, float]]], metrics: Sequence[str] = _POPE_METRICS) -> Figure:
    """Grouped bars per POPE setting, one panel per answer mode, from ``pope.pope_all``."""
    settings = list(results)
    modes = list(dict.fromkeys(m for r in results.values() for m in r))
    fig, axes = _figure(ncols=max(1, len(modes)), size=(5.0, 3.2))
    x = np.arange(len(settings))
    w = 0.8 / len(metrics)
    for ax, mode in zip(axes, modes):
        for j, m in enumerate(metrics):
            ax.bar(x + (j - (len(metrics) - 1) / 2) * w, [results[s].get(mode, {}).get(m, 0.0) for s in settings], w, label=m)
        ax.set_xticks(x, settings)
        ax.set(title=f"POPE ({mode} answers)", ylim=(0, 1.05))
    if modes:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(metrics), fontsize=8)
    return fig


def margin_histogram(margins: Sequence[float], bins: int = 20, title: str = "score margin of preference pairs") -> Figure:
    """Histogram of pair margins (score of chosen - score of rejected)."""
    fig, (ax,) = _figure()
    ax.hist(list(margins), bins=bins)
    ax.set(title=title, xlabel="margin", ylabel="pairs")
    return fig


def length_histogram(chosen: Sequence[float], rejected: Sequence[float], bins: int = 20, title: str = "length of chosen vs rejected") -> Figure:
    """Overlaid histograms of chosen and rejected lengths (words), with their means in the legend."""
    fig, (ax,) = _figure()
    data = [list(chosen), list(rejected)]
    edges = np.histogram_bin_edges(data[0] + data[1] or [0], bins=bins)
    for vals, label in zip(data, ("chosen", "rejected")):
        mean = float(np.mean(vals)) if vals else 0.0
        ax.hist(vals, bins=edges, alpha=0.55, label=f"{label} (mean {mean:.1f})")
    ax.set(title=title, xlabel="words", ylabel="responses")
    ax.legend()
    return fig


def dpo_curves(log_history: Sequence[Mapping[str, Any]]) -> Figure:
    """Loss, reward margin/accuracy and chosen/rejected rewards over steps from TRL's ``log_history``."""
    panels = (("loss",), ("rewards/margins", "rewards/accuracies"), ("rewards/chosen", "rewards/rejected"))
    fig, axes = _figure(ncols=3, size=(4.0, 3.0))
    for ax, keys in zip(axes, panels):
        for k in keys:
            pts = [(h.get("step", i), float(h[k])) for i, h in enumerate(log_history) if isinstance(h.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=k)
        ax.set(xlabel="step", title=" / ".join(keys))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def scene_grid(images: Sequence[Any], captions: Sequence[str] | None = None, ncols: int = 4, size: float = 2.2, wrap: int = 28) -> Figure:
    """A grid of PIL images (nearest-neighbour, no axes), each with its caption wrapped underneath."""
    import textwrap

    captions = list(captions) if captions is not None else [""] * len(images)
    if len(captions) != len(images):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions")
    ncols = max(1, min(ncols, len(images)))
    nrows = max(1, -(-len(images) // ncols))
    lines = max((len(textwrap.wrap(c, wrap)) for c in captions), default=0)
    fig, axes = _figure(ncols=ncols, nrows=nrows, size=(size, size + 0.16 * lines))
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k < len(images):
            ax.imshow(np.asarray(images[k]), interpolation="nearest")
            ax.text(0.5, -0.04, "\n".join(textwrap.wrap(captions[k], wrap)), transform=ax.transAxes, ha="center", va="top", fontsize=7)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write a figure (format from the suffix: .png, .svg, .pdf), creating folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path

"""Matplotlib figures of the RLAIF-V analysis (paper Sec. 4), used by the notebooks and the demo.

Every function builds and returns a :class:`NotebookFigure` (a ``matplotlib.figure.Figure``) without
touching pyplot's global state, so nothing leaks in a loop and any backend works (the tests use Agg).
Without pyplot nothing registers a figure's image display in a fresh kernel, so the figure carries its
own (``_repr_mimebundle_``: a PNG); and inside a Jupyter kernel each helper also queues its figure to be
shown when the cell ends, so a cell ending in ``;`` or assigning the figure still shows it, once. Inputs are the plain dicts
and lists of ``hallucination``, ``metrics_coco``, ``breakdowns`` and ``pope``, the numbers of
``pairs`` (margins, lengths) and TRL's ``trainer.state.log_history``; notebook 00 adds the
co-occurrence prior (``breakdowns.cooccurrence_matrix``), notebook 01 a sampling sweep and
notebook 03 the score audit (``audit.score_audit``), notebook 04 the pair outcomes
(``audit.compare_with_perfect_labeler``).
"""

from __future__ import annotations

import base64
import functools
import io
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .toyworld.scenes import PARTNERS, SHAPES

__all__ = [
    "DEFAULT_METRICS",
    "NotebookFigure",
    "before_after_bars",
    "metrics_per_round",
    "breakdown_bars",
    "pope_bars",
    "pope_noise_curve",
    "margin_histogram",
    "length_histogram",
    "dpo_curves",
    "scene_grid",
    "cooccurrence_heatmaps",
    "object_hallucination_bars",
    "sweep_lines",
    "score_scatter",
    "pair_outcome_bars",
    "ablation_bars",
    "save_figure",
]

DEFAULT_METRICS: tuple[str, ...] = ("chair_i", "chair_s", "coverage", "labeler_accuracy")
_POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


class NotebookFigure(Figure):
    """A matplotlib Figure that displays as a PNG image in Jupyter (JupyterLab, VS Code, Colab, nbconvert)."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """The figure as a base64 PNG; a figure shown here is no longer waiting for the end of its cell."""
        _PENDING[:] = [f for f in _PENDING if f is not self]
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii")}


_PENDING: list[NotebookFigure] = []  # figures made by this cell and not displayed yet
_HOOKED: set[int] = set()  # ids of the IPython shells whose post_execute event shows them


def _kernel_shell() -> Any:
    """The running IPython kernel's shell, or None (plain Python, the CLI, a terminal IPython)."""
    if "IPython" not in sys.modules:
        return None
    shell = sys.modules["IPython"].get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None


def _show_pending() -> None:
    """Display every figure this cell made and did not display (a cell ending in ``;``, or one that assigned it)."""
    from IPython.display import display

    pending, _PENDING[:] = list(_PENDING), []
    for fig in pending:
        display(fig)


def _shown(helper: Callable[..., NotebookFigure]) -> Callable[..., NotebookFigure]:
    """Make a plot helper queue its figure, inside a Jupyter kernel, to be displayed when the cell ends."""

    @functools.wraps(helper)
    def wrapper(*args: Any, **kwargs: Any) -> NotebookFigure:
        fig = helper(*args, **kwargs)
        shell = _kernel_shell()
        if shell is not None:
            if id(shell) not in _HOOKED:
                shell.events.register("post_execute", _show_pending)
                _HOOKED.add(id(shell))
            _PENDING.append(fig)
        return fig

    return wrapper


def _figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.5, 3.2)) -> tuple[NotebookFigure, np.ndarray]:
    fig = NotebookFigure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def _numeric(d: Mapping[str, Any], keys: Sequence[str] | None) -> list[str]:
    keys = keys if keys is not None else [k for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [k for k in keys if isinstance(d.get(k), (int, float))]


@_shown
def before_after_bars(before: Mapping[str, Any], after: Mapping[str, Any], keys: Sequence[str] | None = DEFAULT_METRICS, labels: tuple[str, str] = ("before", "after"), title: str = "before vs after RLAIF-V") -> NotebookFigure:
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


@_shown
def metrics_per_round(history: Sequence[Mapping[str, Any]], keys: Sequence[str] = DEFAULT_METRICS, title: str = "metrics per RLAIF-V round") -> NotebookFigure:
    """One line per metric over rounds; x is each entry's ``round`` (else its index; 0 = before training)."""
    fig, (ax,) = _figure(size=(5.5, 3.4))
    xs = [h.get("round", i) for i, h in enumerate(history)]
    for k in keys:
        pts = [(x, float(h[k])) for x, h in zip(xs, history) if isinstance(h.get(k), (int, float))]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=k)
    ax.set_xlabel("round (0 = before training)")
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return fig


@_shown
def breakdown_bars(breakdown: Mapping[str, Any]) -> NotebookFigure:
    """Four panels from ``breakdowns.breakdown_all``: by sentence position, by object, by claim kind, by length."""
    fig, axes = _figure(ncols=2, nrows=2, size=(4.8, 3.0))
    pos = breakdown.get("position", [])
    axes[0].bar([str(r["position"]) for r in pos], [r["rate"] for r in pos])
    axes[0].set(title="hallucination rate by sentence", xlabel="sentence position", ylabel="hallucinated / mentions")
    _object_panel(axes[1], breakdown.get("object", {}))
    kind = breakdown.get("kind", {})
    axes[2].bar(list(kind), [r["rate"] for r in kind.values()])
    axes[2].set(title="error rate by claim kind", ylabel="wrong / claims")
    length = breakdown.get("length", [])
    axes[3].bar([r["label"] for r in length], [r["chair_s"] for r in length], label="CHAIR_s")
    axes[3].plot([r["label"] for r in length], [r["chair_i"] for r in length], "ko-", label="CHAIR_i")
    axes[3].set(title="hallucination by response length", xlabel="words")
    axes[3].legend(fontsize=7)
    return fig


def _object_panel(ax: Any, obj: Mapping[str, Any]) -> None:
    """Stacked bars per shape: hallucinated mentions whose prior partner was present / absent."""
    per = obj.get("per_shape", {})
    shapes = list(per)
    hall = np.array([per[s]["n_hallucinated"] for s in shapes])
    tied = np.array([per[s]["n_partner_present"] for s in shapes])
    ax.bar(shapes, tied, label="partner present")
    ax.bar(shapes, hall - tied, bottom=tied, label="partner absent")
    ax.set(title=f"hallucinated objects (partner share {obj.get('partner_present_share', 0):.2f}, "
           f"chance {obj.get('partner_present_chance', 0):.2f})", ylabel="count")  # fmt: skip
    ax.title.set_fontsize(8)
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend(fontsize=7)


@_shown
def pope_bars(results: Mapping[str, Mapping[str, Mapping[str, float]]], metrics: Sequence[str] = _POPE_METRICS) -> NotebookFigure:
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


@_shown
def pope_noise_curve(sweep: Mapping[float, Mapping[str, Mapping[str, float]]], metric: str = "accuracy") -> NotebookFigure:
    """One line per POPE setting: ``metric`` against the image noise, from ``pope.pope_noise_sweep``
    (error bars: one binomial standard error)."""
    noises = sorted(sweep)
    fig, (ax,) = _figure(size=(5.0, 3.2))
    for setting in dict.fromkeys(s for row in sweep.values() for s in row):
        values = np.array([sweep[x][setting][metric] for x in noises])
        errors = np.sqrt(values * (1 - values) / np.array([sweep[x][setting]["n"] for x in noises]))
        ax.errorbar(noises, values, yerr=errors, marker="o", capsize=3, label=setting)
    ax.set(title=f"POPE {metric} (logit answers) on noisy images", xlabel="pixel noise (std, 0-255 units)", ylabel=metric)
    ax.legend()
    return fig


@_shown
def margin_histogram(margins: Sequence[float], bins: int = 20, title: str = "score margin of preference pairs") -> NotebookFigure:
    """Histogram of pair margins (score of chosen - score of rejected)."""
    fig, (ax,) = _figure()
    ax.hist(list(margins), bins=bins)
    ax.set(title=title, xlabel="margin", ylabel="pairs")
    return fig


@_shown
def length_histogram(chosen: Sequence[float], rejected: Sequence[float], bins: int = 20, title: str = "length of chosen vs rejected") -> NotebookFigure:
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


@_shown
def dpo_curves(log_history: Sequence[Mapping[str, Any]]) -> NotebookFigure:
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


@_shown
def scene_grid(images: Sequence[Any], captions: Sequence[str] | None = None, ncols: int = 4, size: float = 2.2, wrap: int = 28) -> NotebookFigure:
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


@_shown
def cooccurrence_heatmaps(matrices: Mapping[str, Sequence[Sequence[float]]], labels: Sequence[str] = SHAPES, partners: Mapping[str, str] | None = PARTNERS) -> NotebookFigure:
    """One heatmap per named matrix from ``breakdowns.cooccurrence_matrix``: P(column shape | row shape).

    The diagonal (always 1) is left blank, every cell is labelled with its value, and the
    ``partners`` cells (the co-occurrence prior) are outlined in black.
    """
    fig, axes = _figure(ncols=max(1, len(matrices)), size=(4.2, 3.8))
    idx = {s: k for k, s in enumerate(labels)}
    for ax, (title, m) in zip(axes, matrices.items()):
        a = np.array(m, dtype=float)
        np.fill_diagonal(a, np.nan)
        im = ax.imshow(a, vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(a):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}"[1:] if v < 1 else "1", ha="center", va="center", fontsize=6, color="w" if v < 0.5 else "k")
        for s, p in (partners or {}).items():
            if s in idx and p in idx:
                ax.add_patch(_rect((idx[p] - 0.5, idx[s] - 0.5)))
        ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set(title=title, xlabel="also present", ylabel="scenes with")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="share of scenes")
    return fig


def _rect(xy: tuple[float, float]) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, 1, 1, fill=False, edgecolor="k", linewidth=1.5)


@_shown
def object_hallucination_bars(obj: Mapping[str, Any], title: str = "which absent objects are named") -> NotebookFigure:
    """``breakdowns.by_object`` in two panels: hallucinations per shape (partner present / absent), and the
    share of hallucinations whose prior partner was in the scene next to the share expected by chance."""
    fig, axes = _figure(ncols=2, size=(4.5, 3.2))
    _object_panel(axes[0], obj)
    vals = [float(obj.get("partner_present_share", 0.0)), float(obj.get("partner_present_chance", 0.0))]
    bars = axes[1].bar(["observed", "chance"], vals, color=["C0", "0.6"])
    axes[1].bar_label(bars, fmt="%.2f", fontsize=8)
    axes[1].set(title="partner of a present shape", ylabel="share of hallucinations", ylim=(0, 1.05))
    fig.suptitle(title)
    return fig


@_shown
def sweep_lines(rows: Sequence[Mapping[str, Any]], x: str, keys: Sequence[str], title: str = "") -> NotebookFigure:
    """One line per metric in ``keys`` against the setting ``x`` (e.g. a temperature sweep), one row per setting."""
    fig, (ax,) = _figure(size=(5.0, 3.4))
    xs = [float(r[x]) for r in rows]
    for k in keys:
        ax.plot(xs, [float(r[k]) for r in rows], marker="o", label=k)
    ax.set(xlabel=x, title=title, ylim=(0, 1.05))
    ax.set_xticks(xs)
    ax.legend(fontsize=8)
    return fig


@_shown
def score_scatter(points: Sequence[tuple[float, int]], title: str = "response score vs truly false claims") -> NotebookFigure:
    """``audit.score_audit(...)["points"]``: truly false claims (x) vs score (y), marker area = responses.

    The dashed line is a perfect labeler (score = -false claims).
    """
    fig, (ax,) = _figure(size=(4.5, 3.4))
    counts: dict[tuple[float, int], int] = {}
    for score, false in points:
        counts[(float(score), int(false))] = counts.get((float(score), int(false)), 0) + 1
    if counts:
        ys, xs = zip(*counts)
        ax.scatter(xs, ys, s=[20 + 15 * n for n in counts.values()], alpha=0.6)
        hi = max(xs)
        ax.plot([0, hi], [0, -hi], "k--", linewidth=1, label="perfect labeler")
        ax.legend(fontsize=8)
    ax.set(xlabel="truly false claims", ylabel="score = -(rejected claims)", title=title)
    return fig


_OUTCOME_COLOURS = {
    "fewer_objects": "tab:green", "fewer_attribute_errors": "yellowgreen",
    "no_true_difference": "tab:gray", "wrong_way": "tab:red",
}  # fmt: skip


@_shown
def pair_outcome_bars(summaries: Mapping[str, Mapping[str, Any]], title: str = "what the pairs teach, by the truth") -> NotebookFigure:
    """One stacked bar per labeler of the shares of its pairs per outcome (``audit.compare_with_perfect_labeler``)."""
    fig, (ax,) = _figure(size=(6.5, 1.2 + 0.6 * max(len(summaries), 1)))
    names = list(summaries)
    for i, name in enumerate(names):
        left = 0.0
        for key, share in summaries[name]["outcomes"].items():  # in audit.PAIR_OUTCOMES order
            share = share or 0.0
            ax.barh(i, share, left=left, color=_OUTCOME_COLOURS.get(key), label=key.replace("_", " ") if i == 0 else None)
            if share >= 0.06:
                ax.text(left + share / 2, i, f"{share:.0%}", ha="center", va="center", fontsize=8)
            left += share
    ax.set_yticks(range(len(names)), [f"{n} ({summaries[n]['n_pairs']} pairs)" for n in names])
    ax.set(xlim=(0, 1), xlabel="share of pairs", title=title)
    ax.invert_yaxis()
    fig.legend(fontsize=7, ncols=4, loc="outside lower center")
    return fig


@_shown
def ablation_bars(summary: Mapping[str, Any], keys: Sequence[str] = ("chair_i", "coverage", "share_fewer_false_claims", "wrong_way")) -> NotebookFigure:
    """``ablations.run_ablations(...)``: one panel per metric, a bar per variant (mean, whiskers ± std over seeds);
    the dashed line is the starting policy where it has the metric."""
    fig, axes = _figure(ncols=len(keys), size=(3.0, 3.4))
    order = (summary.get("config") or {}).get("variants") or list(summary["variants"])
    names = [v for v in order if v in summary["variants"]]  # the sweep's order ("paper" first), not the JSON's sorted keys
    for ax, key in zip(axes.ravel(), keys):
        stats = [summary["variants"][v].get(key) or {} for v in names]
        means = [s.get("mean") if s.get("mean") is not None else np.nan for s in stats]
        errs = [s.get("std") or 0.0 for s in stats]
        ax.bar(range(len(names)), means, yerr=errs, capsize=3, color=["tab:green"] + ["tab:blue"] * (len(names) - 1))
        base = (summary.get("baseline") or {}).get(key)
        if base and base.get("mean") is not None:
            ax.axhline(base["mean"], color="k", linestyle="--", linewidth=1, label="start")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(key, fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write a figure (format from the suffix: .png, .svg, .pdf), creating folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path

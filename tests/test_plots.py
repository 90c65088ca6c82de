"""Figures: each builder returns a Figure with the expected panels and saves to disk (Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rlaifv_lib import plots  # noqa: E402
from rlaifv_lib.breakdowns import breakdown_all, by_object, cooccurrence_matrix  # noqa: E402
from rlaifv_lib.toyworld.grammar import describe  # noqa: E402
from rlaifv_lib.toyworld.render import render_scene  # noqa: E402
from rlaifv_lib.toyworld.scenes import evaluation_scenes, sample_scenes  # noqa: E402

BEFORE = {"chair_i": 0.3, "chair_s": 0.6, "coverage": 0.8, "labeler_accuracy": 0.85, "texts": ["x"]}
AFTER = {"chair_i": 0.1, "chair_s": 0.25, "coverage": 0.78, "labeler_accuracy": 0.88}


def _bar_heights(ax) -> list[float]:
    return [p.get_height() for p in ax.patches]


def test_before_after_bars():
    fig = plots.before_after_bars(BEFORE, AFTER)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["chair_i", "chair_s", "coverage", "labeler_accuracy"]
    assert _bar_heights(ax) == pytest.approx([0.3, 0.6, 0.8, 0.85, 0.1, 0.25, 0.78, 0.88])
    # keys=None: every numeric key present in both ("texts" is skipped)
    assert len(plots.before_after_bars(BEFORE, AFTER, keys=None).axes[0].patches) == 8


def test_metrics_per_round():
    history = [BEFORE, AFTER, {"chair_i": 0.05, "chair_s": 0.1, "coverage": 0.77}]
    ax = plots.metrics_per_round(history).axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"chair_i", "chair_s", "coverage", "labeler_accuracy"}
    assert list(lines["chair_i"].get_xdata()) == [0, 1, 2]
    assert list(lines["labeler_accuracy"].get_xdata()) == [0, 1]  # missing in round 2


def test_breakdown_bars():
    scenes = evaluation_scenes(6)
    texts = [describe(s) + " there is a small red ring at the top ." for s in scenes]
    fig = plots.breakdown_bars(breakdown_all(texts, scenes))
    assert len(fig.axes) == 4


def test_pope_bars():
    m = {"accuracy": 0.8, "precision": 0.7, "recall": 0.9, "f1": 0.79, "yes_ratio": 0.6}
    res = {s: {"text": m, "logits": m} for s in ("random", "popular", "adversarial")}
    fig = plots.pope_bars(res)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].patches) == 3 * 5  # 3 settings x 5 metrics


def test_pope_noise_curve():
    m = {"accuracy": 0.8, "n": 100}
    fig = plots.pope_noise_curve({0.0: {"random": m, "adversarial": m}, 80.0: {"random": m, "adversarial": {"accuracy": 0.6, "n": 100}}})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["random", "adversarial"]
    assert any(list(line.get_ydata()) == [0.8, 0.6] for line in ax.lines)


def test_histograms():
    fig = plots.margin_histogram([1, 1, 2, 3, 1], bins=3)
    assert sum(_bar_heights(fig.axes[0])) == 5
    fig = plots.length_histogram([10, 12, 14], [11, 20], bins=4)
    ax = fig.axes[0]
    assert sum(_bar_heights(ax)) == 5
    assert "mean 12.0" in ax.get_legend().get_texts()[0].get_text()
    assert isinstance(plots.length_histogram([], []), Figure)


def test_dpo_curves():
    log = [
        {"loss": 0.69, "rewards/margins": 0.0, "rewards/accuracies": 0.5, "rewards/chosen": 0.0, "rewards/rejected": 0.0, "step": 1},
        {"loss": 0.5, "rewards/margins": 0.4, "rewards/accuracies": 0.8, "rewards/chosen": 0.1, "rewards/rejected": -0.3, "step": 2},
        {"train_runtime": 3.0, "train_loss": 0.6, "step": 2},  # TRL's final summary entry has no 'loss'
    ]
    fig = plots.dpo_curves(log)
    assert len(fig.axes) == 3
    loss = fig.axes[0].get_lines()[0]
    assert list(loss.get_xdata()) == [1, 2] and list(loss.get_ydata()) == [0.69, 0.5]
    assert len(fig.axes[1].get_lines()) == 2 and len(fig.axes[2].get_lines()) == 2


def test_scene_grid_and_save(tmp_path):
    scenes = evaluation_scenes(5)
    fig = plots.scene_grid([render_scene(s) for s in scenes], [describe(s) for s in scenes], ncols=3)
    assert len(fig.axes) == 6 and len(fig.axes[0].images) == 1 and not fig.axes[5].images
    out = plots.save_figure(fig, tmp_path / "sub" / "grid.png")
    assert out.exists() and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        plots.scene_grid([render_scene(scenes[0])], ["a", "b"])


def test_cooccurrence_heatmaps():
    m = cooccurrence_matrix(sample_scenes(200, seed=1, prior=True))
    fig = plots.cooccurrence_heatmaps({"pre-training": m, "evaluation": cooccurrence_matrix(evaluation_scenes(50))})
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 2
    assert len(heat[0].patches) == 8  # one outline per PARTNERS cell
    assert len(heat[0].texts) == 8 * 7  # every off-diagonal cell labelled


def test_object_hallucination_bars():
    scenes = evaluation_scenes(6)
    texts = [describe(s) + " there is a small red ring at the top ." for s in scenes]
    obj = by_object(texts, scenes)
    fig = plots.object_hallucination_bars(obj)
    assert len(fig.axes) == 2
    assert _bar_heights(fig.axes[1]) == pytest.approx([obj["partner_present_share"], obj["partner_present_chance"]])


def test_sweep_lines():
    rows = [{"temperature": t, "chair_i": 0.1 * k, "distinct": 0.3 * k} for k, t in enumerate((0.3, 0.7, 1.2))]
    ax = plots.sweep_lines(rows, "temperature", ["chair_i", "distinct"]).axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["distinct"].get_xdata()) == [0.3, 0.7, 1.2]
    assert list(lines["chair_i"].get_ydata()) == pytest.approx([0.0, 0.1, 0.2])


def test_score_scatter():
    ax = plots.score_scatter([(0.0, 0), (0.0, 0), (-1.0, 2)]).axes[0]
    offsets = ax.collections[0].get_offsets()
    assert sorted(map(tuple, offsets.tolist())) == [(0.0, 0.0), (2.0, -1.0)]  # repeated points merged
    assert len(ax.get_lines()) == 1  # the perfect-labeler line
    assert not plots.score_scatter([]).axes[0].collections


def test_pair_outcome_bars():
    summaries = {
        "self-feedback": {"n_pairs": 10, "outcomes": {"fewer_objects": 0.6, "fewer_attribute_errors": 0.2, "no_true_difference": 0.1, "wrong_way": 0.1}},
        "perfect labeler": {"n_pairs": 12, "outcomes": {"fewer_objects": 0.75, "fewer_attribute_errors": 0.25, "no_true_difference": 0.0, "wrong_way": None}},
    }  # fmt: skip
    ax = plots.pair_outcome_bars(summaries).axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == pytest.approx([0.6, 0.2, 0.1, 0.1, 0.75, 0.25, 0.0, 0.0])  # None drawn as 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["self-feedback (10 pairs)", "perfect labeler (12 pairs)"]


def test_a_figure_carries_its_own_png():
    """Without pyplot nothing registers an image display for a Figure: the helpers' figures bring their own."""
    import base64

    bundle = plots.margin_histogram([1.0, 2.0, 2.0])._repr_mimebundle_()
    assert set(bundle) == {"image/png"}
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")


def test_figures_show_once_in_a_kernel_even_after_a_semicolon(tmp_path):
    """In a Jupyter kernel: a returned figure, one silenced by `;`, an assigned one and two from a loop each show
    exactly one image, pyplot imported or not; plain code shows nothing."""
    import nbformat
    from test_notebooks import execute_notebook

    cells = {
        "from rlaifv_lib.plots import margin_histogram\nmargin_histogram([1, 2, 3])": 1,
        "margin_histogram([1, 2]);": 1,
        "fig = margin_histogram([1])\nprint('assigned')": 1,
        "import matplotlib.pyplot as plt\nmargin_histogram([1, 2])": 1,
        "fig": 1,
        "[margin_histogram([1]) for _ in range(2)];": 2,
        "x = 1": 0,
    }
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "figures.ipynb")
    ran = execute_notebook(tmp_path / "figures.ipynb", timeout=120)
    images = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in ran.cells]
    assert images == list(cells.values())

"""Training curves on separate axes with the chosen epoch marked; the shared page look."""

from __future__ import annotations

from medlens.evaluate import figures, page

HISTORY = [
    {"epoch": e, "train_loss": 0.7 - 0.1 * e, "val_loss": 0.72 - 0.08 * e, "val_auc": 0.6 + 0.1 * e,
     "val_acc": 0.55 + 0.05 * e, "lr": 1e-3, "seconds": 2.0, "items_per_s": 300.0 + 10 * e}
    for e in range(4)
]


def _axis(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def test_curves_put_loss_metric_and_throughput_on_separate_axes():
    fig = figures.training_curves_figure(HISTORY, best_epoch=2, monitor="val_auc")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "validation metrics", "throughput"]
    labels = {ax.get_title(): {ln.get_label() for ln in ax.get_lines()} for ax in fig.axes}
    metric = _axis(fig, "validation metrics")
    assert {"val_auc", "val_acc"} <= labels["validation metrics"]
    assert metric.get_ylim()[1] <= 1.05 and metric.get_ylim()[0] >= 0
    assert not any("items" in lab or "loss" in lab for lab in labels["validation metrics"])
    speed = _axis(fig, "throughput")
    assert "items_per_s" in labels["throughput"] and speed.get_ylabel() == "items/s"
    assert speed.get_ylim()[1] >= 330
    assert {"train_loss", "val_loss"} <= labels["loss"]
    # the chosen epoch is marked on every panel, as a vertical line at x = 2
    for ax in fig.axes:
        marks = [ln for ln in ax.get_lines() if ln.get_label().startswith("chosen epoch 2")]
        assert len(marks) == 1 and set(marks[0].get_xdata()) == {2}
        assert "val_auc" in marks[0].get_label()
    assert figures.training_curves_png(HISTORY, best_epoch=2)[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_without_throughput_or_choice():
    fig = figures.training_curves_figure([{"epoch": 0, "train_loss": 1.0, "val_dice": 0.4}])
    assert [ax.get_title() for ax in fig.axes] == ["loss", "validation metrics"]
    assert not any(ln.get_label().startswith("chosen") for ax in fig.axes for ln in ax.get_lines())
    assert figures.training_curves_figure([]) is None


def test_counts_print_as_integers_and_units_follow_values():
    assert page.fmt(2.0, count=page.is_count("patients")) == "2"
    assert page.fmt(0.5, count=page.is_count("mean_iou")) == "0.500"
    assert page.fmt(12.3456, unit="mm") == "12.346 mm"
    assert page.fmt(float("nan"), unit="mm") == "n/a"
    html = page.kv_table({"patients": 2.0, "mean_hd95": 3.25}, units={"mean_hd95": "mm"})
    assert '<td class="n">2</td>' in html and "3.250 mm" in html and "2.000" not in html


def test_model_card_markdown_is_rendered_safely():
    md = ("# Model card: x\n\n> **Not for clinical use.**\n\n## Data\n\n"
          "- classes: <script>alert(1)</script>, [click](javascript:alert(1))\n\n"
          "| metric | value |\n|---|---|\n| roc_auc | 0.900 |\n")
    out = page.markdown_html(md)
    assert "<h1>" in out and "<blockquote>" in out and "<strong>Not for clinical use.</strong>" in out
    assert "<table>" in out and "<td>0.900</td>" in out
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "<a " not in out and "href" not in out


def test_page_shell_has_the_banner_and_escapes_titles():
    html = page.page("A <b> report", [("One", "<p>x</p>"), ("Two & more", "<p>y</p>")])
    assert html.startswith("<!DOCTYPE html>") and "Not for clinical use" in html
    assert "A &lt;b&gt; report" in html and "Two &amp; more" in html and '<nav><a href="#s0">' in html

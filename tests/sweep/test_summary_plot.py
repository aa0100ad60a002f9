"""The sweep summary's plot: laid out once and saved in one draw, every config's name and value in it,
no text cut by the figure's edge or overlapping its neighbour."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image

from mlflow_energy import _plotstyle
from mlflow_energy.sweep.summary import energy_plot
from mlflow_energy.tracking.runs import sig3


def _rows(n: int) -> list[dict]:
    families = ("tiny-sd2", "tiny-sdxl", "sd15")
    return [{"run_name": f"{families[i % 3]}-{64 * (1 + i % 4)}x{64 * (1 + i % 4)}-{i + 1}st-fp16-b{1 + i % 2}"
             + "-long-suffix" * (i == 3),
             "model": families[i % 3], "energy_total_j": 0.0123 * 3.1 ** i, "energy_source": "estimate:cpu-tdp"}
            for i in range(n)]


@pytest.fixture
def drawn(monkeypatch):
    """Each canvas draw (its figure) and each text it drew, with its extent in pixels at that draw."""
    seen: dict = {"draws": [], "texts": []}
    canvas_draw, text_draw = FigureCanvasAgg.draw, Text.draw

    def counting_draw(self, *args, **kwargs):
        seen["draws"].append(self.figure)
        return canvas_draw(self, *args, **kwargs)

    def recording_draw(self, renderer):
        text_draw(self, renderer)
        if self.get_visible() and self.get_text():
            seen["texts"].append((self.get_text(), self.get_window_extent(renderer), self))

    monkeypatch.setattr(FigureCanvasAgg, "draw", counting_draw)
    monkeypatch.setattr(Text, "draw", recording_draw)
    return seen


@pytest.mark.parametrize("n", [1, 5, 40])
def test_the_sweep_plot_is_saved_in_one_draw_with_every_name_and_value_inside_the_figure(tmp_path, drawn, n):
    rows = _rows(n)
    path = energy_plot(rows, tmp_path / "plot.png")

    assert len(drawn["draws"]) == 1  # no bbox_inches="tight" pass drawing it a second time
    fig = drawn["draws"][0]
    texts = [t for t, _, _ in drawn["texts"]]
    for row in rows:
        assert row["run_name"] in texts
        assert sig3(row["energy_total_j"]) in texts
    assert {"family", "tiny-sd2", "energy per config"} <= set(texts)
    assert "energy per image (J, an estimate: no energy counter)" in texts
    inside = fig.bbox.padded(0.5)
    cut = [t for t, extent, _ in drawn["texts"] if not inside.contains(extent.x0, extent.y0)
           or not inside.contains(extent.x1, extent.y1)]
    assert cut == []
    # the values within the axes, the names in rows that do not overlap
    axes = fig.axes[0].bbox.padded(0.5)
    values = [extent for t, extent, artist in drawn["texts"] if artist in fig.axes[0].texts]
    assert len(values) == n and all(axes.x0 <= e.x0 and e.x1 <= axes.x1 for e in values)
    names = sorted((extent for t, extent, _ in drawn["texts"] if t in {r["run_name"] for r in rows}),
                   key=lambda e: e.y0)
    assert all(lower.y1 <= upper.y0 for lower, upper in zip(names, names[1:], strict=False))
    assert all(e.x1 <= axes.x0 for e in names)  # left of the axes, not over the bars
    with Image.open(path) as image:  # written as laid out, not cropped to a tight box
        assert abs(image.size[0] - fig.bbox.width) < 1 and abs(image.size[1] - fig.bbox.height) < 1


def test_a_figure_not_marked_laid_out_is_still_saved_with_a_tight_box(tmp_path, drawn):
    from matplotlib.figure import Figure

    def figure() -> Figure:
        fig = Figure(figsize=(3, 2), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot([1, 2], [1, 2], label="a line with a long label")
        _plotstyle.legend_outside(ax)
        return fig

    _plotstyle.save(figure(), tmp_path / "tight.png")
    assert len(drawn["draws"]) == 2  # the tight box's pass and the drawing
    with Image.open(tmp_path / "tight.png") as image:
        assert image.size[0] > 300  # widened to hold the legend outside the axes
    drawn["draws"].clear()
    _plotstyle.save(_plotstyle.laid_out(figure(), pil_kwargs={"compress_level": 1}), tmp_path / "as-is.png")
    assert len(drawn["draws"]) == 1
    with Image.open(tmp_path / "as-is.png") as image:
        assert image.size == (330, 220)  # at save's 110 dpi

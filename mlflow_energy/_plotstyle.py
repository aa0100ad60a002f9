"""One look for every plot: a distinct colour and marker per family, readable log ticks, legend outside.

Colours come from matplotlib's ``tab20`` (dark shades first, then light ones) and markers from a
list of 11, so up to 20 families each get their own colour and no two families share both
colour and marker. A family keeps its style across plots because styles are assigned by
sorted name over every family the project knows, not by plotting order.

Example:
    >>> from mlflow_energy._plotstyle import family_style
    >>> colour, marker = family_style("sd2")
    >>> family_style("sd2") == (colour, marker) and family_style("sdxl") != (colour, marker)
    True
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")


@functools.lru_cache(maxsize=1)
def _known() -> tuple[str, ...]:
    try:
        from mlflow_energy.families import family_names

        names = family_names()
    except Exception:  # plotting must not fail on a registry problem
        names = []
    base = sorted({n.removeprefix("tiny-") for n in names})
    return tuple(base)


def _colours() -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return [cmap(i) for i in range(0, 20, 2)] + [cmap(i) for i in range(1, 20, 2)]


def family_style(name: str) -> tuple[Any, str]:
    """``(colour, marker)`` of a family (its tiny variant shares it)."""
    base = name.removeprefix("tiny-")
    known = _known()
    index = known.index(base) if base in known else len(known) + (sum(map(ord, base)) % 20)
    colours = _colours()
    return colours[index % len(colours)], MARKERS[index % len(MARKERS)]


def log_axes(ax: Any, *, x: bool = True, y: bool = True) -> None:
    """Log scale with labels on powers of ten only (no crowded minor labels)."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

    for on, axis, set_scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if not on:
            continue
        set_scale("log")
        axis.set_major_locator(LogLocator(base=10, numticks=8))
        axis.set_major_formatter(LogFormatterSciNotation(base=10))
        axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=12))
        axis.set_minor_formatter(NullFormatter())


def legend_outside(ax: Any, **kwargs: Any) -> None:
    """The legend to the right of the axes, never over the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7, frameon=False, **kwargs)


def save(fig: Any, path: Any, dpi: int = 110) -> Any:
    """Write a figure with the outside legend included (``bbox_inches="tight"``) and close it; a figure
    marked :func:`laid_out` is written as it is laid out, in one draw."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi, **_LAID_OUT.get(fig, {"bbox_inches": "tight"}))
    plt.close(fig)
    return path


#: Figures whose layout is final, with their ``savefig`` options (:func:`laid_out`).
_LAID_OUT: Any = weakref.WeakKeyDictionary()


def laid_out(fig: Any, **options: Any) -> Any:
    """Mark a figure whose layout is final (every text placed inside it): :func:`save` writes it as it
    is, in one draw, without ``bbox_inches="tight"`` (which draws it twice), with these further
    ``savefig`` options (``pil_kwargs`` of a PNG, say). Returns ``fig``."""
    _LAID_OUT[fig] = options
    return fig

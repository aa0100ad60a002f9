"""Energy to carbon: gCO2e = kWh x grid carbon intensity (gCO2e/kWh) x PUE.

Grid intensities ship as package data (``data/carbon_intensity.csv``): one row per country
(ISO 3166 alpha-3 code), per cloud region (``gcp:us-central1``, ``aws:eu-west-3``) and a world
average, each with its source and year. The country and cloud-region figures are CodeCarbon's
tables (MIT; country data from Our World in Data, built on Ember and the Energy Institute);
the world average of 475 gCO2e/kWh is the IEA's 2018 figure and the default.

Example:
    >>> from mlflow_energy.carbon import co2e_g, grid_intensity
    >>> co2e_g(3.6e6)            # 1 kWh at the world average
    475.0
    >>> grid_intensity("FRA").g_per_kwh < 100
    True
    >>> round(co2e_g(3.6e6, intensity="FRA", pue=1.2), 1)
    67.2
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_energy.errors import ConfigError

J_PER_KWH = 3.6e6
WORLD_AVERAGE_G_PER_KWH = 475.0
WORLD = "WORLD"
# package data, found next to this file (works for wheels and editable installs alike)
DATA_DIR = Path(__file__).resolve().parent / "data"
TABLE_FILE = "carbon_intensity.csv"


@dataclass(frozen=True)
class GridIntensity:
    """A grid carbon intensity and where it comes from.

    Attributes:
        code: ``WORLD``, an ISO alpha-3 country code, a ``provider:region`` cloud region, or
            ``custom`` for a number the caller gave.
        g_per_kwh: grams CO2-equivalent per kWh of electricity.
        year: the year the figure describes (``None`` when the source does not say).
        source: the source of the figure.
    """

    code: str
    g_per_kwh: float
    year: int | None
    source: str


@functools.lru_cache(maxsize=1)
def intensity_table() -> dict[str, GridIntensity]:
    """The shipped table, keyed by upper-case code."""
    text = (DATA_DIR / TABLE_FILE).read_text()
    out: dict[str, GridIntensity] = {}
    for row in csv.DictReader(text.splitlines()):
        year = int(row["year"]) if row["year"] else None
        out[row["code"].upper()] = GridIntensity(row["code"], float(row["g_co2e_per_kwh"]), year, row["source"])
    return out


def grid_intensity(where: str | float | int | None = None) -> GridIntensity:
    """The grid intensity for a country code, cloud region or number (``None``: world average).

    Args:
        where: ``None`` or ``"WORLD"`` (475 g/kWh), an ISO alpha-3 country code (``"DEU"``),
            a cloud region (``"gcp:europe-west1"``), or a number in gCO2e/kWh.

    Raises:
        ConfigError: for an unknown code or a negative / non-finite number.
    """
    if where is None:
        return intensity_table()[WORLD]
    if isinstance(where, (int, float)) and not isinstance(where, bool):
        value = float(where)
        if not math.isfinite(value) or value < 0:
            raise ConfigError("carbon_intensity_g_per_kwh", where, "a finite number >= 0 (gCO2e per kWh)")
        return GridIntensity("custom", value, None, "given by the caller")
    key = str(where).strip().upper()
    table = intensity_table()
    if key not in table:
        raise ConfigError(
            "carbon_intensity", where,
            "WORLD, an ISO 3166 alpha-3 country code (USA, DEU, FRA, ...), a cloud region such as "
            "gcp:us-central1, or a number in gCO2e/kWh",
        )
    return table[key]


def checked_intensity(where: Any) -> str | float:
    """``where`` when :func:`grid_intensity` takes it (a number, WORLD, a country code, a cloud region).

    Raises:
        ConfigError: naming ``carbon_intensity``, the value and what is allowed.

    Example:
        >>> checked_intensity("DEU"), checked_intensity(120)
        ('DEU', 120)
    """
    if isinstance(where, bool) or not isinstance(where, (str, int, float)):
        raise ConfigError("carbon_intensity", where, "gCO2e/kWh, WORLD, a country code (DEU) or a cloud region "
                          "(gcp:us-central1)")
    grid_intensity(where)
    return where


#: Environment variable: the grid intensity measurement runs use when none is given
#: (a number in gCO2e/kWh, WORLD, a country code or a cloud region).
ENV_CARBON_INTENSITY = "MLFLOW_ENERGY_CARBON_INTENSITY"


def run_intensity(where: str | float | int | None = None) -> tuple[GridIntensity, str]:
    """The intensity a measurement run's carbon uses, and its source label for the run's tag.

    ``where``, else ``$MLFLOW_ENERGY_CARBON_INTENSITY``, else the world average (labelled a default).

    Example:
        >>> run_intensity(350)[1]
        'custom: given by the caller'
    """
    import os

    if where is None or (isinstance(where, str) and not where.strip()):
        where = os.environ.get(ENV_CARBON_INTENSITY) or None
    if isinstance(where, str):
        try:
            where = float(where)
        except ValueError:
            pass
    grid = grid_intensity(where)
    label = f"{grid.code}: {grid.source}" + (f" ({grid.year})" if grid.year else "")
    return grid, ("default " + label if where is None else label)


def co2e_g(energy_j: float, intensity: str | float | int | None = None, *, pue: float = 1.0) -> float:
    """Grams CO2e for ``energy_j`` joules: kWh x intensity x PUE.

    Args:
        energy_j: energy in joules.
        intensity: see :func:`grid_intensity` (default: world average, 475 g/kWh).
        pue: data-centre power usage effectiveness (>= 1; 1.0 counts the device only).

    Example:
        >>> from mlflow_energy.carbon import co2e_g
        >>> co2e_g(7.2e6, 100.0)
        200.0
    """
    if not (isinstance(pue, (int, float)) and math.isfinite(pue) and pue >= 1.0):
        raise ConfigError("pue", pue, "a number >= 1.0 (1.0 counts the device alone)")
    return float(energy_j) / J_PER_KWH * grid_intensity(intensity).g_per_kwh * float(pue)

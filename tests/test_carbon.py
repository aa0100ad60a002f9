"""Energy to carbon with the shipped grid-intensity table."""

from __future__ import annotations

import math

import pytest

from mlflow_energy.carbon import WORLD_AVERAGE_G_PER_KWH, co2e_g, grid_intensity, intensity_table
from mlflow_energy.errors import ConfigError


def test_world_average_is_the_default():
    assert grid_intensity().g_per_kwh == WORLD_AVERAGE_G_PER_KWH == 475.0
    assert co2e_g(3.6e6) == pytest.approx(475.0)


def test_kwh_times_intensity_times_pue():
    assert co2e_g(7.2e6, 100.0) == pytest.approx(200.0)
    assert co2e_g(7.2e6, 100.0, pue=1.5) == pytest.approx(300.0)
    fra = grid_intensity("fra")
    assert co2e_g(3.6e6, "FRA") == pytest.approx(fra.g_per_kwh)


def test_table_rows_carry_source_and_year():
    table = intensity_table()
    countries = [g for code, g in table.items() if len(code) == 3 and ":" not in code]
    assert len(countries) > 150
    assert all(g.source and g.year and 1990 < g.year < 2100 for g in countries)
    assert all(0 <= g.g_per_kwh < 2000 and math.isfinite(g.g_per_kwh) for g in table.values())
    # low-carbon grids below coal-heavy ones: the figures are not shuffled
    assert grid_intensity("NOR").g_per_kwh < grid_intensity("DEU").g_per_kwh < grid_intensity("IND").g_per_kwh
    assert grid_intensity("gcp:europe-west1").source.startswith("CodeCarbon")


@pytest.mark.parametrize("bad", ["Atlantis", -5.0, float("nan")])
def test_bad_intensities_are_refused(bad):
    with pytest.raises(ConfigError):
        grid_intensity(bad)


def test_pue_below_one_is_refused():
    with pytest.raises(ConfigError, match="pue"):
        co2e_g(1.0, pue=0.9)

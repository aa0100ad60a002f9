"""Typed CLI options: MLproject's unset convention, finite numbers, bounds, one-line errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mlflow_energy.cli import main
from mlflow_energy.cli._types import Float, Int, NumberOrText, Text, unset, values
from mlflow_energy.errors import ConfigError


@pytest.mark.parametrize("text", ["", "  ", "default", "None", "none", "null", None])
def test_unset_values_take_the_unset_value(text):
    assert unset(text)
    assert Int("steps", minimum=1, unset_value=7).convert(text, None, None) == 7
    assert Float("guidance_scale").convert(text, None, None) is None
    assert Text(unset_value="fp32").convert(text, None, None) == "fp32"


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (Int("steps", minimum=1), "0", "steps=0 is not allowed: expected an integer >= 1"),
        (Int("steps", minimum=1), "2.5", "steps='2.5' is not allowed: expected an integer >= 1"),
        (Int("max_folds", minimum=2, maximum=10), "11", "max_folds=11 is not allowed: expected an integer from 2 to 10"),
        (Float("guidance_scale"), "inf", "guidance_scale='inf' is not allowed: expected a finite number"),
        (Float("guidance_scale"), "nan", "guidance_scale='nan' is not allowed: expected a finite number"),
        (Float("avg_power_w", minimum=0.0, strict=True), "0", "avg_power_w='0' is not allowed: expected a finite number > 0"),
        (NumberOrText("carbon_intensity"), "-3", "carbon_intensity='-3' is not allowed"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(kind, text, message):
    with pytest.raises(ConfigError) as err:
        kind.convert(text, None, None)
    assert message in str(err.value)


def test_good_values_are_typed():
    assert Int("steps", minimum=1).convert(" 30 ", None, None) == 30
    assert Float("guidance_scale").convert("7.5", None, None) == 7.5
    assert NumberOrText("carbon_intensity").convert("DEU", None, None) == "DEU"
    assert NumberOrText("carbon_intensity").convert("350", None, None) == 350.0
    assert values(("sd2", "", "default", " sdxl ")) == ["sd2", "sdxl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["flops", "--model", "sd2", "--guidance-scale", "inf"], "guidance_scale='inf' is not allowed"),
        (["flops", "--model", "sd2", "--batch-size", "x"], "batch_size='x' is not allowed: expected an integer >= 1"),
        (["fit", "--experiment", "e", "--registered-model", "m", "--max-folds", "0"], "max_folds=0 is not allowed"),
        (["fit", "--experiment", "e", "--registered-model", "m", "--bootstrap", "-5"], "bootstrap=-5 is not allowed"),
        (["fit", "--experiment", "e", "--registered-model", "m", "--n-estimators", "0"], "n_estimators=0 is not allowed"),
        (["search", "--trials", "0"], "trials=0 is not allowed"),
    ],
)
def test_cli_rejects_while_parsing_with_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


def test_mlproject_empty_strings_mean_the_defaults():
    result = CliRunner().invoke(main, ["flops", "--model", "tiny-sd2", "--height", "", "--steps", "", "--batch-size",
                                       "", "--guidance-scale", "", "--json"])
    assert result.exit_code == 0, result.output
    assert '"total"' in result.output

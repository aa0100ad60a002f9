"""What `measure` and `sweep --no-progress` say while a config runs and after: progress lines within a
long config, and the runs the protocol made next to the --repeats/--warmup asked for."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

import mlflow_energy.cli.measure as measure_cli
from mlflow_energy.cli import main

SMALL = ["--model", "tiny-sd2", "--height", "32", "--width", "32", "--steps", "1"]


def test_measure_says_the_protocol_ran_more_than_the_least_asked(tracking_uri, no_rapl):
    result = CliRunner().invoke(main, ["measure", *SMALL, "--repeats", "1", "--warmup", "0", "--experiment", "p"])
    assert result.exit_code == 0, result.output
    runs = next(line for line in result.output.splitlines() if "measured run(s) after" in line)
    assert int(runs.split()[0]) >= 2  # at least two measured runs, so a spread exists
    assert "(--repeats 1 (2: a spread needs two) and --warmup 0 are the least:" in result.output


def test_the_help_says_repeats_and_warmup_are_the_least():
    text = " ".join(CliRunner().invoke(main, ["measure", "--help"]).output.split())
    assert "Least number of measured runs (at least 2)" in text
    assert "Least number of unmeasured warm-up runs" in text


def test_a_long_config_prints_where_it_is(tracking_uri, no_rapl, monkeypatch, tmp_path):
    monkeypatch.setattr(measure_cli, "PROGRESS_EVERY_S", 0.0)  # every run is "long" here
    result = CliRunner().invoke(main, ["measure", *SMALL, "--repeats", "2", "--warmup", "1", "--experiment", "p"])
    assert result.exit_code == 0, result.output
    assert "  ... warm-up 1 (of 1 to 5), 0 s into this config" in result.output
    assert "  ... repeat 2 (of 2 to 20)" in result.output

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "device": "cpu", "repeats": 1, "warmup": 0,
                                    "protocol": {"target": 0, "max_warmup": 0},
                                    "grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": [1, 2]}}))
    result = CliRunner().invoke(main, ["sweep", str(spec), "--experiment", "s", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.output.count("  ... repeat 1 (of 1), 0 s into this config") == 2, result.output


def test_a_config_shorter_than_the_quiet_time_prints_no_progress_lines(tracking_uri, no_rapl, monkeypatch):
    monkeypatch.setattr(measure_cli, "PROGRESS_EVERY_S", 3600.0)
    result = CliRunner().invoke(main, ["measure", *SMALL, "--repeats", "2", "--warmup", "1", "--experiment", "p"])
    assert result.exit_code == 0 and "  ... " not in result.output, result.output

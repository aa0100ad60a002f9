"""tracking.filters: any tag value found by an MLflow search (quotes included); names sized to the store."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.tracking.filters import MAX_EXPERIMENT_NAME, check_name, exact, literal, tag_equals

sys.path.insert(0, str(Path(__file__).parents[1]))
from services import backend_uri  # noqa: E402

VALUES = ["it's", 'say "hi"', "both ' and \"", "back\\slash", "tail\\", "100%_done", "a''b", "caf\u00e9", "IT'S",
          "it_s"]


def test_every_value_is_found_exactly_on_a_real_store(tmp_path):
    """SQLite here; a fresh PostgreSQL database when $MLFLOW_ENERGY_TEST_POSTGRES names a server."""
    from mlflow_energy.tracking.retry import database_url

    client = MlflowClient(database_url(backend_uri(tmp_path)))
    exp = client.create_experiment("filters", artifact_location=str(tmp_path / "artifacts"))
    ids = {v: client.create_run(exp, tags={schema.T_SWEEP_SPEC: v}).info.run_id for v in VALUES}
    for value in VALUES:
        runs = client.search_runs([exp], tag_equals(schema.T_SWEEP_SPEC, value))
        assert [r.info.run_id for r in exact(runs, schema.T_SWEEP_SPEC, value)] == [ids[value]], value


def test_literal_refuses_what_has_no_spelling():
    assert literal("it's") == '"it\'s"' and literal('say "hi"') == "'say \"hi\"'"
    with pytest.raises(ConfigError, match="both"):
        literal("both ' and \"")


@pytest.mark.parametrize("bad", ["", "   ", "x" * (MAX_EXPERIMENT_NAME + 1), "tab\there", "new\nline", 3])
def test_names_the_store_cannot_keep_are_refused(bad):
    with pytest.raises(ConfigError, match="experiment"):
        check_name("experiment", bad, MAX_EXPERIMENT_NAME)


def test_a_sweep_named_with_a_quote_runs_and_resumes(tmp_path, tracking_uri, no_rapl):
    from mlflow_energy.cli import main

    spec = tmp_path / "quote.yaml"
    spec.write_text("name: \"it's\"\nrepeats: 1\nwarmup: 0\nidle_seconds: 0.1\nprotocol: {target: 0}\n"
                    "grid: {model: [tiny-sd2], resolution: [32], steps: [1]}\n")
    args = ["sweep", str(spec), "--experiment", "quotes", "--no-progress", "--journal", str(tmp_path / "j.jsonl")]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0 and "1 measured" in first.output, first.output
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and "0 measured" in second.output and "1 skipped" in second.output, second.output
    client = MlflowClient()
    exp = client.get_experiment_by_name("quotes").experiment_id
    sweeps = client.search_runs([exp], tag_equals(schema.T_KIND, schema.KIND_SWEEP))
    assert {r.data.tags[schema.T_SWEEP_SPEC] for r in sweeps} == {"it's"}

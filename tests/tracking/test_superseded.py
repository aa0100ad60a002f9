"""Superseded runs (a worker's late run of a config whose claim another worker took over) are left out
and counted: by fit (a metric on the fit run) and by the search's quality model (a line, a metric on
the search parent). Real SQLite tracking store; the runs are logged as the sweep logs them."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
from click.testing import CliRunner

from mlflow_energy import schema
from mlflow_energy.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "fit"))
from test_fit import FAMILIES, HARDWARE, log_runs, synthetic_runs  # noqa: E402


def _late_copy(frame, experiment: str) -> str:
    """Log the first row of ``frame`` again as a late run of the same config, tagged superseded."""
    late = log_runs(frame.iloc[:1], experiment)[0]
    mlflow.MlflowClient().set_tag(late, schema.T_SUPERSEDED, "true")
    return late


def test_fit_logs_how_many_superseded_runs_it_left_out(tracking_uri):
    frame = synthetic_runs(families=FAMILIES[:2], hardware=HARDWARE[:1], sizes=(32, 48, 64), steps=(1, 4, 16),
                           batches=(1,))
    ids = log_runs(frame, "claimed")
    late = _late_copy(frame, "claimed")
    result = CliRunner().invoke(main, ["fit", "--experiment", "claimed", "--registered-model", "claimed-energy",
                                       "--bootstrap", "0", "--max-folds", "3", "--no-plots"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "left out 1 superseded measurement run(s)" in result.output
    client = mlflow.MlflowClient()
    run = client.get_run(client.get_model_version_by_alias("claimed-energy", "champion").run_id)
    assert run.data.metrics[schema.M_FIT_SUPERSEDED] == 1
    assert run.data.params[schema.P_FIT_N_RUNS] == str(len(ids))
    source = open(client.download_artifacts(run.info.run_id, schema.A_FIT_SOURCE_RUNS)).read().split()
    assert late not in source

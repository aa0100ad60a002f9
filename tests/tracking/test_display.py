"""A measurement run of its own reads at a glance in the energy view: its short ``J/img`` and ``s/img``
(three significant digits) beside the full-precision metrics, as a sweep's configs have them."""

from __future__ import annotations

import mlflow
from click.testing import CliRunner

from mlflow_energy import schema
from mlflow_energy.cli import main
from mlflow_energy.tracking.ui import rounded


def test_a_standalone_measurement_has_its_display_metrics(tracking_uri, no_rapl):
    result = CliRunner().invoke(main, ["measure", "--model", "tiny-sd2", "--height", "32", "--width", "32",
                                       "--steps", "1", "--repeats", "1", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    run_id = result.output.split("run id: ")[1].split()[0]
    m = mlflow.MlflowClient().get_run(run_id).data.metrics
    assert m[schema.M_VIEW_ENERGY] == rounded(m[schema.M_ENERGY_TOTAL]) > 0
    assert m[schema.M_VIEW_TIME] == rounded(m[schema.M_TIME_TOTAL]) > 0


def test_an_ingested_measurement_has_them_too(tracking_uri, no_rapl, tmp_path):
    out = tmp_path / "m.jsonl"
    result = CliRunner().invoke(main, ["measure", "--model", "tiny-sd2", "--height", "32", "--width", "32",
                                       "--steps", "1", "--repeats", "1", "--warmup", "0", "--output", str(out)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["ingest", str(out), "--experiment", "ingested"])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("ingested").experiment_id])
    m = run.data.metrics
    assert m[schema.M_VIEW_ENERGY] == rounded(m[schema.M_ENERGY_TOTAL]) > 0
    assert m[schema.M_VIEW_TIME] == rounded(m[schema.M_TIME_TOTAL]) > 0

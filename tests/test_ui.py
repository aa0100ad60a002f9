"""The MLflow UI in a real browser, as a first-time user opens it: the address we print lands on the runs table.

Starts ``mlflow server`` (loopback, free port, one worker, job execution off) over a small
SQLite store, loads the address ``mlflow-energy sweep`` prints in headless Chromium with a new,
empty profile (nothing set in local storage), and reads the rendered DOM: the runs table with our
run names and the energy columns, not MLflow's GenAI overview. Skipped where Chromium is not
installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mlflow_energy import schema

ROOT = Path(__file__).resolve().parents[1]


def _screenshots():
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "docs" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shots = _screenshots()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shots.chromium() is None, reason="Chromium is not installed (apt-get install -y chromium)"),
]


def test_experiment_page_shows_run_names_and_energy_columns(tracking_uri: str, tmp_path: Path) -> None:
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure import measure
    from mlflow_energy.tracking import energy_view_url, experiment_id, log_measurement

    names = ["ui-check-first", "ui-check-second"]
    for steps, name in zip((1, 2), names, strict=True):
        cfg = InferenceConfig(model="tiny-sd2", height=32, width=32, steps=steps, repeats=1, warmup=0)
        log_measurement(measure(cfg), experiment="ui-check", run_name=name)
    exp = experiment_id("ui-check")
    with shots.mlflow_server(tmp_path / "mlflow.db") as url:
        printed = energy_view_url(url, exp)
        dom = shots.dump_dom(printed)
        plain = shots.dump_dom(f"{url}/#/experiments/{exp}")
    for name in names:
        assert name in dom, f"run {name!r} not on the rendered page of {printed} ({len(dom)} bytes of DOM)"
    assert schema.M_ENERGY_TOTAL in dom and schema.M_TIME_TOTAL in dom  # the saved view's energy columns
    assert "Training runs" not in dom and ">Overview<" not in dom  # the ML workflow's sidebar, not GenAI's
    # MLflow 3.17 opens the plain experiment address on the GenAI overview in a fresh browser (the
    # workflow type, not the experiment's tags, decides): if this starts failing, MLflow changed it,
    # and the README's "which link to open" can be simplified.
    assert ">Overview<" in plain and names[0] not in plain

"""The MLflow UI in a real browser: the experiment page of a store we wrote shows our run names.

Starts ``mlflow server`` (loopback, free port, one worker, job execution off) over a small
SQLite store, loads the experiment page in headless Chromium through the saved ``energy`` view,
and reads the rendered DOM. Skipped where Chromium is not installed (``.ci/run`` installs it).
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
    from mlflow_energy.tracking import experiment_id, log_measurement

    names = ["ui-check-first", "ui-check-second"]
    for steps, name in zip((1, 2), names, strict=True):
        cfg = InferenceConfig(model="tiny-sd2", height=32, width=32, steps=steps, repeats=1, warmup=0)
        log_measurement(measure(cfg), experiment="ui-check", run_name=name)
    exp = experiment_id("ui-check")
    with shots.mlflow_server(tmp_path / "mlflow.db") as url:
        proxy = shots._SetupProxy(url, shots.ui_storage())
        try:
            dom = shots.dump_dom(proxy.page(f"/#/experiments/{exp}/runs?viewStateShareKey={schema.SHARED_VIEW_ENERGY}"))
        finally:
            proxy.close()
    for name in names:
        assert name in dom, f"run {name!r} not on the rendered experiment page ({len(dom)} bytes of DOM)"
    assert schema.M_ENERGY_TOTAL in dom  # the saved view's energy column

"""The model fitted on the packaged ML.ENERGY data, registered once per session as ``mlenergy-energy``."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """``(tracking URI, working directory)`` of a SQLite store holding the registered public-data model:
    saturating laws (the data carry the peak FLOP/s of their GPUs) and a time law."""
    import mlflow

    from mlflow_energy.fit import fit_energy_model, log_fit, runs_frame
    from mlflow_energy.predict import log_and_register
    from mlflow_energy.tracking.mlenergy import import_mlenergy

    tmp = tmp_path_factory.mktemp("docs")
    uri = f"sqlite:///{tmp}/mlflow.db"
    old = os.getcwd()
    os.chdir(tmp)
    try:
        mlflow.set_tracking_uri(uri)
        import_mlenergy(experiment="mlenergy")
        result = fit_energy_model(runs_frame("mlenergy"), n_boot=0, max_folds=12)
        mlflow.set_experiment("fit")
        with mlflow.start_run():
            log_fit(result, experiment="mlenergy", allow_mixed=True, plots=False)
            log_and_register(result, "mlenergy-energy")
    finally:
        os.chdir(old)
        mlflow.set_tracking_uri("")
    return uri, tmp

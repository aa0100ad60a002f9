"""Optuna search workers sharing one study in PostgreSQL, tracked in a PostgreSQL MLflow store.

Runs where ``MLFLOW_ENERGY_TEST_POSTGRES`` names a server (``.ci/run`` starts one); the URLs
are plain ``postgresql://``, opened with psycopg2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from services import POSTGRES_ENV, fresh_postgres_db  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get(POSTGRES_ENV),
                       reason=f"no PostgreSQL server: set {POSTGRES_ENV} (.ci/run starts one with .ci/postgres)"),
]
SMALL = {"model": ["sd2"], "steps": ["1:12"], "resolution": ["256,384"], "batch_size": ["1,4"], "precision": ["fp16"]}


def test_three_workers_share_one_postgresql_study(tmp_path):
    import optuna
    from mlflow import MlflowClient

    from mlflow_energy import schema
    from mlflow_energy.tracking.retry import database_url

    storage, tracking = fresh_postgres_db(), fresh_postgres_db()
    assert storage.startswith("postgresql://")
    script = textwrap.dedent(f"""
        import sys
        from mlflow_energy.predict import AnalyticPredictor
        from mlflow_energy.search import Constraints, PredictEvaluator, SearchSpace, search
        space = SearchSpace.from_options({SMALL!r})
        search(space, PredictEvaluator(AnalyticPredictor(), "H100"), Constraints(min_steps=3), trials=int(sys.argv[1]),
               seed=int(sys.argv[2]), storage={storage!r}, study_name="shared", experiment="pg-workers", plots=False,
               quality_floor=False)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "MLFLOW_TRACKING_URI": tracking}
    procs = [subprocess.Popen([sys.executable, "-c", script, n, seed], stderr=subprocess.PIPE, text=True, env=env,
                              cwd=tmp_path) for n, seed in (("4", "0"), ("5", "1"), ("6", "2"))]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-4000:] for e in errors]
    study = optuna.load_study(study_name="shared", storage=database_url(storage))
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 15
    c = MlflowClient(database_url(tracking))
    exp = c.get_experiment_by_name("pg-workers")
    trials = c.search_runs([exp.experiment_id], f"tags.`{schema.T_KIND}` = '{schema.KIND_TRIAL}'", max_results=100)
    assert len(trials) == 15

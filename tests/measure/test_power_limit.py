"""The GPU power limit as a config dimension: set through the (fake) NVML below Zeus, always restored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlflow_energy import schema
from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.meters import EstimateMeter, ZeusMeter
from mlflow_energy.measure.power_limit import (
    PowerLimitError,
    applied_power_limit,
    journal_path,
    restore_pending,
)
from mlflow_energy.measure.protocol import Protocol
from mlflow_energy.measure.runner import measure

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_ENERGY_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_config_checks_the_number_and_hashes_only_a_set_limit() -> None:
    base = InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1)
    assert base.validate().power_limit_w is None
    assert InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1, power_limit_w=250).validate().power_limit_w == 250.0
    for bad in (0, -5, float("inf"), float("nan"), True, "250", 1e6):
        with pytest.raises(ConfigError, match=r"^power_limit_w=.* is not allowed: expected watts"):
            InferenceConfig(model="tiny-sd2", power_limit_w=bad).validate()
    limited = InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1, power_limit_w=250)
    assert limited.config_hash() != base.config_hash()
    # Configs without a limit keep the hash they had before the field existed.
    assert base.config_hash() == InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1).config_hash()


def test_limit_is_journaled_before_it_is_set_and_restored_after(fake_gpu_factory) -> None:
    gpus = fake_gpu_factory(limit_w=300.0)
    seen_journal: list[dict] = []
    original = gpus.set_power_management_limit

    def spy(index: int, mw: int, block: bool = True) -> None:
        path = journal_path(index)
        seen_journal.append(json.loads(path.read_text()) if path.exists() else {})
        original(index, mw, block)

    gpus.set_power_management_limit = spy
    with applied_power_limit("cuda:0", 200.0) as limit:
        assert gpus.limit_mw == 200_000
        assert (limit.watts, limit.previous_w) == (200.0, 300.0)
    assert gpus.limit_mw == 300_000
    assert gpus.limit_history == [200_000, 300_000]
    assert seen_journal[0]["previous_w"] == 300.0 and seen_journal[0]["pid"] == os.getpid()
    assert not journal_path(0).exists()


def test_limit_is_restored_when_the_block_fails(fake_gpu_factory) -> None:
    gpus = fake_gpu_factory(limit_w=300.0)
    with pytest.raises(RuntimeError, match="boom"), applied_power_limit("cuda", 150.0):
        raise RuntimeError("boom")
    assert gpus.limit_mw == 300_000 and not journal_path(0).exists()


def test_out_of_range_and_no_permission_are_one_line_and_change_nothing(fake_gpu_factory) -> None:
    gpus = fake_gpu_factory(limit_w=300.0, limit_range_w=(100.0, 400.0))
    with pytest.raises(ConfigError, match=r"power_limit_w=500.0 .* watts from 100 to 400 on GPU 0"):
        with applied_power_limit("cuda:0", 500.0):
            pass
    gpus.limit_permission = False
    with pytest.raises(PowerLimitError) as info:
        with applied_power_limit("cuda:0", 200.0):
            pass
    message = str(info.value)
    assert "\n" not in message and "no permission" in message and "root" in message
    assert gpus.limit_mw == 300_000 and gpus.limit_history == [] and not journal_path(0).exists()


def test_a_gpu_nvml_does_not_see_is_one_line(fake_gpu_factory) -> None:
    fake_gpu_factory()
    with pytest.raises(PowerLimitError, match=r"NVML sees 1 GPU\(s\)"):
        with applied_power_limit("cuda:3", 200.0):
            pass


def test_limit_left_by_a_killed_process_is_restored_by_the_next_measurement(
    fake_gpu_factory, small_config, _own_state_dir: Path
) -> None:
    # A real process sets the limit on its (fake) GPU and is killed with SIGKILL inside the block.
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(TESTS)!r})
        import zeus.monitor.energy as zeus_energy
        from conftest import FakeGPUs
        gpus = FakeGPUs(limit_w=300.0)
        zeus_energy.get_gpus = lambda *a, **k: gpus
        from mlflow_energy.measure.power_limit import applied_power_limit
        with applied_power_limit("cuda:0", 180.0):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "MLFLOW_ENERGY_STATE_DIR": str(_own_state_dir)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    record = json.loads(journal_path(0).read_text())
    assert record["previous_w"] == 300.0 and record["set_w"] == 180.0
    # The GPU still runs at the dead process's limit; the next measurement restores it first.
    gpus = fake_gpu_factory(limit_w=180.0)
    meter = ZeusMeter("cuda")
    try:
        measure(small_config(repeats=1, power_limit_w=250.0), meter=meter, protocol=Protocol.fixed())
    finally:
        meter.close()
    assert gpus.limit_history == [300_000, 250_000, 300_000]
    assert gpus.limit_mw == 300_000 and not journal_path(0).exists()


def test_a_limit_held_by_a_live_process_is_left_alone(fake_gpu_factory) -> None:
    import socket

    gpus = fake_gpu_factory(limit_w=200.0)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = journal_path(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"previous_w": 300.0, "set_w": 200.0, "pid": sleeper.pid,
                                    "host": socket.gethostname(), "time": "now"}))
        with pytest.raises(PowerLimitError, match=rf"held by process {sleeper.pid}"):
            restore_pending("cuda:0")
        assert gpus.limit_mw == 200_000 and path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert restore_pending("cuda:0").previous_w == 300.0
    assert gpus.limit_mw == 300_000


def test_measurement_under_a_limit_draws_at_most_the_limit_and_tags_it(fake_gpu_factory, small_config) -> None:
    gpus = fake_gpu_factory(watts=350.0, limit_w=400.0)
    meter = ZeusMeter("cuda")
    try:
        m = measure(small_config(repeats=2, power_limit_w=200.0), meter=meter, protocol=Protocol.fixed())
    finally:
        meter.close()
    assert m.config.power_limit_w == 200.0
    assert m.power_avg_w == pytest.approx(200.0, rel=0.05)
    assert m.extra_tags[schema.T_POWER_LIMIT] == "200"
    assert gpus.limit_mw == 400_000  # restored


def test_a_limit_on_a_meter_without_a_gpu_is_refused_in_one_line(small_config) -> None:
    with pytest.raises(ConfigError, match=r"^power_limit_w=200.0 is not allowed: expected unset on device 'cpu'"):
        measure(small_config(power_limit_w=200.0), meter=EstimateMeter(), protocol=Protocol.fixed())


def test_sweep_spec_takes_power_limits_as_a_grid_dimension() -> None:
    from mlflow_energy.sweep.spec import SweepSpec

    spec = SweepSpec.from_dict({"device": "cuda", "grid": {"model": ["tiny-sd2"], "resolution": [32],
                                                           "steps": [1], "power_limit_w": [150, 250, None]}})
    limits = [c.power_limit_w for c in spec.configs()]
    assert sorted(limits, key=lambda v: -1 if v is None else v) == [None, 150.0, 250.0]
    assert len({c.config_hash() for c in spec.configs()}) == 3
    for bad in (0, -1, "max", float("inf"), True):
        with pytest.raises(ConfigError, match=r"^grid.power_limit_w=.* expected watts"):
            SweepSpec.from_dict({"grid": {"model": ["tiny-sd2"], "power_limit_w": [bad]}})


def test_search_over_the_power_limit_meets_a_latency_constraint(tracking_uri: str, fake_gpu_factory) -> None:
    """Measure mode: each trial measures under its limit (set and restored through the fake NVML)."""
    from mlflow_energy.search import Constraints, MeasureEvaluator, SearchSpace, search

    gpus = fake_gpu_factory(watts=350.0, limit_w=400.0)
    meter = ZeusMeter("cuda")
    try:
        space = SearchSpace.from_options({"model": ["tiny-sd2"], "steps": ["2"], "resolution": ["32"],
                                          "power_limit_w": ["150,250,400"]})
        evaluator = MeasureEvaluator(device="cpu", repeats=1, warmup=0, reference_steps=4, meter=meter)
        result = search(space, evaluator, Constraints(max_latency_s=60.0), trials=6, seed=0,
                        experiment="limits", plots=False, quality_floor=False)  # the power limit, not fidelity
    finally:
        meter.close()
    tried = set(result.trials[schema.P_POWER_LIMIT].astype(float))
    assert tried <= {150.0, 250.0, 400.0} and len(tried) >= 2
    # Each trial measured under its own limit: the fake GPU draws min(350 W, limit).
    for _, trial in result.trials.iterrows():
        assert trial[schema.M_POWER_AVG] == pytest.approx(min(350.0, float(trial[schema.P_POWER_LIMIT])), rel=0.05)
    assert result.best_config.power_limit_w in tried
    import mlflow

    runs = mlflow.search_runs(experiment_names=["limits"], filter_string=f"tags.`{schema.T_KIND}` = '{schema.KIND_TRIAL}'")
    assert set(runs[f"params.{schema.P_POWER_LIMIT}"].astype(float)) == tried
    assert gpus.limit_mw == 400_000 and set(gpus.limit_history) <= {150_000, 250_000, 400_000}


def test_predict_mode_refuses_a_power_limit_dimension_in_one_line() -> None:
    from mlflow_energy.predict import AnalyticPredictor
    from mlflow_energy.search import Constraints, PredictEvaluator, SearchSpace

    space = SearchSpace.from_options({"model": ["sd2"], "power_limit_w": ["200,300"]})
    evaluator = PredictEvaluator(AnalyticPredictor(), "H100")
    with pytest.raises(ConfigError, match=r"^power_limit_w=.* expected measure mode"):
        evaluator.check(space, Constraints(), None)

"""``doctor`` names the meter and why (fake NVML below Zeus; this machine's own state), and every
measurement run carries its carbon with the intensity and its source."""

from __future__ import annotations

import mlflow
import pytest
from click.testing import CliRunner

from mlflow_energy import schema
from mlflow_energy.cli import main


def test_doctor_with_a_gpu_names_nvml_its_power_limit_and_the_meter(fake_gpu):
    result = CliRunner().invoke(main, ["doctor", "--device", "cuda"])
    assert result.exit_code == 0, result.output
    assert "NVML: 1 GPU(s)" in result.output
    assert "power limit 300 W" in result.output and "energy counter" in result.output
    assert f"meter for cuda: {schema.SOURCE_ZEUS_NVML}" in result.output


def test_doctor_on_the_cpu_without_rapl_says_estimate_and_what_to_change(no_rapl, monkeypatch):
    from mlflow_energy.cli import doctor

    monkeypatch.setattr(doctor, "RAPL_DIR", doctor.Path("/nonexistent/intel-rapl"))
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "RAPL: /nonexistent/intel-rapl is missing" in result.output
    assert "an ESTIMATE (estimate:cpu-tdp)" in result.output
    assert "to get a real measurement:" in result.output and "MLFLOW_ENERGY_CPU_TDP_W" in result.output


def test_doctor_on_this_machine_answers_for_the_cpu():
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "meter for cpu: " in result.output


@pytest.mark.parametrize(("args", "intensity", "source"), [
    ((), 475.0, "default WORLD"),
    (("--region", "FRA"), None, "FRA: "),
    (("--carbon-intensity", "200"), 200.0, "custom: given by the caller"),
])
def test_measure_logs_carbon_with_its_intensity_and_source(tracking_uri, no_rapl, args, intensity, source):
    from mlflow_energy.carbon import grid_intensity

    result = CliRunner().invoke(main, ["measure", "--model", "tiny-sd2", "--height", "32", "--width", "32",
                                       "--steps", "1", "--repeats", "1", "--warmup", "0", *args])
    assert result.exit_code == 0, result.output
    run_id = result.output.split("run id: ")[1].split()[0]
    run = mlflow.MlflowClient().get_run(run_id)
    g = intensity if intensity is not None else grid_intensity("FRA").g_per_kwh
    assert float(run.data.tags[schema.T_CARBON_INTENSITY]) == pytest.approx(g)
    assert run.data.tags[schema.T_CARBON_SOURCE].startswith(source)
    energy = run.data.metrics[schema.M_ENERGY_TOTAL]
    assert run.data.metrics[schema.M_CARBON_CO2E] == pytest.approx(energy / 3.6e6 * g, rel=1e-6)
    assert "estimate J/img" in result.output
    note = run.data.tags[schema.T_NOTE]
    assert note.startswith("| phase | energy J/img | time s/img | FLOPs/img | share |")
    assert f"| total | {energy:.3g} |" in note and "(an estimate, not a measurement)" in note
    assert "95% interval" in note


def test_region_and_intensity_together_are_refused(tracking_uri):
    result = CliRunner().invoke(main, ["measure", "--model", "tiny-sd2", "--region", "FRA",
                                       "--carbon-intensity", "100"])
    assert result.exit_code == 2 and "either --region or --carbon-intensity" in result.output


@pytest.mark.parametrize(("flag", "intensity"), [((), None), (("--carbon-intensity", "200"), 200.0)])
def test_a_sweep_spec_names_its_grid_and_the_command_line_wins(tracking_uri, no_rapl, tmp_path, monkeypatch,
                                                               flag, intensity):
    from mlflow_energy.carbon import ENV_CARBON_INTENSITY, grid_intensity

    monkeypatch.delenv(ENV_CARBON_INTENSITY, raising=False)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: grid\ncarbon_intensity: FRA\nrepeats: 1\nwarmup: 0\n"
                    "grid: {model: [tiny-sd2], resolution: [32], steps: [1]}\n")
    result = CliRunner().invoke(main, ["sweep", str(spec), "--experiment", "grid", "--no-progress", *flag])
    assert result.exit_code == 0, result.output
    (run,) = [r for r in mlflow.search_runs(experiment_names=["grid"], output_format="list")
              if r.data.tags.get(schema.T_KIND) == schema.KIND_MEASUREMENT]
    g = intensity if intensity is not None else grid_intensity("FRA").g_per_kwh
    assert float(run.data.tags[schema.T_CARBON_INTENSITY]) == pytest.approx(g)
    assert run.data.metrics[schema.M_CARBON_CO2E] == pytest.approx(run.data.metrics[schema.M_ENERGY_TOTAL] / 3.6e6 * g)


@pytest.mark.parametrize("value", ["Atlantis", -5, [1]])
def test_a_bad_carbon_intensity_in_a_spec_is_refused_before_measuring(tmp_path, value):
    import yaml

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"carbon_intensity": value, "grid": {"model": ["tiny-sd2"]}}))
    result = CliRunner().invoke(main, ["sweep", str(spec), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "carbon_intensity" in result.output and len(result.output.strip().splitlines()) == 1

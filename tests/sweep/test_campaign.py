"""The GPU campaign: grid, time prediction, budget fitting, and the script end to end on tiny families."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_energy.errors import ConfigError
from mlflow_energy.sweep import campaign
from mlflow_energy.sweep.campaign import CampaignSpec, ConfigPlan, fit_budget, plan_campaign

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_campaign.py"
SPEC = ROOT / "projects" / "gpu-campaign.yaml"
H100 = 989.4e12  # dense BF16 peak of the H100 SXM in the spec table, FLOP/s
DITS = ("sd3.5-medium", "sd3.5-large", "flux.1-dev", "flux.1-schnell", "qwen-image")


# --------------------------------------------------------------------------- prediction
def test_predicted_time_is_flops_at_35_percent_of_peak_plus_overhead() -> None:
    from mlflow_energy.flops import config_flops

    spec = campaign.load_spec(SPEC)
    items = campaign.plan_configs(spec, H100)
    assert items
    for p in items:
        f = config_flops(p.cfg)
        warm = f["text_encode"] + f["denoise_per_step"] + f["decode"]  # the one-step warm-up
        executed = spec.repeats * f["total"] + warm
        assert p.executed_flop == pytest.approx(executed)
        assert p.predicted_s == pytest.approx(executed / (0.35 * H100) + spec.config_overhead_s)
    assert campaign.predict_seconds(7e14, 1e15, efficiency=0.35, overhead_s=1.5) == pytest.approx(3.5)
    with pytest.raises(ConfigError, match="efficiency"):
        campaign.predict_seconds(1.0, 1e15, efficiency=0.0)


# --------------------------------------------------------------------------- budget
def _items(seconds: list[float], families: str = "ab") -> list[ConfigPlan]:
    return [ConfigPlan(f"c{i}", families[i % len(families)], s) for i, s in enumerate(seconds)]


def test_fit_budget_drops_the_largest_configs_first() -> None:
    seconds = [7.0, 1.0, 30.0, 3.0, 12.0, 2.0, 20.0, 5.0]
    kept, dropped = fit_budget(_items(seconds), budget_s=40.0, family_overhead_s=2.0, startup_s=4.0)
    assert [p.predicted_s for p in kept] == [1.0, 2.0, 3.0, 5.0, 7.0, 12.0]
    assert [p.predicted_s for p in dropped] == [20.0, 30.0]
    assert max(p.predicted_s for p in kept) <= min(p.predicted_s for p in dropped)
    used = 4.0 + 2 * 2.0 + sum(p.predicted_s for p in kept)
    assert used <= 40.0 < used + dropped[0].predicted_s
    # A family's build is paid once: one family fits more than the same configs over two.
    one, _ = fit_budget(_items([5.0, 5.0, 5.0], "a"), budget_s=19.0, family_overhead_s=4.0)
    two, _ = fit_budget(_items([5.0, 5.0, 5.0], "ab"), budget_s=19.0, family_overhead_s=4.0)
    assert (len(one), len(two)) == (3, 2)
    assert fit_budget(_items([1.0]), budget_s=0.5) == ([], _items([1.0]))


def test_run_order_is_cheapest_family_first_and_largest_config_last() -> None:
    plan = plan_campaign(campaign.load_spec(SPEC), H100)
    order = plan.families
    totals = [sum(p.predicted_s for p in plan.items if p.family == f) for f in order]
    assert totals == sorted(totals)
    for fam in order:
        times = [p.predicted_s for p in plan.items if p.family == fam]
        assert times == sorted(times)
    # Each family is contiguous: built once, freed before the next.
    assert [k for k, _ in itertools.groupby(p.family for p in plan.items)] == order


# --------------------------------------------------------------------------- the grid
def test_grid_covers_the_required_points_when_the_budget_allows() -> None:
    from mlflow_energy.families import get_family

    spec = campaign.load_spec(SPEC)
    assert set(spec.families) == set(campaign.MEASURED_FAMILIES)
    plan = plan_campaign(campaign.spec_from_dict({**spec.to_dict(), "budget_s": 1e9}), H100)
    assert plan.dropped == [] and plan.missing == []
    points = {(p.family, p.cfg.height, p.cfg.steps) for p in plan.items}
    for fam in campaign.MEASURED_FAMILIES:
        default = get_family(fam).default_steps
        for res in (512, 1024):
            assert (fam, res, 10) in points and (fam, res, default) in points
        assert ((fam, 1024, 50) in points) == (fam in DITS or default == 50)
        assert (fam, 512, 50) not in points or default == 50
    for p in plan.items:
        cfg = p.cfg
        assert (cfg.precision, cfg.batch_size, cfg.device, cfg.repeats, cfg.weights) == ("bf16", 1, "cuda", 2, "random")
        assert cfg.height == cfg.width
        assert cfg.guidance_scale == get_family(cfg.model).default_guidance_scale  # CFG as by default


def test_shipped_plan_fits_eight_minutes_on_an_h100() -> None:
    spec = campaign.load_spec(SPEC)
    assert spec.budget_s == 480 and spec.efficiency == 0.35
    plan = plan_campaign(spec, campaign.peak_flops_of("NVIDIA H100 80GB HBM3", spec))
    assert plan.peak_flops == pytest.approx(H100)
    assert plan.predicted_total_s <= spec.budget_s
    assert len(plan.families) == 6
    if plan.dropped:
        assert max(p.predicted_s for p in plan.items) <= min(p.predicted_s for p in plan.dropped)
    # A tighter budget keeps the cheap configs of every family and drops the big ones.
    small = plan_campaign(campaign.spec_from_dict({**spec.to_dict(), "budget_s": 240}), H100)
    assert small.predicted_total_s <= 240 and small.dropped and small.missing
    assert max(p.predicted_s for p in small.items) <= min(p.predicted_s for p in small.dropped)
    assert ("qwen-image", 1024, 50) in small.missing
    assert "drop  qwen-image 1024px 50 steps" in small.describe()


def test_spec_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="budget_sec"):
        campaign.spec_from_dict({"budget_sec": 10})
    with pytest.raises(ConfigError, match="efficiency"):
        CampaignSpec(efficiency=1.5)
    with pytest.raises(ConfigError, match="steps"):
        CampaignSpec(steps=(0,))
    with pytest.raises(ConfigError, match="model"):
        campaign.expand_grid(CampaignSpec(families=("sd9",)))
    with pytest.raises(ConfigError, match="spec"):
        campaign.load_spec("no/such/campaign.yaml")
    with pytest.raises(ConfigError, match="peak_tflops"):
        campaign.peak_flops_of("Some Unknown Accelerator", CampaignSpec())
    tiny = campaign.load_spec(SPEC, tiny=True)
    assert all(f.startswith("tiny-") for f in tiny.families) and tiny.device == "cpu"


def test_output_paths_are_named_after_the_gpu_and_date() -> None:
    import datetime

    jsonl, meta = campaign.output_paths("data/measurements", "NVIDIA H200", datetime.date(2025, 3, 4))
    assert (jsonl.name, meta.name) == ("h200-20250304.jsonl", "h200-20250304.meta.json")


# --------------------------------------------------------------------------- dependencies
def test_missing_dependency_is_named_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    assert campaign.check_dependencies("cpu") == []
    monkeypatch.setitem(sys.modules, "zeus.monitor", None)
    assert campaign.check_dependencies("cpu") == []  # the estimate meter needs no Zeus
    missing = campaign.check_dependencies("cuda")
    assert [m.package for m in missing] == ["zeus"]
    line = campaign.missing_message(missing)
    assert "\n" not in line and "'zeus'" in line
    assert "pip install --no-index --find-links wheels zeus" in line and "pip download --only-binary=:all:" in line


def test_script_exits_2_naming_a_missing_package_before_touching_cuda(tmp_path: Path) -> None:
    code = (
        "import sys, runpy; sys.modules['diffusers'] = None; "
        f"sys.argv = ['gpu_campaign.py', '--out-dir', {str(tmp_path)!r}]; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1 and "'diffusers'" in lines[0] and "--find-links wheels diffusers" in lines[0]
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- running
_TEST_SPEC = """
families: [sd2, flux.1-schnell]
tiny:
  device: cpu
  precision: fp32
  resolutions: [32]
  steps: [1, 2]
  dit_steps: {32: [3]}
  repeats: 2
  warmup_steps: 1
  peak_tflops: 0.05
  config_overhead_s: 100.0   # predicted time dominated by overhead: the plan keeps 4 of 5
  family_overhead_s: 0.0
  startup_s: 0.0
  budget_s: 450
"""


def test_tiny_campaign_end_to_end_without_mlflow_then_resume_and_ingest(tmp_path: Path, tracking_uri: str) -> None:
    spec_path = tmp_path / "campaign.yaml"
    spec_path.write_text(_TEST_SPEC)
    out = tmp_path / "out"
    plan = plan_campaign(campaign.load_spec(spec_path, tiny=True), 0.05e12)
    assert [p.key for p in plan.dropped] == ["tiny-sd2 32px 2 steps"]  # the largest config
    args = ["--tiny", "--device", "cpu", "--spec", str(spec_path), "--out-dir", str(out)]
    # The GPU host has no MLflow: the script must not import it.
    code = (
        "import sys, runpy; sys.modules['mlflow'] = None; "
        f"sys.argv = ['gpu_campaign.py', *{args!r}]; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert campaign.TABLE_HEADER in proc.stdout
    jsonl = sorted(out.glob("*.jsonl"))
    metas = sorted(out.glob("*.meta.json"))
    assert len(jsonl) == 1 and len(metas) == 1 and metas[0].name == jsonl[0].name.replace(".jsonl", ".meta.json")

    from mlflow_energy.tracking.jsonl import read_jsonl

    records = read_jsonl(jsonl[0])
    meta = json.loads(metas[0].read_text())
    measured = {f"{r['params']['model']} {r['params']['height']}px {r['params']['steps']} steps" for r in records}
    skipped = {s.split(" (")[0] for s in meta["skipped"]}
    assert measured | skipped == {p.key for p in plan.items} and not meta["failed"]
    assert "tiny-sd2 32px 2 steps" not in measured  # dropped by the plan
    assert len(measured) >= 1 and len(records) == len(measured)
    for r in records:
        assert r["params"]["warmup"] == "1" and r["params"]["repeats"] == "2"
        assert r["tags"]["mlflow_energy.energy_source"] == "estimate:cpu-tdp"
        assert r["metrics"]["energy/total_j"] > 0
    for key in ("hardware", "driver_version", "power_limit_w", "software", "command", "spec", "builds_s"):
        assert key in meta
    assert meta["software"]["torch"] and "--tiny" in meta["command"]
    assert set(meta["builds_s"]) <= {"tiny-sd2", "tiny-flux.1-schnell"}
    for row in proc.stdout.splitlines():
        if row.startswith("tiny-"):
            assert len(row.split()) == 13

    # Rerunning resumes: what is in the file is not measured again.
    import runpy

    script = runpy.run_path(str(SCRIPT))
    assert script["main"](args) == 0
    assert len(read_jsonl(jsonl[0])) == len(records)

    # Later, anywhere: ingest logs the records as runs, once.
    from mlflow import MlflowClient

    from mlflow_energy.tracking import ingest

    new, skipped_n = ingest(jsonl[0], experiment="campaign")
    assert (len(new), skipped_n) == (len(records), 0)
    assert ingest(jsonl[0], experiment="campaign") == ([], len(records))
    exp = MlflowClient().get_experiment_by_name("campaign")
    assert len(MlflowClient().search_runs([exp.experiment_id])) == len(records)


def test_campaign_out_of_time_skips_without_building(tmp_path: Path) -> None:
    from mlflow_energy.measure.meters import EstimateMeter

    spec = CampaignSpec(families=("tiny-sd2",), resolutions=(32,), steps=(1,), device="cpu", precision="fp32",
                        budget_s=100.0, config_overhead_s=1.0, family_overhead_s=1.0, startup_s=0.0)
    plan = plan_campaign(spec, 1e11)
    ticks = itertools.count(step=150.0)  # every clock reading is 150 s later: past the budget
    lines: list[str] = []
    result = campaign.run_campaign(plan, meter=EstimateMeter(), jsonl=tmp_path / "m.jsonl", meta=tmp_path / "m.meta.json",
                                   command="test", echo=lines.append, clock=lambda: next(ticks))
    assert result.rows == [] and result.skipped == ["tiny-sd2 32px 1 steps (out of time)"]
    assert not (tmp_path / "m.jsonl").exists()
    assert json.loads((tmp_path / "m.meta.json").read_text())["builds_s"] == {}
    assert any("skipped" in x for x in lines)


def _run_on_fake_gpu(plan, tmp_path: Path):
    """The plan measured with Zeus over the (fake) NVML GPU: ``(result, jsonl, meta)``."""
    from mlflow_energy.measure.meters import ZeusMeter

    meter = ZeusMeter("cuda")
    try:
        jsonl, meta = campaign.output_paths(tmp_path, meter.hardware)
        result = campaign.run_campaign(plan, meter=meter, jsonl=jsonl, meta=meta, command="test", echo=lambda _: None)
    finally:
        meter.close()
    return result, jsonl, meta


def test_gpu_name_driver_and_power_limit_reach_the_record_and_meta(tmp_path: Path, fake_gpu) -> None:
    """A (fake-counter) NVML GPU meter over a tiny CPU pipeline: what the JSONL and meta say about the GPU."""
    from mlflow_energy.tracking.jsonl import read_jsonl

    spec = CampaignSpec(families=("tiny-sd2",), resolutions=(32,), steps=(1,), device="cpu", precision="fp32",
                        repeats=1, budget_s=1e6)
    plan = plan_campaign(spec, 1e11)
    result, jsonl, meta = _run_on_fake_gpu(plan, tmp_path)
    assert jsonl.name.startswith("fake-gpu-80gb-") and len(result.rows) == 1
    (record,) = read_jsonl(jsonl)
    assert record["gpu_name"] == "NVIDIA Fake GPU 80GB" and record["power_limit_w"] == 300.0
    assert record["tags"]["mlflow_energy.energy_source"] == "zeus:nvml"
    info = json.loads(meta.read_text())
    assert (info["hardware"], info["power_limit_w"], info["energy_source"]) == ("NVIDIA Fake GPU 80GB", 300.0, "zeus:nvml")
    assert [m["key"] for m in info["measured"]] == ["tiny-sd2 32px 1 steps"]


def test_power_limit_sweep_measures_one_config_under_each_limit(tmp_path: Path, fake_gpu_factory) -> None:
    """The campaign's power-limit sweep sets each limit through the (fake) NVML and restores the GPU's own."""
    from mlflow_energy.tracking.jsonl import read_jsonl

    gpus = fake_gpu_factory(watts=350.0, limit_w=400.0)
    spec = CampaignSpec(families=("tiny-sd2",), resolutions=(32,), steps=(1,), device="cpu", precision="fp32",
                        repeats=1, budget_s=1e6,
                        power_limit_sweep={"family": "tiny-sd2", "resolution": 32, "steps": 1, "watts": [150, 250]})
    plan = plan_campaign(spec, 1e11)
    assert [p.key for p in plan.items][-2:] == ["tiny-sd2 32px 1 steps 150W", "tiny-sd2 32px 1 steps 250W"]
    result, jsonl, meta = _run_on_fake_gpu(plan, tmp_path)
    assert len(result.rows) == 3 and not result.failed
    by_limit = {r["params"].get("power_limit_w"): r for r in read_jsonl(jsonl)}
    assert set(by_limit) == {None, "150.0", "250.0"}
    for limit, record in by_limit.items():
        drawn = min(350.0, float(limit)) if limit else 350.0
        assert record["metrics"]["power/avg_w"] == pytest.approx(drawn, rel=0.05)
        assert record["tags"]["mlflow_energy.power_limit_w"] == (f"{float(limit):g}" if limit else "400")
    assert gpus.limit_mw == 400_000
    with pytest.raises(ConfigError, match="power_limit_sweep.watts"):
        CampaignSpec(power_limit_sweep={"family": "sd2", "resolution": 512, "steps": 10, "watts": [0]})


def test_the_script_autologs_one_plain_pipe_call(tmp_path: Path) -> None:
    import runpy

    script = runpy.run_path(str(SCRIPT))
    logged = script["autolog_once"]("tiny-sd2", "cpu", "fp32", tmp_path / "x.autolog")
    assert logged["metrics"]["energy/total_j"] > 0 and logged["params"]["model"] == "tiny-sd2"
    assert json.loads((tmp_path / "x.autolog.json").read_text())["family"] == "tiny-sd2"

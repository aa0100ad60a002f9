"""Sweeps: spec checks, grouping, shards, failures as FAILED runs, resume without duplicates."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.meters import ZeusMeter
from mlflow_energy.sweep import SweepSpec, expand, in_shard, parse_shard, run_sweep
from mlflow_energy.sweep.coordination import Coordinator

SMALL = {
    "name": "small",
    "device": "cpu",
    "repeats": 1,
    "warmup": 0,
    "protocol": {"target": 0},  # exactly one measured run: counter reads are countable
    "idle_seconds": 0.1,
    "grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": [1, 2], "guidance_scale": [1.0]},
}


def _runs(experiment: str) -> list:
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def _by_kind(runs: list, kind: str) -> list:
    return [r for r in runs if r.data.tags.get(schema.T_KIND) == kind]


# ------------------------------------------------------------------------- spec
@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"grid": {"model": ["tiny-sd2"], "steps": [0]}}, "grid.steps=0"),
        ({"grid": {"model": ["nope"]}}, "grid.model='nope'"),
        ({"grid": {"model": ["tiny-sd2"], "resolution": ["big"]}}, "grid.resolution='big'"),
        ({"grid": {"model": ["tiny-sd2"], "precision": ["fp8"]}}, "grid.precision='fp8'"),
        ({"grid": {"model": ["tiny-sd2"], "guidance_scale": [-1]}}, "grid.guidance_scale=-1"),
        ({"grid": {"model": ["tiny-sd2"], "batch_size": []}}, "grid.batch_size=[]"),
        ({"grid": {"model": ["tiny-sd2"], "colour": [1]}}, "grid.colour"),
        ({"grid": {"model": ["tiny-sd2"]}, "repeats": 0}, "repeats=0"),
        ({"grid": {"model": ["tiny-sd2"]}, "overrides": {"tiny-sdxl": {"steps": [1]}}}, "overrides='tiny-sdxl'"),
        ({"grid": {"steps": [1]}}, "grid.model"),
        ({"models": ["tiny-sd2"]}, "models="),
        ({"grid": {"model": ["tiny-sd2"]}, "protocol": {"target": -1}}, "protocol.target=-1"),
        ({"grid": {"model": ["tiny-sd2"]}, "protocol": {"max_repeats": 2.5}}, "protocol.max_repeats=2.5"),
        ({"grid": {"model": ["tiny-sd2"]}, "protocol": {"speed": 1}}, "protocol.speed=1"),
        ({"grid": {"model": ["tiny-sd2"]}, "idle_seconds": 0}, "idle_seconds=0"),
        ({"grid": {"model": ["tiny-sd2"]}, "idle_each_config": "yes"}, "idle_each_config='yes'"),
        ({"grid": {"model": ["tiny-qwen-image"], "cfg_passes": [3]}}, "grid.cfg_passes=3"),
    ],
)
def test_bad_spec_values_name_the_field(data, field):
    with pytest.raises(ConfigError) as info:
        SweepSpec.from_dict(data)
    message = str(info.value)
    assert field in message
    assert "\n" not in message


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        SweepSpec.from_yaml(path)
    with pytest.raises(ConfigError, match="existing YAML file"):
        SweepSpec.from_yaml(tmp_path / "missing.yaml")


def test_cfg_passes_axis_reaches_the_configs():
    spec = SweepSpec.from_dict({"grid": {"model": ["tiny-qwen-image"], "steps": [2], "cfg_passes": [None, 2]}})
    passes = sorted(c.validate().cfg_passes for c in spec.configs())
    assert passes == [1, 2]  # null: what pipe(prompt) runs (one pass without a negative prompt)


def test_grid_overrides_and_grouping():
    spec = SweepSpec.from_dict(
        {
            "grid": {
                "model": ["tiny-sdxl", "tiny-sd2"],
                "resolution": [32, "32x64", [64, 32]],
                "steps": [1, 2],
                "precision": ["fp32", "bf16"],
            },
            "overrides": {"tiny-sdxl": {"steps": [3], "weights": "some/dir"}},
        }
    )
    configs = spec.configs()
    assert len(configs) == 3 * 2 * 2 + 3 * 1 * 2
    sdxl = [c for c in configs if c.model == "tiny-sdxl"]
    assert {c.steps for c in sdxl} == {3} and {c.weights for c in sdxl} == {"some/dir"}
    assert {(c.height, c.width) for c in configs} == {(32, 32), (32, 64), (64, 32)}
    # Configs sharing a pipeline (model, weights, precision, device) are contiguous: one build each.
    keys = [(c.model, c.weights, c.precision, c.device) for c in configs]
    groups = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(groups) == len(set(keys)) == 4


def test_shards_cover_every_config_exactly_once():
    spec = SweepSpec.from_dict(
        {"grid": {"model": ["tiny-sd2", "tiny-sdxl"], "resolution": [32, 64, 96], "steps": [1, 2, 3, 4],
                  "guidance_scale": [1.0, None], "batch_size": [1, 2]}}
    )
    every = [c.config_hash() for c in expand(spec)]
    assert len(set(every)) == len(every) == 2 * 3 * 4 * 2 * 2
    for n in (1, 2, 3, 7):
        parts = [expand(spec, (i, n)) for i in range(n)]
        seen = Counter(c.config_hash() for part in parts for c in part)
        assert set(seen.values()) == {1}
        assert sum(len(p) for p in parts) == len(every)
        assert sorted(c.config_hash() for p in parts for c in p) == sorted(every)
        # Deterministic: the same split every time.
        assert [c.config_hash() for c in expand(spec, (0, n))] == [c.config_hash() for c in parts[0]]
    assert all(in_shard(c, None) for c in expand(spec))


@pytest.mark.parametrize("text", ["2/2", "a/3", "1", "-1/2", "1/0"])
def test_bad_shard(text):
    with pytest.raises(ConfigError, match="shard="):
        parse_shard(text)


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard(" 3/8") == (3, 8)
    assert parse_shard(None) is None


def test_shipped_specs_are_valid():
    demo = SweepSpec.from_yaml("projects/cpu-demo.yaml")
    smoke = SweepSpec.from_yaml("projects/cpu-tiny.yaml")
    paper = SweepSpec.from_yaml("projects/paper-grid.yaml")
    from mlflow_energy.families import family_names, get_family
    from mlflow_energy.flops import config_flops

    tiny = {n for n in family_names() if n.startswith("tiny-") and get_family(n).measurable}
    small = {n for n in family_names() if n.startswith("small-")}
    assert set(smoke.grid["model"]) == tiny and not smoke.protocol.adaptive
    assert set(demo.grid["model"]) == small and demo.protocol.adaptive
    assert demo.device == "cpu" and smoke.device == "cpu"
    # the demo shows a law: FLOPs span at least 30x within each family
    for fam in small:
        flops = [config_flops(c.validate())["total"] for c in demo.configs() if c.model == fam]
        assert max(flops) / min(flops) >= 30, fam
    assert {"sd2", "sd3.5-medium", "flux.1-dev", "qwen-image"} <= set(paper.grid["model"])
    assert paper.device == "cuda"
    sizes = {c.height for c in paper.configs()}
    assert min(sizes) == 256 and max(sizes) == 1024
    steps = {c.steps for c in paper.configs()}
    assert min(steps) == 10 and max(steps) == 50
    assert {"fp16", "fp32"} <= {c.precision for c in paper.configs()}
    assert {True, False} <= {c.validate().cfg for c in paper.configs() if c.model == "sd2"}


# ------------------------------------------------------------------------- running
def test_sweep_failure_becomes_failed_run_and_sweep_goes_on(tracking_uri, no_rapl):
    data = {**SMALL, "grid": {**SMALL["grid"], "resolution": [32, 36]}}  # 36 is no multiple of 8
    result = run_sweep(SweepSpec.from_dict(data), experiment="sw", progress=False)
    assert result.total == 4 and result.measured == 2 and len(result.failed) == 2
    runs = _runs("sw")
    parents = _by_kind(runs, "sweep")
    children = _by_kind(runs, "measurement")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics[schema.M_SWEEP_DONE] == 2
    assert parents[0].data.metrics[schema.M_SWEEP_FAILED] == 2
    # the parent row tells the story: energy summary, a table and a plot of its configs
    energies = sorted(r.data.metrics[schema.M_ENERGY_TOTAL] for r in children if r.info.status == "FINISHED")
    assert parents[0].data.metrics[schema.M_SWEEP_ENERGY_MIN] == pytest.approx(energies[0])
    assert parents[0].data.metrics[schema.M_SWEEP_ENERGY_MAX] == pytest.approx(energies[-1])
    arts = {a.path for a in MlflowClient().list_artifacts(parents[0].info.run_id, "sweep")}
    assert {schema.A_SWEEP_SUMMARY_CSV, schema.A_SWEEP_SUMMARY_PNG} <= arts
    exp = MlflowClient().get_experiment_by_name("sw")
    assert exp.tags[schema.T_EXPERIMENT_KIND] == schema.EXPERIMENT_KIND_ML  # the UI opens on the runs
    view = json.loads(exp.tags[schema.T_SHARED_VIEW_PREFIX + schema.SHARED_VIEW_ENERGY])  # ... in the energy view
    assert f"metrics.`{schema.M_ENERGY_TOTAL}`" in view["selectedColumns"]
    assert all(r.data.tags[schema.T_PARENT_RUN_ID] == parents[0].info.run_id for r in children)
    failed = [r for r in children if r.info.status == "FAILED"]
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(failed) == 2 and len(finished) == 2
    for r in failed:
        reason = r.data.tags[schema.T_FAILURE]
        assert "height=36" in reason and "\n" not in reason
        assert r.data.params["height"] == "36"
    assert {r.data.params["height"] for r in finished} == {"32"}
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_rerun_resumes_without_duplicates(tracking_uri, no_rapl):
    spec = SweepSpec.from_dict(SMALL)
    first = run_sweep(spec, experiment="rs", progress=False, shard=(0, 2))
    wider = SweepSpec.from_dict({**SMALL, "grid": {**SMALL["grid"], "steps": [1, 2, 3]}})
    second = run_sweep(wider, experiment="rs", progress=False)
    assert second.skipped == first.measured
    assert second.measured == 3 - first.measured
    third = run_sweep(wider, experiment="rs", progress=False)
    assert third.measured == 0 and third.skipped == 3
    assert third.parent_run_id is None  # a rerun that measures nothing adds no empty parent
    children = [r for r in _by_kind(_runs("rs"), "measurement") if r.info.status == "FINISHED"]
    hashes = [r.data.tags[schema.T_CONFIG_HASH] for r in children]
    assert len(hashes) == len(set(hashes)) == 3
    assert len(_by_kind(_runs("rs"), "sweep")) == sum(1 for r in (first, second, third) if r.measured)


def test_same_config_on_other_hardware_is_measured_again(tracking_uri, no_rapl, fake_gpu):
    spec = SweepSpec.from_dict({**SMALL, "grid": {**SMALL["grid"], "steps": [1]}})
    run_sweep(spec, experiment="hw", progress=False)
    meter = ZeusMeter("cuda")
    try:
        again = run_sweep(spec, experiment="hw", progress=False, meter=meter)
    finally:
        meter.close()
    assert again.measured == 1 and again.skipped == 0
    hardware = {r.data.tags[schema.T_HARDWARE] for r in _by_kind(_runs("hw"), "measurement")}
    assert "NVIDIA Fake GPU 80GB" in hardware and len(hardware) == 2


def test_interrupt_leaves_no_run_running(tracking_uri, fake_gpu_factory):
    # Ctrl-C while the second config is measured (its counter reads raise KeyboardInterrupt):
    # 2 reads for the idle baseline, 8 for the first config.
    fake_gpu_factory(mode="step", interrupt_after=13)
    meter = ZeusMeter("cuda")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(SweepSpec.from_dict(SMALL), experiment="ki", progress=False, meter=meter)
    finally:
        meter.close()
    runs = _runs("ki")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert [r.info.status for r in _by_kind(runs, "sweep")] == ["KILLED"]
    assert [r.info.status for r in _by_kind(runs, "measurement")] == ["FINISHED"]


def test_a_sweep_resumed_after_ctrl_c_summarises_every_config_and_the_interrupted_parent_points_to_it(
        tracking_uri, fake_gpu_factory):
    import mlflow

    gpus = fake_gpu_factory(mode="step", interrupt_after=13)  # Ctrl-C while the second config is measured
    meter = ZeusMeter("cuda")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(SweepSpec.from_dict(SMALL), experiment="resume", progress=False, meter=meter)
        gpus.interrupt_after = None
        again = run_sweep(SweepSpec.from_dict(SMALL), experiment="resume", progress=False, meter=meter)
    finally:
        meter.close()
    assert again.measured == 1 and again.skipped == 1
    sweeps = {r.info.status: r for r in _by_kind(_runs("resume"), "sweep")}
    killed, done = sweeps["KILLED"], sweeps["FINISHED"]
    assert killed.data.tags[schema.T_SWEEP_RESUMED_BY] == done.info.run_id
    assert done.data.tags[schema.T_SWEEP_RESUMES] == killed.info.run_id
    assert "resumed by run" in killed.data.tags[schema.T_NOTE]
    # the resumed parent's summary covers both configs: the one measured before Ctrl-C and its own
    table = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=done.info.run_id, artifact_path=schema.A_SWEEP_SUMMARY_CSV))
    measured = {r.info.run_name for r in _by_kind(_runs("resume"), "measurement") if r.info.status == "FINISHED"}
    assert len(table) == 2 and set(table["run_name"]) == measured
    assert done.data.metrics[schema.M_VIEW_CONFIGS] == 2


def test_sweep_to_jsonl_without_mlflow(tmp_path, no_rapl):
    out = tmp_path / "m.jsonl"
    result = run_sweep(SweepSpec.from_dict(SMALL), tracking=False, output=out, progress=False)
    assert result.parent_run_id is None and result.measured == 2
    assert len(out.read_text().splitlines()) == 2
    again = run_sweep(SweepSpec.from_dict(SMALL), tracking=False, output=out, progress=False)
    assert again.skipped == 2 and len(out.read_text().splitlines()) == 2
    with pytest.raises(ConfigError, match="output"):
        run_sweep(SweepSpec.from_dict(SMALL), tracking=False, progress=False)


def test_protocol_and_idle_baseline_reach_the_runs(tracking_uri, fake_gpu, capsys):
    data = {**SMALL, "protocol": {"target": 0.05, "max_repeats": 4}, "idle_seconds": 0.2}
    meter = ZeusMeter("cuda")
    try:
        result = run_sweep(SweepSpec.from_dict(data), experiment="proto", progress=False, meter=meter)
    finally:
        meter.close()
    assert result.measured == 2 and 0 < result.inference_s <= result.wall_s
    assert result.idle_power_w == pytest.approx(150.0, rel=0.05)
    runs = _runs("proto")
    (parent,) = _by_kind(runs, "sweep")
    assert parent.data.metrics[schema.M_SWEEP_WALL] == pytest.approx(result.wall_s)
    assert parent.data.metrics[schema.M_SWEEP_INFERENCE] == pytest.approx(result.inference_s)
    assert parent.data.metrics[schema.M_IDLE_POWER] == pytest.approx(result.idle_power_w)
    for child in _by_kind(runs, "measurement"):
        metrics, tags = child.data.metrics, child.data.tags
        assert 2 <= metrics[schema.M_REPEATS] <= 4
        assert metrics[schema.M_IDLE_POWER] == pytest.approx(result.idle_power_w)
        assert tags[schema.T_ENERGY_SCOPE] == "total" and tags[schema.T_NOISY] in ("true", "false")
        assert schema.M_ENERGY_TOTAL_CI95 in metrics and schema.dynamic_energy_key("total") in metrics
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == ["[1/2", "[2/2"]
    assert all("J/img" in line and "runs" in line for line in lines)


def test_idle_power_measured_again_before_each_config_on_request(tracking_uri, fake_gpu_factory):
    gpus = fake_gpu_factory(mode="step", step_j=1.0)
    meter = ZeusMeter("cuda")
    try:
        run_sweep(SweepSpec.from_dict({**SMALL, "idle_each_config": True}), experiment="idle", progress=False,
                  meter=meter)
    finally:
        meter.close()
    # 2 reads per idle window (before the sweep and before each of the 2 configs), 8 per measured run
    assert gpus.reads == 3 * 2 + 2 * 8


def test_the_sweep_plot_labels_each_bar_as_the_run_description_rounds_it(tmp_path, monkeypatch):
    from mlflow_energy import _plotstyle
    from mlflow_energy.sweep.summary import energy_plot
    from mlflow_energy.tracking.runs import sig3

    figs = []
    monkeypatch.setattr(_plotstyle, "save", lambda fig, path: figs.append(fig) or path)
    rows = [{"run_name": "a", "model": "tiny-sd2", "energy_total_j": 1234.5678, "energy_source": "estimate:cpu-tdp"},
            {"run_name": "b", "model": "tiny-sdxl", "energy_total_j": 0.0456789, "energy_source": "estimate:cpu-tdp"}]
    energy_plot(rows, tmp_path / "p.png")
    ax = figs[0].axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted([sig3(1234.5678), sig3(0.0456789)]) == ["0.0457", "1.23e+03"]
    assert "estimate" in ax.get_xlabel()
    rows[0]["energy_source"] = "zeus:nvml"
    energy_plot(rows, tmp_path / "q.png")
    assert "estimate" not in figs[1].axes[0].get_xlabel()


def test_a_sweep_with_claims_asks_mlflow_nothing_per_config_beyond_logging_its_run(tracking_uri, no_rapl, monkeypatch):
    """With the claims in the store's database, whether this worker was ended is its lease row there
    (checked in each claim's transaction and by one read before logging), and the claim's token goes
    with the run's own tags: no get_run of the sweep run and no extra set_tag per config; settling a
    config and claiming the next one is one transaction."""
    calls: Counter = Counter()
    get_run, set_tag = MlflowClient.get_run, MlflowClient.set_tag

    def counting_get_run(self, run_id):
        calls["get_run", run_id] += 1
        return get_run(self, run_id)

    def counting_set_tag(self, run_id, key, value, *args, **kwargs):
        calls["set_tag", key] += 1
        return set_tag(self, run_id, key, value, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "get_run", counting_get_run)
    monkeypatch.setattr(MlflowClient, "set_tag", counting_set_tag)
    for name in ("claim", "finish", "finish_and_claim"):  # transactions in the claims database
        method = getattr(Coordinator, name)
        monkeypatch.setattr(Coordinator, name, lambda self, *a, _m=method, _n=name, **k: calls.update([_n]) or _m(
            self, *a, **k))
    spec = SweepSpec.from_dict({**SMALL, "grid": {**SMALL["grid"], "steps": [1, 2, 3, 4]}})
    result = run_sweep(spec, experiment="lean", progress=False)
    assert result.measured == 4 and result.parent_run_id
    assert calls["get_run", result.parent_run_id] <= 2, calls  # at the start and the summary, not per config
    assert calls["set_tag", schema.T_CLAIM_TOKEN] == 0, calls
    # each config settled and the next one claimed in one transaction: the first claimed alone, the last settled alone
    assert (calls["claim"], calls["finish_and_claim"], calls["finish"]) == (1, 3, 1), calls
    children = _by_kind(_runs("lean"), "measurement")
    assert sorted(r.data.tags[schema.T_CLAIM_TOKEN] for r in children) == ["1"] * 4

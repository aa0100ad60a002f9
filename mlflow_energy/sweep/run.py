"""Running a sweep: every config of a spec measured as a child run of one parent run.

A config that fails (bad value for its family, out of memory, any error) becomes a FAILED
child run tagged with the reason and the sweep goes on. A config already FINISHED in the
experiment on the same hardware (by config hash) is skipped, so an interrupted sweep
resumes where it stopped.

Example:
    >>> from mlflow_energy.sweep import run_sweep
    >>> result = run_sweep("projects/cpu-demo.yaml", experiment="demo")  # doctest: +SKIP
    >>> result.measured, len(result.failed)  # doctest: +SKIP
    (48, 0)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from mlflow_energy import schema
from mlflow_energy._version import __version__
from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.device import check_device
from mlflow_energy.sweep.claims import SweepGuard
from mlflow_energy.sweep.coordination import COORDINATION_ENV, coordination_url
from mlflow_energy.sweep.spec import SweepSpec, in_shard, parse_shard, resolved


@dataclass
class SweepResult:
    """What :func:`run_sweep` did."""

    parent_run_id: str | None
    total: int
    done: list[str] = field(default_factory=list)
    failed: list[tuple[InferenceConfig, str]] = field(default_factory=list)
    skipped: int = 0
    measured: int = 0
    energy_j: float = 0.0
    estimated: bool = False  # some energy is an estimate (no energy counter), not a measurement
    noisy: int = 0
    idle_power_w: float = 0.0
    wall_s: float = 0.0
    inference_s: float = 0.0
    fenced: str | None = None  # why another worker took this one's claims over (it stopped)
    missing: list[InferenceConfig] = field(default_factory=list)  # left open: the server stayed away
    superseded: int = 0  # runs of this worker tagged superseded (their claim was taken over meanwhile)
    skipped_hashes: list[str] = field(default_factory=list)  # measured before: in the summary all the same
    hardware: str = ""


def run_sweep(
    spec: SweepSpec | str | os.PathLike[str],
    *,
    experiment: str | None = None,
    shard: tuple[int, int] | str | None = None,
    output: str | os.PathLike[str] | None = None,
    tracking: bool = True,
    meter: Any | None = None,
    progress: bool = True,
    journal: str | os.PathLike[str] | None = None,
    claims: bool = True,
    coordination_uri: str | None = None,
) -> SweepResult:
    """Measure every config of a sweep, resuming and sharding as described in the module doc.

    Args:
        spec: a :class:`SweepSpec` or the path of a YAML spec.
        experiment: experiment name; default the spec's, else the tracking default.
        shard: ``(i, n)`` or ``"i/n"``: measure only shard ``i`` of ``n``.
        output: also append one JSONL record per measured config to this file.
        tracking: log to MLflow (``False`` with ``output``: no MLflow needed).
        meter: energy meter; default :func:`mlflow_energy.measure.meters.auto_meter` for the device.
        progress: show a tqdm progress bar; ``False``: one plain line per config instead
            (what ``mlflow run`` shows, where no terminal redraws a bar).
        journal: the local journal every measurement is written to before it is logged
            (default: see :mod:`mlflow_energy.tracking.journal`).
        claims: claim each config in the claims database before measuring it, so that
            several workers on one spec measure it once (:mod:`mlflow_energy.sweep.coordination`).
        coordination_uri: the claims database when the tracking store is a server
            (default ``$MLFLOW_ENERGY_COORDINATION_URI``; a SQL tracking URI is its own).

    Example:
        >>> result = run_sweep("projects/cpu-demo.yaml", experiment="demo")  # doctest: +SKIP
        >>> result.total, len(result.done), len(result.failed)  # doctest: +SKIP
        (12, 12, 0)
    """
    from tqdm.auto import tqdm

    from mlflow_energy.measure.meters import auto_meter
    from mlflow_energy.measure.protocol import idle_power
    from mlflow_energy.measure.runner import PipelineCache, measure
    from mlflow_energy.tracking.jsonl import JsonlSink

    if not isinstance(spec, SweepSpec):
        spec = SweepSpec.from_yaml(spec)
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if not tracking and output is None:
        raise ConfigError("output", None, "a JSONL file when MLflow tracking is off")
    check_device(spec.device)
    experiment = experiment or spec.experiment
    configs = [c for c in spec.configs() if in_shard(c, shard)]
    sink = JsonlSink(output) if output is not None else None
    if tracking:
        from mlflow_energy.tracking.retry import configure_client_retries, ensure_store

        configure_client_retries()
        ensure_store()
        if claims:  # a coordination URI that is not a database: one line before anything runs
            import mlflow

            coordination_url(mlflow.get_tracking_uri(), coordination_uri or os.environ.get(COORDINATION_ENV))

    sweep_start = time.perf_counter()
    own_meter = meter is None
    meter = meter or auto_meter(spec.device)
    result = SweepResult(parent_run_id=None, total=len(configs), hardware=meter.hardware)
    result.idle_power_w = idle_power(meter, spec.idle_seconds)
    tracker = _Tracker(experiment, spec, shard) if tracking else None
    coordination_uri = coordination_uri or os.environ.get(COORDINATION_ENV) or None
    guard = SweepGuard(tracker, journal=journal, hardware=meter.hardware, echo=tqdm.write, claims=claims,
                       coordination_uri=coordination_uri) if tracker is not None else None
    cache = PipelineCache()
    status = "FAILED"
    bar = None
    passed: list[InferenceConfig] = []  # left to another worker (or to later, offline): checked again at the end

    def measure_one(cfg: InferenceConfig) -> None:
        try:
            valid = cfg.validate()
            pipe = cache.get(valid)
            if spec.idle_each_config:
                result.idle_power_w = idle_power(meter, spec.idle_seconds)
            start = time.perf_counter()
            m = measure(valid, meter=meter, pipeline=pipe, protocol=spec.protocol, idle_power_w=result.idle_power_w)
            result.inference_s += time.perf_counter() - start
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # any failure of one config: record it, go on
            from mlflow_energy.tracking import one_line

            reason = one_line(exc)
            result.failed.append((cfg, reason))
            if tracker is not None:
                guard.safely("logging a failure", lambda cfg=cfg, exc=exc: tracker.fail(cfg, exc, meter))
                guard.failed(cfg)
            if not isinstance(exc, ConfigError):
                cache.clear()
            if not progress:
                _line(result.measured + len(result.failed) + result.skipped, len(configs), cfg, f"FAILED: {reason}")
            return
        if guard is not None:
            run_id = guard.record(m)  # journalled first; None: kept in the journal for now (or fenced)
            if guard.fence:
                return  # taken over by another worker: not counted, not logged
            if run_id:
                result.done.append(run_id)
        result.measured += 1
        result.noisy += int(m.noisy)
        result.energy_j += m.energy_j[schema.PHASE_TOTAL] * valid.batch_size
        result.estimated |= m.energy_source.startswith(schema.SOURCE_ESTIMATE_PREFIX)
        if sink is not None:
            sink.write(m)
        done_keys.add((valid.config_hash(), meter.hardware))
        if not progress:
            _line(result.measured + len(result.failed) + result.skipped, len(configs), valid, _summary(m))

    try:
        if tracker is not None:
            result.parent_run_id = tracker.start()
            guard.start(result.parent_run_id)
        done_keys = _finished(tracker, guard) if tracker is not None else set()
        if sink is not None:
            done_keys |= sink.keys()
        bar = tqdm(total=len(configs), desc=spec.name, unit="config", disable=not progress, dynamic_ncols=True)
        todo = [resolved(c) for c in configs]
        hashes = [c.config_hash() for c in todo]
        for i, cfg in enumerate(todo):
            if guard is not None and guard.fence:
                break
            if (cfg.config_hash(), meter.hardware) in done_keys:
                result.skipped += 1
                result.skipped_hashes.append(cfg.config_hash())
            elif guard is not None and not guard.claim(cfg):  # another worker measures it (or later)
                if not guard.fence:
                    passed.append(cfg)
            else:
                if guard is not None:  # claimed in the transaction that settles this one
                    guard.next_hash = _next_claim(hashes, i, done_keys, meter.hardware)
                measure_one(cfg)
                if guard is not None:
                    guard.next_hash = None
            bar.update(1)
            bar.set_postfix(_postfix(result))
        if guard is not None and guard.coord is not None and not guard.fence:
            result.skipped += final_pass(guard, passed, measure_one)
        status = "KILLED" if guard is not None and guard.fence else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if bar is not None:
            bar.close()
        cache.clear()
        result.wall_s = time.perf_counter() - sweep_start
        if own_meter:
            meter.close()
        if guard is not None and result.parent_run_id is not None:
            result.fenced = guard.fence
            result.missing = list(guard.missing)
            guard.finish()
            result.superseded = guard.superseded
            if not guard.fence:  # a fenced run was ended by the worker that took it over
                guard.safely("ending the sweep run", lambda: tracker.finish(result, status))
    return result


def _finished(tracker: Any, guard: Any) -> set[tuple[str, str]]:
    """The finished keys of the experiment; empty (claims decide) when the server is away."""
    got = guard.safely("reading the finished configs", tracker.finished_keys)
    return set(got or ())


def _next_claim(hashes: list[str], i: int, done_keys: set[tuple[str, str]], hardware: str) -> str | None:
    """The hash of the config after the ``i``-th that the sweep will claim (not measured already), if any."""
    return next((hashes[j] for j in range(i + 1, len(hashes))
                 if hashes[j] != hashes[i] and (hashes[j], hardware) not in done_keys), None)


def final_pass(guard: Any, passed: list[InferenceConfig], measure_one: Any) -> int:
    """Measure the passed configs whose holder died; wait for those a live worker holds.

    A holder that stops beating is ended (fenced) and its claim taken over after
    ``STALE_AFTER`` heartbeats. Returns how many configs were left to others (done there).
    Configs still open when the server stays away are in ``guard.missing``.
    """
    from mlflow_energy.tracking.retry import TrackingUnavailable
    from mlflow_energy.tracking.stale import heartbeat_s

    todo, left = list(passed), 0
    guard.missing = []
    while todo and not guard.fence:
        if not guard.wait_online():
            guard.missing = todo
            guard.echo(f"{len(todo)} config(s) not measured: the tracking server stayed away, so their "
                       "claims could not be checked; run the sweep again when it is back")
            return left
        guard.round()
        waiting = []
        for cfg in todo:
            try:
                state = guard.settle(cfg)
            except TrackingUnavailable as exc:
                guard._go_offline(exc)
                waiting.append(cfg)
                continue
            if state == "measure":
                measure_one(cfg)
            elif state == "wait":
                waiting.append(cfg)
            else:
                left += 1
            if guard.fence:
                return left
        todo = waiting
        if todo:
            time.sleep(min(heartbeat_s(), 5.0))
    return left


def _summary(m: Any) -> str:
    """``12.3 J/img +-2.1% (3 runs, 0.41 s/img)``, and why a noisy config is noisy."""
    total = m.energy_j[schema.PHASE_TOTAL]
    ci = 100.0 * m.energy_total_ci95_j / total if total > 0 else float("inf")
    unit = "J/img (estimate)" if m.energy_source.startswith(schema.SOURCE_ESTIMATE_PREFIX) else "J/img"
    text = f"{total:.4g} {unit} +-{ci:.1f}% ({m.repeats} runs, {m.time_s[schema.PHASE_TOTAL]:.3g} s/img)"
    if m.outliers:
        text += f", {m.outliers} outlier(s) left out"
    if m.noisy:
        text += " NOISY: interval above the target (run tagged noisy)"
    return text


def _line(index: int, total: int, cfg: InferenceConfig, text: str) -> None:
    """One progress line per config (``mlflow run`` shows plain lines, not a redrawn bar)."""
    print(f"[{index}/{total}] {cfg.model} {cfg.height}x{cfg.width} {cfg.steps} steps: {text}", flush=True)


def _postfix(result: SweepResult) -> dict[str, Any]:
    post: dict[str, Any] = {"energy": f"{result.energy_j:.4g} J"}
    if result.failed:
        post["failed"] = len(result.failed)
    if result.skipped:
        post["skipped"] = result.skipped
    if result.noisy:
        post["noisy"] = result.noisy
    return post


class _Tracker:
    """The MLflow side of a sweep: the parent run and its children."""

    def __init__(self, experiment: str | None, spec: SweepSpec, shard: tuple[int, int] | None) -> None:
        from mlflow_energy import tracking

        self.t = tracking
        self.exp_id = tracking.experiment_id(experiment)
        self.exp_name = tracking.client().get_experiment(self.exp_id).name  # looked up once per sweep
        self.spec = spec
        self.shard = shard
        self.run_id: str | None = None
        self.rows: list[dict[str, Any]] = []

    def start(self) -> str:
        tags = {schema.T_SWEEP_SPEC: self.spec.name, schema.T_VERSION: __version__}
        tags.update(getattr(self, "extra_tags", {}))  # worker and hardware (sweep.claims)
        name = self.spec.name
        if self.shard is not None:
            tags[schema.T_SHARD] = f"{self.shard[0]}/{self.shard[1]}"
            name += f"-shard{self.shard[0]}of{self.shard[1]}"
        from mlflow_energy.tracking.retry import ArtifactStoreError, retrying

        self.run_id = retrying(lambda: self.t.start_run(self.exp_id, kind=schema.KIND_SWEEP, run_name=name,
                                                        tags=tags), what="starting the sweep run")
        if self.spec.source:
            try:
                retrying(lambda: self.t.client().log_text(self.run_id, self.spec.source, schema.A_SWEEP_SPEC),
                         what="storing the sweep spec")
            except ArtifactStoreError as exc:  # a full store: stop before any GPU time is spent
                self.t.client().set_tag(self.run_id, schema.T_FAILURE, str(exc)[:480])
                self.t.end_run(self.run_id, "FAILED")
                raise
        return self.run_id

    def finished_keys(self) -> set[tuple[str, str]]:
        return self.t.finished_keys(self.exp_id)

    def log(self, m: Any) -> str:
        from mlflow_energy.sweep.summary import summary_row

        run_id = self.t.log_measurement(m, experiment=self.exp_name, parent_run_id=self.run_id,
                                        carbon_intensity=self.spec.carbon_intensity, exp_id=self.exp_id)
        self.rows.append({**summary_row(m, self.t.default_run_name(m.config)), "run_id": run_id})
        return run_id

    def fail(self, cfg: InferenceConfig, exc: BaseException, meter: Any) -> None:
        self.t.log_failure(
            cfg, exc, experiment=self.exp_name, parent_run_id=self.run_id, hardware=meter.hardware,
            energy_source=meter.source,
        )

    def finish(self, result: SweepResult, status: str) -> None:
        assert self.run_id is not None
        if status == "FINISHED" and not result.measured and not result.failed:
            # A rerun with everything measured already: no empty parent among the results.
            self.t.end_run(self.run_id, status)
            self.t.client().delete_run(self.run_id)
            result.parent_run_id = None
            return
        try:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.t.client().log_batch(
                self.run_id,
                metrics=[
                    Metric(schema.M_SWEEP_DONE, float(result.measured - result.superseded), now, 0),
                    Metric(schema.M_SWEEP_FAILED, float(len(result.failed)), now, 0),
                    Metric(schema.M_SWEEP_SKIPPED, float(result.skipped), now, 0),
                    Metric(schema.M_SWEEP_WALL, result.wall_s, now, 0),
                    Metric(schema.M_SWEEP_INFERENCE, result.inference_s, now, 0),
                    Metric(schema.M_IDLE_POWER, result.idle_power_w, now, 0),
                    Metric(schema.M_SWEEP_SUPERSEDED, float(result.superseded), now, 0),
                ],
            )
            from mlflow_energy.sweep.summary import earlier_rows, log_summary, mark_resumed
            from mlflow_energy.tracking.retry import is_storage_full

            try:  # a resumed sweep: the configs an interrupted invocation measured are in the summary too
                earlier, parents = earlier_rows(self.exp_id, result.skipped_hashes, result.hardware, self.run_id)
                log_summary(self.run_id, self.rows + earlier, experiment_id=self.exp_id, children_shown=True)
                mark_resumed(parents, self.run_id)
            except Exception as exc:  # a full artifact store: the run still ends, with its metrics
                if not is_storage_full(exc):
                    raise
        finally:
            self.t.end_run(self.run_id, status)



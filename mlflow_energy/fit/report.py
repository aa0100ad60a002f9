"""A fit as an MLflow run (metrics, law table, plots, the registered model) and as a text summary."""

from __future__ import annotations

import math

from mlflow_energy import schema
from mlflow_energy.fit.result import FitResult, _slug


# ============================================================================ logging
def log_fit(result: FitResult, *, experiment: str, allow_mixed: bool, registered_model: str | None = None,
            plots: bool = True) -> str:
    """Log the fit into the active MLflow run: params, law and CV metrics, tables, plots and the
    training data as the run's input dataset. Returns the run id."""
    import tempfile
    from pathlib import Path

    import mlflow

    run = mlflow.active_run()
    assert run is not None, "log_fit needs an active run"
    frame = result.frame
    mlflow.set_tags({schema.T_KIND: schema.KIND_FIT})
    mlflow.log_params({
        schema.P_FIT_EXPERIMENT: experiment,
        schema.P_FIT_N_RUNS: len(frame),
        schema.P_FIT_SOURCES: ",".join(result.model.sources)[:500],
        schema.P_FIT_PHASES: ",".join(result.model.phases),
        "allow_mixed_sources": allow_mixed,
        schema.P_FIT_CORRECTOR: "used" if result.model.corrector_used else "law_only",
        **{schema.fit_law_param(p): pm.law_form for p, pm in result.model.phases.items()},
        schema.P_FIT_TARGET: result.target,
        schema.P_FIT_NOISY_EXCLUDED: result.noisy_excluded,
        schema.P_FIT_NOISY_DOWNWEIGHTED: result.noisy_downweighted,
        **({schema.P_FIT_REGISTERED_MODEL: registered_model} if registered_model else {}),
    })
    metrics: dict[str, float] = {}
    for phase, pm in result.model.phases.items():
        for stat in ("b", "b_low", "b_high", "r2", "mape"):
            v = getattr(pm.overall, stat)
            if math.isfinite(v):
                metrics[schema.fit_key("overall", phase, stat)] = v
        for hw, law in pm.cross.items():
            for stat in ("b", "r2", "mape"):
                v = getattr(law, stat)
                if math.isfinite(v):
                    metrics[schema.fit_key(_slug(hw), phase, stat)] = v
    for phase, pm in result.model.phases.items():
        sat = pm.saturating
        if sat is not None:
            for stat, v in (("tau_s", math.exp(sat.log_tau)), ("c", sat.c), ("w_attention", sat.w_attention),
                            ("w_conv", sat.w_conv), ("w_intensity", sat.w_intensity), ("mape", sat.mape)):
                if math.isfinite(v):
                    metrics[schema.fit_key("saturating", phase, stat)] = v
    if result.law_forms_cv is not None:
        for _, row in result.law_forms_cv.iterrows():
            for form in ("power", "saturating"):
                v = float(row[f"mape_{form}"])
                if math.isfinite(v):
                    metrics[schema.cv_key(row["scheme"], row["phase"], f"mape_{form}_law")] = v
    for _, row in result.cv_summary.iterrows():
        for stat in ("n", "mape_law", "mape_corrected", "spearman_law", "spearman_corrected"):
            v = float(row[stat])
            if math.isfinite(v):
                metrics[schema.cv_key(row["scheme"], row["phase"], stat)] = v
    if result.family_laws is not None:
        for _, row in result.family_laws.iterrows():
            for stat in ("b", "r2", "loco_mape", "flops_span"):
                v = float(row[stat])
                if math.isfinite(v):
                    metrics[schema.family_law_key(_slug(str(row["family"])), stat)] = v
    if result.time_cv_summary is not None:
        for _, row in result.time_cv_summary.iterrows():
            for stat in ("n", "mape_law", "spearman_law"):
                v = float(row[stat])
                if math.isfinite(v):
                    metrics[schema.cv_key(row["scheme"], schema.TIME_LAW_PHASE, stat)] = v
    for level, q in result.model.time_interval.items():
        if math.isfinite(q):
            metrics[schema.interval_key(level, "time_log_halfwidth")] = q
    for level, q in result.model.interval.items():
        metrics[schema.interval_key(level, "log_halfwidth")] = q
    if result.coverage is not None:
        for _, row in result.coverage.iterrows():
            if math.isfinite(row["coverage"]):
                metrics[schema.interval_key(row["level"], "coverage")] = float(row["coverage"])
    if result.step_scaling is not None and len(result.step_scaling):
        metrics[schema.M_STEP_SCALING] = float(result.step_scaling["ratio_of_ratios"].median())
    mlflow.log_metrics(metrics)

    import warnings

    with warnings.catch_warnings():  # integer columns hold no missing values here: the hint does not apply
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        ds = mlflow.data.from_pandas(frame, name=f"{experiment}-runs", targets="energy_total")
    mlflow.log_input(ds, context="training")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        for name, df in ((schema.A_FIT_GROUPS_CSV, result.laws), (schema.A_FIT_CV_CSV, result.cv_predictions),
                         (schema.A_FIT_CV_SUMMARY_CSV, result.cv_summary),
                         (schema.A_FIT_LAW_FORMS_CSV, result.law_forms_cv),
                         (schema.A_FIT_COVERAGE_CSV, result.coverage), (schema.A_FIT_STEP_SCALING_CSV,
                                                                        result.step_scaling)):
            if df is None:
                continue
            p = tmp_p / Path(name).name
            df.to_csv(p, index=False)
            mlflow.log_artifact(str(p), artifact_path=str(Path(name).parent))
        ids = tmp_p / Path(schema.A_FIT_SOURCE_RUNS).name
        ids.write_text("\n".join(frame["run_id"].astype(str)) + "\n")
        mlflow.log_artifact(str(ids), artifact_path=str(Path(schema.A_FIT_SOURCE_RUNS).parent))
        if plots:
            from mlflow_energy.fit.plots import make_plots

            for path in make_plots(result, tmp_p / "plots"):
                mlflow.log_artifact(str(path), artifact_path=schema.A_FIT_PLOTS_DIR)
    return run.info.run_id


def format_summary(result: FitResult) -> str:
    """A short text report of the fit: laws of the total and the cross-validation table."""
    lines = []
    laws = result.laws[(result.laws["phase"] == schema.PHASE_TOTAL)]
    lines.append("law of the total per denoiser call, e_call = a * (FLOPs per call)^b, E = calls x e_call:")
    for _, r in laws.iterrows():
        if math.isfinite(r["b"]):
            ci = f" [{r['b_low']:.3f}, {r['b_high']:.3f}]" if math.isfinite(r["b_low"]) else ""
            lines.append(f"  {r['level']:<22} {r['group']:<40} n={int(r['n']):<3} b={r['b']:.3f}{ci} "
                         f"R2={r['r2']:.3f} MAPE={r['mape']:.1%} {r['note']}")
        else:
            lines.append(f"  {r['level']:<22} {r['group']:<40} n={int(r['n']):<3} {r['note']}")
    fl = result.family_laws
    if fl is not None and len(fl):
        lines.append("per-family law of the total (the law alone; LOCO = leave one config out):")
        for _, r in fl.iterrows():
            lines.append(f"  {r['family']:<22} {r['hardware'][:30]:<30} configs={int(r['configs']):<3} "
                         f"FLOPs span {r['flops_span']:.0f}x  b={r['b']:.3f}  R2={r['r2']:.3f}  "
                         f"LOCO MAPE={r['loco_mape']:.1%}")
    if result.noisy_excluded:
        lines.append(f"{result.noisy_excluded} run(s) tagged noisy by the measurement protocol were left out")
    if result.noisy_downweighted:
        w = result.frame.loc[result.frame["noisy"].astype(bool), "weight"] if "weight" in result.frame else None
        span = f" (weights {w.min():.2f}-{w.max():.2f})" if w is not None and len(w) else ""
        lines.append(f"{result.noisy_downweighted} run(s) tagged noisy by the measurement protocol were "
                     f"down-weighted{span}: weight (target / their 95% interval)^2")
    forms = result.law_forms_cv
    if forms is not None and len(forms):
        lines.append("form of the law per phase (held-out MAPE of the law alone, power -> saturating):")
        for _, r in forms.iterrows():
            lines.append(f"  {r['scheme']:<7} {r['phase']:<12} {r['mape_power']:.1%} -> {r['mape_saturating']:.1%}")
    for phase, pm in result.model.phases.items():
        sat = pm.saturating
        if sat is None:
            lines.append(f"law of {phase}: power law")
        else:
            lines.append(f"law of {phase}: saturating, saturates at tau = {math.exp(sat.log_tau):.2g} s x the GPU's "
                         f"peak FLOP/s, c = {sat.c:g}, op weights attention {sat.w_attention:+.2f} conv "
                         f"{sat.w_conv:+.2f}, intensity {sat.w_intensity:+.2f} per log FLOP/byte, "
                         f"{len(sat.setup_log_tau)} setup(s) with their own tau")
    if len(result.cv_summary):
        lines.append("cross-validation (law alone -> law + corrector):")
        for _, r in result.cv_summary.iterrows():
            lines.append(
                f"  {r['scheme']:<7} {r['phase']:<12} n={int(r['n']):<4} MAPE {r['mape_law']:.1%} -> "
                f"{r['mape_corrected']:.1%}   Spearman {r['spearman_law']:.3f} -> {r['spearman_corrected']:.3f}")
    lines.append("corrector: " + ("used (it lowers grouped-CV MAPE)" if result.model.corrector_used
                                  else "off, law only (grouped CV: it does not help)"))
    if result.coverage is not None and len(result.coverage):
        lines.append("90% interval per level (honest grouped coverage):")
        for _, r in result.coverage.iterrows():
            lines.append(f"  {r['level']:<16} x/÷{math.exp(r['log_halfwidth']):.2f}  coverage {r['coverage']:.1%} "
                         f"(n={int(r['n'])}, {int(r['n_groups'])} groups)")
    if result.time_cv_summary is not None and len(result.time_cv_summary):
        lines.append("time per image, law alone (grouped CV):")
        for _, r in result.time_cv_summary.iterrows():
            lines.append(f"  {r['scheme']:<7} n={int(r['n']):<4} MAPE {r['mape_law']:.1%}   Spearman "
                         f"{r['spearman_law']:.3f}")
    elif result.model.time is None:
        lines.append("time per image: not predicted (too few runs carry time/total_s)")
    seen = result.model.seen
    if seen:
        from mlflow_energy.fit.scope import seen_summary

        lines.append(f"answers questions within what it has seen: {seen_summary(seen)}")
    if result.step_scaling is not None and len(result.step_scaling):
        rr = result.step_scaling["ratio_of_ratios"]
        lines.append(f"step scaling 50/30: energy ratio / FLOPs ratio = {rr.min():.4f} .. {rr.max():.4f}")
    return "\n".join(lines)

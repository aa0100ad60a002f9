"""Fit the energy law from measurement runs: a power law per phase on one call, a LightGBM residual
corrector kept only where grouped cross-validation shows it helps, calibrated intervals and plots.

Per phase (``text_encode``, ``denoise``, ``decode`` and the whole-pipeline ``total``) the law is on
one call, what the GPU runs at once (a denoiser call on the whole batch, both CFG samples; a text
encoder pass; a VAE decode): ``log e_call = log a + b log f_call`` (natural logs, joules and FLOP
per call), and ``E = calls per image x e_call`` (see :func:`call_terms`), so steps and CFG passes
scale energy exactly linearly. It is fitted

- per (family, hardware) group (slope with a bootstrap confidence interval, R2, MAPE);
- pooled per hardware with a per-family offset (the slope shared by the families);
- pooled per hardware with one intercept (the cross-family law an unseen family gets);
- pooled over everything (the law an unseen GPU gets, before the corrector).

A prediction uses the most specific law available for its (family, hardware); the corrector adds
what the law misses (precision, memory-bound shapes, hardware) from features that carry over to
unseen families and GPUs and never see the step count. Cross-validation refits everything per
fold: leave one config, family, hardware, data source or setup out; it decides the form of each
phase's law (the power law or the saturating law, :mod:`~mlflow_energy.fit.saturation`), whether
the corrector is used, and calibrates a conformal interval per prediction level.

Owns: runs -> frame -> features -> laws + corrector -> evaluation -> a logged fit.
Modules:
    frame       runs to a fitting frame; source checks
    features    FLOPs, architecture and hardware descriptors (nothing names a family or a GPU)
    law         the power law: least squares, bootstrap slopes, per-family offsets
    saturation  the saturating law: energy per FLOP falls with the call's size until the GPU is full
    model       :class:`EnergyModel`: per-phase laws and the residual corrector
    validation  grouped cross-validation and conformal interval widths
    result      :func:`fit_energy_model`, the one call that does all of the above
    report      the fit as an MLflow run, and as a text summary
    plots       energy vs FLOPs, predicted vs measured, residuals
    registry    the registered version's description and tags; the fit fingerprint
May import: the shared ground, ``families``, ``flops``, ``measure.hardware``, ``tracking``.

Example:
    >>> from mlflow_energy.fit import FIT_PHASES, fit_energy_model, runs_frame
    >>> FIT_PHASES
    ('text_encode', 'denoise', 'decode', 'total')
    >>> result = fit_energy_model(runs_frame("mlenergy"))  # doctest: +SKIP
    >>> print(result.cv_summary)                          # doctest: +SKIP
"""

from mlflow_energy._imports import lazy_exports

_EXPORTS = {
    "FIT_PHASES": "frame",
    "INPUT_COLUMNS": "frame",
    "check_sources": "frame",
    "normalise_runs": "frame",
    "drop_noisy": "frame",
    "weigh_noisy": "frame",
    "family_laws": "validation",
    "runs_frame": "frame",
    "source_category": "frame",
    "FEATURES": "features",
    "architecture_descriptors": "features",
    "compute_flops": "features",
    "call_terms": "features",
    "feature_frame": "features",
    "PowerLaw": "law",
    "fit_line": "law",
    "fit_offsets": "law",
    "EnergyModel": "model",
    "PhaseModel": "model",
    "fit_core": "model",
    "CV_SCHEMES": "validation",
    "cross_validate": "validation",
    "interval_widths": "validation",
    "interval_coverage": "validation",
    "corrector_helps": "validation",
    "choose_law_forms": "validation",
    "SaturatingLaw": "saturation",
    "fit_saturating": "saturation",
    "LEVELS": "validation",
    "FitResult": "result",
    "fit_energy_model": "result",
    "law_table": "result",
    "step_scaling": "result",
    "format_summary": "report",
    "log_fit": "report",
    "make_plots": "plots",
    "fit_fingerprint": "registry",
    "version_card": "registry",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

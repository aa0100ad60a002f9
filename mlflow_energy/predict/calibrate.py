"""Calibration: adapt a registered energy model to the user's own setup from a few measurements.

The fitted object and how it applies live in :mod:`mlflow_energy.predict.calibration`; this module
fits it and registers the calibrated model. One Bayesian linear regression of the log residuals
``r = log(measured / prior)`` over every measurement of the setup, prior mean 0 (the prior model
is right on average):

* **levels**: a setup-wide offset (prior sd ``tau``, the prior's between-setup spread: its
  ``unseen_setup`` interval level) plus one level per measured family (prior sd ``tau`` x
  :data:`FAMILY_SHARE`, widened to the spread the families themselves show when there are at
  least three); ``sigma``, the within-setup noise, is the prior's ``known`` level. One point per
  family learns that family's level and nothing else.
* **cells**: each image size a family was measured at has its own small deviation (prior sd
  ``sigma`` x :data:`CELL_SHARE`): where a family's measurements are as noisy as its level is
  small, another size of it gets the family's level without what belongs to the measured size.
* **slopes** on log pixels, log steps and log batch (:data:`SLOPE_PRIOR_SD`: shrunk toward the
  prior model's own scaling), learned only from variation *within* a family (each family's
  values centred on its own mean): families that differ in level, in order of their size, never
  pass for a slope. Each slope is tried by leaving one measurement out at a time and kept only
  where it predicts the held-out measurements clearly better than the levels alone (error at
  most :data:`KEEP_RATIO` of theirs; :attr:`Calibration.slopes_kept`, :attr:`Calibration.check`).
* **interval**: the posterior predictive spread ``z * sqrt(sigma_post^2 + z' Cov z)`` with
  ``sigma_post`` pooling the prior ``sigma`` (:data:`SIGMA_PRIOR_DOF` pseudo-points) with the
  calibrated residuals: it narrows only as far as the evidence supports.

Measurements may count the device's total energy (``energy_total_j``) or its dynamic energy,
idle power excluded (``energy_dynamic_j``): a dynamic one is compared with the prior's dynamic
prediction, as a total (measured dynamic + the prior's idle power x predicted time).

Example:
    >>> import numpy as np
    >>> from mlflow_energy.predict.calibrate import fit_regression
    >>> r = np.log([1.2, 1.2]); fams = np.array(["sd2", "sd2"])
    >>> v = np.array([[12.5, 3.0, 0.0], [13.9, 3.0, 0.0]])
    >>> coef, cov, names = fit_regression(r, fams, v, kept=[], tau=0.2, sigma=0.01)
    >>> names
    ['setup', 'family:sd2', 'cell:sd2|12.5000', 'cell:sd2|13.9000']
    >>> round(float(coef[0] + coef[1] + coef[2]), 3)  # log 1.2 = 0.182 at the first size
    0.182
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError, MissingColumnError
from mlflow_energy.fit.scope import seen_of
from mlflow_energy.fit.validation import unseen_setup_width
from mlflow_energy.predict.calibration import SLOPE_VARS, Z90, Calibration, cell_names, slope_values

if TYPE_CHECKING:
    from mlflow_energy.fit import EnergyModel

#: Prior spread of a setup's slope corrections (per log pixel, per log step, per log batch size):
#: harnesses of one GPU generation scale alike; a 20% change from 512 to 1024 px is 0.16 per log pixel.
SLOPE_PRIOR_SD: dict[str, float] = {"size": 0.2, "steps": 0.1, "batch": 0.1}
#: How much of the between-setup spread ``tau`` one family's level may take on its own.
SETUP_SHARE = 1.0
FAMILY_SHARE = 1.0
#: Prior sd of a family's own deviation at one image size (a cell), as a share of the within-setup
#: noise ``sigma``: measurements at one size tell the family's level at that size; another size of the
#: family gets the level without that size's own part (how the prior's error changes with size differs
#: by family, by about as much as one more configuration's noise).
CELL_SHARE = 1.0
#: Pseudo-points of the prior within-setup noise when pooling it with calibrated residuals.
SIGMA_PRIOR_DOF = 4.0
#: A slope is kept when it brings the leave-one-out mean |log error| down to this fraction of the
#: levels' or less: with four measurements of one family whose sizes differ only by 3% noise, a
#: slope lowers it by chance half the time, below 0.6 about one time in ten; a true 20% change
#: from 512 to 1024 px brings it to 0.12-0.39.
KEEP_RATIO = 0.6
#: Measured-energy columns a calibration file may give (J per image), and their scope.
MEASURED_COLUMNS: dict[str, str] = {"energy_total_j": schema.SCOPE_TOTAL, "energy_dynamic_j": schema.SCOPE_DYNAMIC}


# ============================================================================ the prior's spreads
def unseen_setup_half(model: EnergyModel) -> float:
    """Log half-width for a setup the model has not seen (:func:`~mlflow_energy.fit.validation.unseen_setup_width`)."""
    return unseen_setup_width(model.interval)


def prior_spreads(model: EnergyModel) -> tuple[float, float]:
    """``(tau, sigma)``: between-setup and within-setup sd of log residuals.

    ``tau`` from the unseen-setup 90% width; ``sigma`` the spread across one family's configs in a
    setup left out (:attr:`~mlflow_energy.fit.EnergyModel.within_setup_sd`) where fit measured
    it, else from the ``known`` width (leave one config out: narrower than what a new setup shows)."""
    tau = unseen_setup_half(model) / Z90
    sigma = float(getattr(model, "within_setup_sd", float("nan")))
    if not (math.isfinite(sigma) and sigma > 0):
        known = model.interval.get("known", float("nan"))
        sigma = known / Z90 if isinstance(known, (int, float)) and math.isfinite(known) and known > 0 else tau / 3
    return max(tau, 1e-3), max(min(sigma, tau), 1e-3)


def pooled_sigma(r: np.ndarray, fams: np.ndarray, sigma: float) -> float:
    """The prior ``sigma`` pooled with the spread within the measured families (their own means
    removed), :data:`SIGMA_PRIOR_DOF` pseudo-points for the prior: a setup noisier than the prior
    expects shrinks its family levels more."""
    names = sorted(set(fams))
    dof = len(r) - len(names)
    if dof <= 0:
        return sigma
    ss = float(sum(((r[fams == f] - r[fams == f].mean()) ** 2).sum() for f in names))
    return math.sqrt((SIGMA_PRIOR_DOF * sigma**2 + ss) / (SIGMA_PRIOR_DOF + dof))


# ============================================================================ the regression
def _centred(fams: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Each row's :data:`SLOPE_VARS` minus its family's mean, and the means."""
    refs = {f: values[fams == f].mean(axis=0).tolist() for f in sorted(set(fams))}
    centred = values - np.array([refs[f] for f in fams]).reshape(values.shape)
    return centred, refs


def fit_regression(r: np.ndarray, fams: np.ndarray, values: np.ndarray, *, kept: list[str], tau: float,
                   sigma: float, family_sd: float | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Posterior mean and covariance of ``setup``, ``family:<f>`` and ``slope:<v>`` (``v`` in ``kept``).

    Slopes see each family's values centred on its own mean: only within-family variation moves them.
    """
    names_f = sorted(set(fams))
    centred, _ = _centred(fams, values)
    cells = cell_names(fams, values)
    names = ["setup", *(f"family:{f}" for f in names_f), *(f"slope:{v}" for v in kept), *sorted(set(cells))]
    z = np.zeros((len(r), len(names)))
    z[:, 0] = 1.0
    for j, f in enumerate(names_f):
        z[:, 1 + j] = fams == f
    for j, v in enumerate(kept):
        z[:, 1 + len(names_f) + j] = centred[:, SLOPE_VARS.index(v)]
    for j, c in enumerate(names[1 + len(names_f) + len(kept):]):
        z[:, 1 + len(names_f) + len(kept) + j] = cells == c
    fsd = tau * FAMILY_SHARE if family_sd is None else family_sd
    sd = np.r_[tau * SETUP_SHARE, np.full(len(names_f), fsd), [SLOPE_PRIOR_SD[v] for v in kept],
               np.full(len(names) - 1 - len(names_f) - len(kept), sigma * CELL_SHARE)]
    cov = np.linalg.inv(z.T @ z / sigma**2 + np.diag(1.0 / sd**2))
    coef = cov @ z.T @ r / sigma**2
    return coef, cov, names


def _family_sd(r: np.ndarray, fams: np.ndarray, tau: float, sigma: float) -> float:
    """The family levels' prior sd: ``tau`` x :data:`FAMILY_SHARE`, or the spread the measured
    families show (their mean residuals' sd, less the noise) when at least three were measured."""
    base = tau * FAMILY_SHARE
    names = sorted(set(fams))
    if len(names) < 3:
        return base
    means = np.array([r[fams == f].mean() for f in names])
    noise = np.mean([sigma**2 / (fams == f).sum() for f in names])
    return max(base, math.sqrt(max(float(means.var(ddof=1)) - noise, 0.0)))


def _predict(r: np.ndarray, fams: np.ndarray, values: np.ndarray, train: np.ndarray, test: int, *,
             kept: list[str], tau: float, sigma: float, family_sd: float) -> float:
    """The log correction of row ``test`` from the rows in ``train``."""
    coef, _, names = fit_regression(r[train], fams[train], values[train], kept=kept, tau=tau, sigma=sigma,
                                    family_sd=family_sd)
    _, refs = _centred(fams[train], values[train])
    out = coef[0]
    f = fams[test]
    if f in refs:
        out += coef[names.index(f"family:{f}")]
        for v in kept:
            k = SLOPE_VARS.index(v)
            out += coef[names.index(f"slope:{v}")] * (values[test, k] - refs[f][k])
        cell = cell_names(fams[test:test + 1], values[test:test + 1])[0]
        if cell in names:
            out += coef[names.index(cell)]
    return float(out)


def loo_error(r: np.ndarray, fams: np.ndarray, values: np.ndarray, *, kept: list[str], tau: float, sigma: float,
              family_sd: float) -> float:
    """Mean |log error| of each measurement predicted from the others (nan with one measurement)."""
    n = len(r)
    if n < 2:
        return float("nan")
    errs = [abs(r[i] - _predict(r, fams, values, np.arange(n) != i, i, kept=kept, tau=tau, sigma=sigma,
                                family_sd=family_sd)) for i in range(n)]
    return float(np.mean(errs))


def choose_slopes(r: np.ndarray, fams: np.ndarray, values: np.ndarray, *, tau: float, sigma: float,
                  family_sd: float) -> tuple[list[str], dict[str, float]]:
    """The slopes that predict held-out measurements clearly better than the levels alone (LOO error
    at most :data:`KEEP_RATIO` of the best so far), tried one at a time (in :data:`SLOPE_VARS`
    order) on top of those already kept; and each model's LOO error.

    Only a variable that varies within some family is tried."""
    kept: list[str] = []
    best = loo_error(r, fams, values, kept=kept, tau=tau, sigma=sigma, family_sd=family_sd)
    check = {"levels": best}
    for k, v in enumerate(SLOPE_VARS):
        varies = any(np.ptp(values[fams == f, k]) > 1e-9 for f in set(fams))
        if not varies or not math.isfinite(best):
            continue
        err = loo_error(r, fams, values, kept=[*kept, v], tau=tau, sigma=sigma, family_sd=family_sd)
        check["+".join(["levels", *kept, v])] = err
        if err <= KEEP_RATIO * best:
            kept, best = [*kept, v], err
    return kept, check


# ============================================================================ fitting
def measured_energy(data: pd.DataFrame) -> tuple[np.ndarray, str, str]:
    """``(J per image, column, scope)`` of the measurements: ``energy_total_j`` or ``energy_dynamic_j``.

    Raises:
        ConfigError: neither or both columns, or a value that is not a number > 0.
    """
    given = [c for c in MEASURED_COLUMNS if c in data.columns]
    expected = (f"the predictor's input columns ({', '.join(schema.PREDICTOR_INPUTS)}) plus energy_total_j (the "
                "device's total J per image) or energy_dynamic_j (idle power excluded)")
    if not given:
        raise MissingColumnError(["energy_total_j"], expected)
    if len(given) > 1:
        raise ConfigError("columns", " and ".join(given), f"one measured-energy column, not both: {expected}")
    col = given[0]
    meas = pd.to_numeric(data[col], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(meas) & (meas > 0))
    if bad.any():
        i = int(np.argmax(bad))
        value = data[col].iloc[i]
        raise ConfigError(col, value.item() if isinstance(value, np.generic) else value,
                          f"a number > 0 (J per image), row {i}")
    return meas, col, MEASURED_COLUMNS[col]


def fit_calibration(model: EnergyModel, data: pd.DataFrame, *, name: str,
                    calibrations: dict[str, Calibration] | None = None) -> Calibration:
    """A :class:`Calibration` of ``model`` from the user's measurements.

    ``data``: the predictor's input columns plus ``energy_total_j`` or ``energy_dynamic_j`` (J per image, > 0).

    Raises:
        ConfigError: a missing or bad column or value (row, column, value, what is allowed).
    """
    from mlflow_energy.predict.frame import predict_frame

    if not isinstance(name, str) or not name.strip() or name in model.sources:
        raise ConfigError("setup", name, "a new name for this setup (not one of the training sources "
                          + ", ".join(model.sources) + ")")
    data = pd.DataFrame(data).reset_index(drop=True)
    missing = [c for c in schema.PREDICTOR_INPUTS if c not in data.columns]
    if missing:
        raise MissingColumnError(missing, "the predictor's input columns " + ", ".join(schema.PREDICTOR_INPUTS)
                                 + " plus energy_total_j or energy_dynamic_j")
    if len(data) == 0:
        raise ConfigError("rows", 0, "at least one measurement")
    meas, col, scope = measured_energy(data)
    inputs = data.drop(columns=[c for c in (*MEASURED_COLUMNS, "setup") if c in data.columns])
    # the user's own families and sizes are what calibration is for: measured rows are never refused
    pred = predict_frame(model, inputs, calibrations=calibrations, allow_extrapolation=True)
    total = pred["energy_total_j"].to_numpy(dtype=float)
    if scope == schema.SCOPE_DYNAMIC:  # as a total: the measured dynamic energy + the prior's idle share
        meas = meas + (total - pred["energy_dynamic_j"].to_numpy(dtype=float))
    r = np.log(meas) - np.log(total)
    fams = inputs["model"].astype(str).to_numpy()
    values = slope_values(inputs["height"], inputs["width"], inputs["steps"], inputs_batch(inputs))
    tau, sigma = prior_spreads(model)
    sigma = pooled_sigma(r, fams, sigma)
    family_sd = _family_sd(r, fams, tau, sigma)
    kept, check = choose_slopes(r, fams, values, tau=tau, sigma=sigma, family_sd=family_sd)
    coef, cov, names = fit_regression(r, fams, values, kept=kept, tau=tau, sigma=sigma, family_sd=family_sd)
    _, refs = _centred(fams, values)
    cal = Calibration(name.strip(), names, [float(c) for c in coef], cov.tolist(), refs,
                      {f: int((fams == f).sum()) for f in refs}, sigma**2, unseen_setup_half(model), len(r),
                      sorted(set(pred.attrs["hardware"])), kept, check, scope)
    cal.seen = seen_of(inputs.assign(hardware=pred.attrs["rows_hardware"]))
    cal.slope_prior_sd = dict(SLOPE_PRIOR_SD)
    z, _ = cal.design(fams, values)
    fitted = z @ coef
    # within-setup noise: the prior's, pooled with what the calibrated residuals show
    dof = max(len(r) - len(refs) - len(kept), 0)
    cal.sigma2 = (SIGMA_PRIOR_DOF * sigma**2 + float(((r - fitted) ** 2).sum())) / (SIGMA_PRIOR_DOF + dof)
    return cal


def inputs_batch(df: pd.DataFrame) -> np.ndarray:
    """Images per pipeline call of each row (validated by the predictor before)."""
    return pd.to_numeric(df["batch_size"], errors="coerce").fillna(1).to_numpy(dtype=float)


def read_measurements(path: str) -> pd.DataFrame:
    """A CSV or JSONL file of measurements (the predictor's inputs plus ``energy_total_j`` or ``energy_dynamic_j``)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ConfigError("file", path, "a CSV or JSONL file of measurements")
    if p.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        try:
            return pd.read_json(p, lines=True)
        except ValueError as exc:
            raise ConfigError("file", path, f"JSON lines, one object per measurement ({exc})") from None
    if p.suffix.lower() != ".csv":
        raise ConfigError("file", path, "a .csv or .jsonl file")
    return pd.read_csv(p)


def runs_measurements(experiment: str) -> pd.DataFrame:
    """The measurement runs of ``experiment`` as calibration rows (their config and total J per image)."""
    from mlflow_energy.fit import runs_frame

    f = runs_frame(experiment)
    if len(f) == 0:
        raise ConfigError("experiment", experiment, "an experiment with measurement runs")
    out = pd.DataFrame({c: f[c] for c in ("model", "height", "width", "steps", "guidance_scale", "precision",
                                          "batch_size")})
    out["hardware"] = f["hardware_raw"] if "hardware_raw" in f.columns else f["hardware"]
    out["energy_total_j"] = f["energy_total"]
    if schema.P_CFG_PASSES in f.columns:
        out["cfg_passes"] = pd.to_numeric(f[schema.P_CFG_PASSES], errors="coerce")
    return out.reset_index(drop=True)


# ============================================================================ the Python API
def calibrate(data: pd.DataFrame | str, *, model_uri: str, registered_model: str, setup: str | None = None,
              experiment: str = schema.EXPERIMENT_CALIBRATION) -> tuple[Any, Calibration]:
    """Calibrate a registered energy model to a setup and register the result (alias ``@champion``).

    ``data``: a DataFrame, or the path of a CSV/JSONL file, of the predictor's input columns plus
    ``energy_total_j`` or ``energy_dynamic_j``. The new version wraps the prior model with the
    calibrations it already had plus this one (same name: replaced). A row names it with
    ``setup=<name>``; a row without a setup gets it when it is the only calibration of the row's
    hardware.

    Returns ``(model version, calibration)``.

    Example:
        >>> import mlflow_energy                                                      # doctest: +SKIP
        >>> mv, cal = mlflow_energy.calibrate("my_runs.csv", model_uri="models:/energy@champion",  # doctest: +SKIP
        ...                                   registered_model="energy", setup="lab-h100")
    """
    import mlflow

    from mlflow_energy.predict.pyfunc import load_predictor, register_model

    frame = read_measurements(data) if isinstance(data, str) else pd.DataFrame(data)
    model, cals = load_predictor(model_uri)
    name = setup or f"setup-{len(cals) + 1}"
    cal = fit_calibration(model, frame, name=name)
    cals = {**cals, cal.name: cal}
    example = frame.drop(columns=[c for c in MEASURED_COLUMNS if c in frame.columns]).head(2).copy()
    example["setup"] = cal.name
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"calibrate-{cal.name}"):
        mlflow.log_params({schema.P_CALIBRATION_SETUP: cal.name, schema.P_CALIBRATION_PRIOR: model_uri,
                           schema.P_CALIBRATION_FAMILIES: ",".join(sorted(cal.families))[:500],
                           schema.P_CALIBRATION_SLOPES: ",".join(cal.slopes_kept) or "none",
                           schema.P_CALIBRATION_SCOPE: cal.measured_scope})
        mlflow.log_metrics({schema.M_CALIBRATION_POINTS: cal.n_points,
                            schema.M_CALIBRATION_SIGMA: math.sqrt(cal.sigma2),
                            schema.M_CALIBRATION_SETUP_OFFSET: cal.setup_offset})
        mv = register_model(model, example.reset_index(drop=True), registered_model, calibrations=cals)
    return mv, cal

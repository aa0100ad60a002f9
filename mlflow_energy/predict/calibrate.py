"""Calibration: adapt a registered energy model to the user's own setup from a few measurements.

A *setup* is what the training data did not see: another harness, GPU board, driver, energy
scope. Its error against the prior model is a level offset in log space (and, with a different
saturation, a slope), partly shared by every family of the setup and partly each family's own.
One Bayesian linear regression of the log residuals ``r`` (measured / prior) over all the
measurements of the setup, prior mean 0 (the prior model is right on average):

* **level**: a setup-wide offset (prior sd ``tau``, the prior's between-setup spread: its
  ``unseen_setup`` interval level, or the widest stored level until that exists) plus a per-family
  deviation (sd ``tau`` x :data:`FAMILY_SHARE`); ``sigma``, the within-setup noise, is the prior's
  ``known`` level;
* **slopes** of ``r`` on log FLOPs per image and on log batch size: setup-wide (prior sds
  :data:`SLOPE_PRIOR_SD`, :data:`BATCH_SLOPE_PRIOR_SD`) plus per-family deviations (the same x
  :data:`FAMILY_SHARE`). The shared slopes let one measurement per family, at different sizes or
  batches, show how the setup scales, which no family alone can;
* **interval**: the posterior predictive spread ``z * sqrt(sigma_post^2 + z' Cov z)`` with
  ``sigma_post`` pooling the prior ``sigma`` (:data:`SIGMA_PRIOR_DOF` pseudo-points) with the
  calibrated residuals: it narrows only as far as the evidence supports.

Families of the setup without a measurement move by the mean correction of the measured ones
and keep the unseen-setup width (level ``calibrated_setup``).

Example:
    >>> import pandas as pd
    >>> from mlflow_energy.predict.calibrate import Calibration, FamilyCorrection
    >>> fc = FamilyCorrection([0.1, 0.0, 0.0], 30.0, 0.0, [[0.01, 0, 0], [0, 0.01, 0], [0, 0, 0.01]], 3)
    >>> c = Calibration("lab", {"sd2": fc}, 0.1, 0.05, 0.5, 3)
    >>> d, half, level = c.apply(pd.Series(["sd2", "sdxl"]).to_numpy(), [30.0, 31.0])
    >>> [round(float(v), 2) for v in d], list(level)
    ([0.1, 0.1], ['calibrated', 'calibrated_setup'])
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit.validation import LEVEL_UNSEEN_SETUP

if TYPE_CHECKING:
    from mlflow_energy.fit import EnergyModel

Z90 = 1.6449  # two-sided 90%: the intervals' nominal level
#: Prior spread of a setup's slope correction (per log FLOP). Resolution and step scaling vary
#: little between harnesses of one GPU generation; 0.1 lets 2+ points move the slope when they
#: span a wide FLOP range and barely when they do not.
SLOPE_PRIOR_SD = 0.1
#: Prior spread of a setup's batch exponent correction (per log batch size): on H100 the measured
#: batch 1 -> 16 change of large models differs from a FLOP law's by about 0.25 in log, ~0.1 per log batch.
BATCH_SLOPE_PRIOR_SD = 0.1
#: How the between-setup spread ``tau`` splits between what moves every family of a setup alike
#: (``SETUP_SHARE``) and what moves one family (``FAMILY_SHARE``); slopes split the same way.
SETUP_SHARE = 1.0
FAMILY_SHARE = 0.5
#: Pseudo-points of the prior within-setup noise when pooling it with calibrated residuals.
SIGMA_PRIOR_DOF = 4.0
LEVEL_CALIBRATED = "calibrated"
LEVEL_CALIBRATED_SETUP = "calibrated_setup"


@dataclass
class FamilyCorrection:
    """One family's correction in log J: ``coef . (1, x - x_ref, log batch - b_ref)`` (x = log FLOPs per image).

    ``cov``: the posterior covariance of ``coef`` (3 x 3), for the interval."""

    coef: list[float]
    x_ref: float
    b_ref: float
    cov: list[list[float]]
    n: int

    @property
    def offset(self) -> float:
        return float(self.coef[0])

    @property
    def slope(self) -> float:
        return float(self.coef[1])

    @property
    def batch_slope(self) -> float:
        return float(self.coef[2])


@dataclass
class Calibration:
    """The corrections of one setup; :meth:`apply` gives per-row log shifts, half-widths and levels."""

    name: str
    families: dict[str, FamilyCorrection]
    setup_offset: float  # for the setup's families without a measurement
    sigma2: float  # within-setup noise after calibration (pooled)
    unseen_half: float  # the unseen-setup half-width of the prior (families not measured)
    n_points: int
    hardware: list[str] = field(default_factory=list)

    def apply(self, families: np.ndarray, x: Any, log_batch: Any | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(log shift, log half-width, level)`` per row."""
        x = np.asarray(x, dtype=float)
        lb = np.zeros(len(x)) if log_batch is None else np.asarray(log_batch, dtype=float)
        n = len(families)
        shift = np.full(n, self.setup_offset)
        half = np.full(n, self.unseen_half)
        level = np.full(n, LEVEL_CALIBRATED_SETUP, dtype=object)
        for fam, c in self.families.items():
            m = families == fam
            if not m.any():
                continue
            z = np.column_stack([np.ones(int(m.sum())), x[m] - c.x_ref, lb[m] - c.b_ref])
            shift[m] = z @ np.asarray(c.coef)
            var = self.sigma2 + np.einsum("ij,jk,ik->i", z, np.asarray(c.cov), z)
            half[m] = np.minimum(Z90 * np.sqrt(var), self.unseen_half)
            level[m] = LEVEL_CALIBRATED
        return shift, half, level

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        fams = {k: FamilyCorrection(**{f: v[f] for f in ("coef", "x_ref", "b_ref", "cov", "n")})
                for k, v in d["families"].items()}
        return cls(d["name"], fams, d["setup_offset"], d["sigma2"], d["unseen_half"], d["n_points"],
                   list(d.get("hardware", [])))


def calibrations_to_json(cals: dict[str, Calibration]) -> str:
    return json.dumps({k: c.to_dict() for k, c in cals.items()})


def calibrations_from_json(text: str) -> dict[str, Calibration]:
    return {k: Calibration.from_dict(v) for k, v in json.loads(text).items()}


# ============================================================================ the prior's spreads
def unseen_setup_half(model: EnergyModel) -> float:
    """Log half-width for a setup the model has not seen: the model's ``unseen_setup`` level
    (leave one setup out) when fit stored it, else the widest level it stored (conservative)."""
    if LEVEL_UNSEEN_SETUP in model.interval and math.isfinite(model.interval[LEVEL_UNSEEN_SETUP]):
        return float(model.interval[LEVEL_UNSEEN_SETUP])
    widths = [v for v in model.interval.values() if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(max(widths)) if widths else math.log(2.0)


def prior_spreads(model: EnergyModel) -> tuple[float, float]:
    """``(tau, sigma)``: between-setup and within-setup sd of log residuals, from the 90% widths."""
    tau = unseen_setup_half(model) / Z90
    known = model.interval.get("known", float("nan"))
    sigma = known / Z90 if isinstance(known, (int, float)) and math.isfinite(known) and known > 0 else tau / 3
    return max(tau, 1e-3), max(min(sigma, tau), 1e-3)


# ============================================================================ fitting
def fit_calibration(model: EnergyModel, data: pd.DataFrame, *, name: str,
                    calibrations: dict[str, Calibration] | None = None) -> Calibration:
    """A :class:`Calibration` of ``model`` from the user's measurements.

    ``data``: the predictor's input columns plus ``energy_total_j`` (J per image, > 0).

    Raises:
        ConfigError: a missing or bad column or value (row, column, value, what is allowed).
    """
    from mlflow_energy.predict.frame import predict_frame

    if not isinstance(name, str) or not name.strip() or name in model.sources:
        raise ConfigError("setup", name, "a new name for this setup (not one of the training sources "
                          + ", ".join(model.sources) + ")")
    data = pd.DataFrame(data).reset_index(drop=True)
    if "energy_total_j" not in data.columns:
        raise ConfigError("columns", "energy_total_j", "the predictor's input columns plus energy_total_j "
                          "(measured J per image)")
    if len(data) == 0:
        raise ConfigError("rows", 0, "at least one measurement")
    meas = pd.to_numeric(data["energy_total_j"], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(meas) & (meas > 0))
    if bad.any():
        i = int(np.argmax(bad))
        value = data["energy_total_j"].iloc[i]
        raise ConfigError("energy_total_j", value.item() if isinstance(value, np.generic) else value,
                          f"a number > 0 (J per image), row {i}")
    inputs = data.drop(columns=[c for c in ("energy_total_j", "setup") if c in data.columns])
    pred = predict_frame(model, inputs, calibrations=calibrations)
    r = np.log(meas) - np.log(pred["energy_total_j"].to_numpy(dtype=float))
    x = np.log(pred.attrs["flops_total"])
    fams = inputs["model"].astype(str).to_numpy()
    lb = np.log(inputs_batch(inputs))
    tau, sigma = prior_spreads(model)
    corrections, fitted, n_par, setup_offset = _joint_regression(r, x, lb, fams, tau=tau, sigma=sigma)
    # within-setup noise: the prior's, pooled with what the calibrated residuals show
    dof = max(len(r) - n_par, 0)
    ssr = float(((r - fitted) ** 2).sum())
    sigma2 = (SIGMA_PRIOR_DOF * sigma**2 + ssr) / (SIGMA_PRIOR_DOF + dof)
    return Calibration(name.strip(), corrections, setup_offset, sigma2, unseen_setup_half(model), len(r),
                       sorted(set(pred.attrs["hardware"])))


def _joint_regression(r: np.ndarray, x: np.ndarray, lb: np.ndarray, fams: np.ndarray, *, tau: float, sigma: float
                      ) -> tuple[dict[str, FamilyCorrection], np.ndarray, int, float]:
    """One Bayesian linear regression of the log residuals of a setup, every family together.

    ``r = u + d_f + (s + s_f) (x - x_ref) + (t + t_f) (log batch - b_ref) + noise``: a setup-wide
    offset ``u`` and slopes ``s``, ``t`` (what the setup does to every family: its energy scope,
    its saturation), and per family a deviation ``d_f`` and slope deviations. The shared terms let
    one point per family, at different sizes and batches, tell a slope that no family alone can.
    Returns ``(corrections, fitted, parameters identified, setup offset)``.
    """
    names = sorted(set(fams))
    k = len(names)
    x_ref, b_ref = float(x.mean()), float(lb.mean())
    dx, db = x - x_ref, lb - b_ref
    idx = np.array([names.index(f) for f in fams])
    n = len(r)
    # columns: u, s, t, then d_f, s_f, t_f per family
    z = np.zeros((n, 3 + 3 * k))
    z[:, 0], z[:, 1], z[:, 2] = 1.0, dx, db
    z[np.arange(n), 3 + 3 * idx] = 1.0
    z[np.arange(n), 4 + 3 * idx] = dx
    z[np.arange(n), 5 + 3 * idx] = db
    sd = np.r_[tau * SETUP_SHARE, SLOPE_PRIOR_SD, BATCH_SLOPE_PRIOR_SD,
               np.tile([tau * FAMILY_SHARE, SLOPE_PRIOR_SD * FAMILY_SHARE, BATCH_SLOPE_PRIOR_SD * FAMILY_SHARE], k)]
    cov = np.linalg.inv(z.T @ z / sigma**2 + np.diag(1.0 / sd**2))
    coef = cov @ z.T @ r / sigma**2
    corrections: dict[str, FamilyCorrection] = {}
    for j, fam in enumerate(names):
        a = np.zeros((3, len(coef)))
        a[0, [0, 3 + 3 * j]] = 1.0
        a[1, [1, 4 + 3 * j]] = 1.0
        a[2, [2, 5 + 3 * j]] = 1.0
        corrections[fam] = FamilyCorrection([float(v) for v in a @ coef], x_ref, b_ref, (a @ cov @ a.T).tolist(),
                                            int((idx == j).sum()))
    n_par = 1 + int(np.ptp(dx) > 1e-6) + int(np.ptp(db) > 1e-6) + (k - 1)
    return corrections, z @ coef, n_par, float(coef[0])


def inputs_batch(df: pd.DataFrame) -> np.ndarray:
    """Images per pipeline call of each row (validated by the predictor before)."""
    return pd.to_numeric(df["batch_size"], errors="coerce").fillna(1).to_numpy(dtype=float)


def read_measurements(path: str) -> pd.DataFrame:
    """A CSV or JSONL file of measurements (the predictor's inputs plus ``energy_total_j``)."""
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
    ``energy_total_j``. The new version wraps the prior model with the calibrations it already
    had plus this one (same name: replaced); predict with ``setup=<name>`` to use it.

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
    example = frame.drop(columns=[c for c in ("energy_total_j",) if c in frame.columns]).head(2).copy()
    example["setup"] = cal.name
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"calibrate-{cal.name}"):
        mlflow.log_params({schema.P_CALIBRATION_SETUP: cal.name, schema.P_CALIBRATION_PRIOR: model_uri,
                           schema.P_CALIBRATION_FAMILIES: ",".join(sorted(cal.families))[:500]})
        mlflow.log_metrics({schema.M_CALIBRATION_POINTS: cal.n_points,
                            schema.M_CALIBRATION_SIGMA: math.sqrt(cal.sigma2),
                            schema.M_CALIBRATION_SETUP_OFFSET: cal.setup_offset})
        mv = register_model(model, example.reset_index(drop=True), registered_model, calibrations=cals)
    return mv, cal

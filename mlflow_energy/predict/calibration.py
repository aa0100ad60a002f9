"""A setup's calibration: what :func:`~mlflow_energy.predict.calibrate.fit_calibration` learned, and how it applies.

A *setup* is what the training data did not see: another harness, GPU board, driver, energy
scope. Its calibration is a correction of the prior model's log energy, one Bayesian linear
regression over the setup's measurements:

``log(measured / prior) = setup + family_f + sum_v slope_v * (v - ref_{f,v}) + noise``

* ``setup``: what moves every family of the setup alike (its energy scope, its board);
* ``family_f``: each measured family's own level, shrunk toward the setup's;
* ``slope_v``, for ``v`` in :data:`SLOPE_VARS` (log pixels, log steps, log batch): how the setup
  scales differently from the prior, learned only from variation *within* a family (``ref_{f,v}``
  is the mean of ``v`` over family ``f``'s measurements), so differences between families, which
  are levels, never pass for a slope. A slope is kept only where leaving one measurement out
  shows it predicts better than the levels alone (:attr:`Calibration.slopes_kept`).

This module holds only the fitted object (no fitting, no MLflow), so the predictor can apply a
calibration without importing what fits one.

Example:
    >>> import numpy as np
    >>> c = Calibration("lab", ["setup", "family:sd2"], [0.1, 0.05], [[0.01, 0.0], [0.0, 0.01]],
    ...                 {"sd2": [12.5, 3.0, 0.0]}, {"sd2": 1}, 0.0025, 0.5, 1)
    >>> shift, half, level = c.apply(np.array(["sd2", "sdxl"]), np.array([[12.5, 3.0, 0.0]] * 2))
    >>> [round(float(s), 2) for s in shift], list(level)
    ([0.15, 0.1], ['calibrated', 'calibrated_setup'])
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["LEVEL_CALIBRATED", "LEVEL_CALIBRATED_SETUP", "SLOPE_VARS", "Z90", "Calibration", "calibrations_from_json",
           "calibrations_to_json", "cell_names", "slope_values"]

Z90 = 1.6449  # two-sided 90%: the intervals' nominal level
#: The variables a calibration's slopes act on: log pixels per image, log steps, log batch size.
SLOPE_VARS: tuple[str, ...] = ("size", "steps", "batch")
LEVEL_CALIBRATED = "calibrated"
LEVEL_CALIBRATED_SETUP = "calibrated_setup"


def cell_names(families: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``cell:<family>|<log pixels>`` of each row: one family at one image size."""
    values = np.asarray(values, dtype=float).reshape(len(families), len(SLOPE_VARS))
    return np.array([f"cell:{f}|{v:.4f}" for f, v in zip(np.asarray(families).astype(str), values[:, 0],
                                                          strict=True)], dtype=object)


def slope_values(height: Any, width: Any, steps: Any, batch_size: Any) -> np.ndarray:
    """``(n, 3)`` array of :data:`SLOPE_VARS` for the rows: log(height x width), log steps, log batch.

    Example:
        >>> slope_values([512], [512], [20], [1]).round(3).tolist()
        [[12.477, 2.996, 0.0]]
    """
    h, w = np.asarray(height, dtype=float), np.asarray(width, dtype=float)
    return np.column_stack([np.log(h * w), np.log(np.asarray(steps, dtype=float)),
                            np.log(np.asarray(batch_size, dtype=float))])


@dataclass
class Calibration:
    """The fitted correction of one setup; :meth:`apply` gives per-row log shifts, half-widths and levels.

    ``names``/``coef``/``cov``: the regression's coefficients (``setup``, ``family:<name>``,
    ``slope:<var>``) and their posterior covariance; ``refs``: each measured family's mean of
    :data:`SLOPE_VARS`; ``counts``: measurements per family; ``sigma2``: the within-setup noise
    after calibration; ``unseen_half``: the prior's unseen-setup log half-width (families without a
    measurement keep it); ``check``: the leave-one-measurement-out mean |log error| of each model
    tried (``levels``, ``levels+size``, ...); ``measured_scope``: ``total`` or ``dynamic``, what
    the measurements counted; ``seen``: what the measurements cover (a row of this setup may ask
    within it or within what the model has seen).
    """

    name: str
    names: list[str]
    coef: list[float]
    cov: list[list[float]]
    refs: dict[str, list[float]]
    counts: dict[str, int]
    sigma2: float
    unseen_half: float
    n_points: int
    hardware: list[str] = field(default_factory=list)
    slopes_kept: list[str] = field(default_factory=list)
    check: dict[str, float] = field(default_factory=dict)
    measured_scope: str = "total"
    seen: dict[str, Any] = field(default_factory=dict)  # what its measurements cover (fit.scope.seen_of)
    #: prior sd of each slope correction: a slope not kept is still uncertain by this much
    slope_prior_sd: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ what it learned
    @property
    def families(self) -> list[str]:
        """The families measured on this setup."""
        return sorted(self.refs)

    def _coef(self, name: str) -> float:
        return float(self.coef[self.names.index(name)]) if name in self.names else 0.0

    @property
    def setup_offset(self) -> float:
        """The setup-wide log correction (families without a measurement move by it)."""
        return self._coef("setup")

    def family_offset(self, family: str) -> float:
        """A measured family's log correction at its measurements' mean size, steps and batch."""
        return self.setup_offset + self._coef(f"family:{family}")

    def slope(self, var: str) -> float:
        """The kept slope on one of :data:`SLOPE_VARS` (0 where not kept)."""
        return self._coef(f"slope:{var}")

    # ------------------------------------------------------------------ applying it
    def design(self, families: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(design matrix, measured-family mask)`` of rows given their family and :data:`SLOPE_VARS`."""
        families = np.asarray(families).astype(str)
        values = np.asarray(values, dtype=float).reshape(len(families), len(SLOPE_VARS))
        z = np.zeros((len(families), len(self.names)))
        measured = np.isin(families, list(self.refs))
        cells = cell_names(families, values) if any(n.startswith("cell:") for n in self.names) else None
        for j, name in enumerate(self.names):
            if name == "setup":
                z[:, j] = 1.0
            elif name.startswith("family:"):
                z[:, j] = families == name[len("family:"):]
            elif name.startswith("cell:") and cells is not None:
                z[:, j] = cells == name
        for fam, ref in self.refs.items():
            m = families == fam
            if not m.any():
                continue
            for k, var in enumerate(SLOPE_VARS):
                if f"slope:{var}" in self.names:
                    z[m, self.names.index(f"slope:{var}")] = values[m, k] - ref[k]
        return z, measured

    def apply(self, families: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(log shift, log half-width, level)`` per row; ``values``: the rows' :data:`SLOPE_VARS`.

        A measured family gets its level and the kept slopes, with the posterior predictive
        interval (never wider than the unseen-setup one); a family without a measurement moves by
        the setup's correction and keeps the unseen-setup width (level ``calibrated_setup``).
        """
        z, measured = self.design(families, values)
        z[~measured] = 0.0
        if "setup" in self.names:
            z[~measured, self.names.index("setup")] = 1.0
        shift = z @ np.asarray(self.coef, dtype=float)
        var = self.sigma2 + np.einsum("ij,jk,ik->i", z, np.asarray(self.cov, dtype=float), z)
        var[measured] += self._unlearned_var(np.asarray(families).astype(str), values)[measured]
        half = np.where(measured, np.minimum(Z90 * np.sqrt(var), self.unseen_half), self.unseen_half)
        level = np.where(measured, LEVEL_CALIBRATED, LEVEL_CALIBRATED_SETUP).astype(object)
        return shift, half, level

    def _unlearned_var(self, families: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Variance of the slopes not kept, away from the measured family's own sizes, steps, batch.

        A slope the measurements could not learn (one size of a family, say) is not known to be
        zero: another size of that family is as uncertain as the slope's prior says, and the
        interval widens with the distance from what was measured.
        """
        values = np.asarray(values, dtype=float).reshape(len(families), len(SLOPE_VARS))
        out = np.zeros(len(families))
        for fam, ref in self.refs.items():
            m = families == fam
            for k, var in enumerate(SLOPE_VARS):
                sd = self.slope_prior_sd.get(var, 0.0)
                if m.any() and sd > 0 and var not in self.slopes_kept and np.isfinite(ref[k]):
                    out[m] += (sd * (values[m, k] - ref[k])) ** 2
        return out

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        if "names" not in d:  # written by an earlier release: its families and offsets, no slopes
            return _from_v1(d)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _from_v1(d: dict[str, Any]) -> Calibration:
    """A calibration stored before slopes were learned within families: its family levels only."""
    fams = sorted(d["families"])
    setup = float(d["setup_offset"])
    names = ["setup", *(f"family:{f}" for f in fams)]
    coef = [setup, *(float(d["families"][f]["coef"][0]) - setup for f in fams)]
    var = [float(d["families"][f]["cov"][0][0]) for f in fams]
    cov = np.diag([min(var, default=0.0), *var]).tolist()
    refs = {f: [float("nan")] * len(SLOPE_VARS) for f in fams}
    return Calibration(d["name"], names, coef, cov, refs, {f: int(d["families"][f]["n"]) for f in fams},
                       float(d["sigma2"]), float(d["unseen_half"]), int(d["n_points"]), list(d.get("hardware", [])))


def calibrations_to_json(cals: dict[str, Calibration]) -> str:
    return json.dumps({k: c.to_dict() for k, c in cals.items()})


def calibrations_from_json(text: str) -> dict[str, Calibration]:
    return {k: Calibration.from_dict(v) for k, v in json.loads(text).items()}

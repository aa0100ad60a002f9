"""An analytic stand-in for the registered energy predictor: ``E = a * FLOPs^b`` per phase.

Not a fitted model: a clearly labelled, deterministic object that implements the predictor
contract (:data:`mlflow_energy.schema.PREDICTOR_INPUTS` -> ``PREDICTOR_OUTPUTS`` plus
``time_total_s``) from the analytical FLOP counts, for benchmarks and tests of the search that
must run in milliseconds without a fitted model. Its constants are round numbers of the right
order for a modern GPU (about 1 pJ per FLOP at fp16, fp32 twice that, larger batches cheaper
per image, 400 W while busy), not measurements.

Example:
    >>> import pandas as pd
    >>> p = AnalyticPredictor()
    >>> row = {"model": "sd2", "height": 512, "width": 512, "steps": 20, "guidance_scale": 7.5,
    ...        "precision": "fp16", "batch_size": 1, "hardware": "H100"}
    >>> out = p.predict(pd.DataFrame([row]))
    >>> bool(out["energy_total_j"][0] > 0), bool(out["time_total_s"][0] > 0)
    (True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlflow_energy import schema

PRECISION_FACTOR: dict[str, float] = {"fp16": 1.0, "bf16": 1.0, "fp32": 2.0}


class AnalyticPredictor:
    """``energy_phase = a * FLOPs_phase^b * precision factor * (0.7 + 0.3 / batch_size)``, per image.

    Attributes:
        a, b: power-law constants (J and FLOP).
        watts: average power while busy; ``time_total_s = energy_total_j / watts``.
        carbon_g_per_kwh: grid intensity for ``co2e_g`` when the input has none.
    """

    def __init__(self, a: float = 1e-12, b: float = 1.0, watts: float = 400.0, carbon_g_per_kwh: float = 475.0) -> None:
        self.a, self.b, self.watts, self.carbon = a, b, watts, carbon_g_per_kwh

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow_energy.flops import flops_frame

        df = pd.DataFrame(model_input)
        cols = ["model", "height", "width", "steps", "guidance_scale", "batch_size"]
        flops = flops_frame(df[cols + [c for c in ("cfg_passes",) if c in df.columns]].copy())
        factor = df["precision"].map(PRECISION_FACTOR).to_numpy(float) * (0.7 + 0.3 / df["batch_size"].to_numpy(float))
        out = pd.DataFrame(index=df.index)
        for phase in schema.PHASES:
            out[f"energy_{phase}_j"] = self.a * flops[f"flops_{phase}"].to_numpy(float) ** self.b * factor
        total = sum(out[f"energy_{p}_j"] for p in schema.PHASES)
        out["energy_total_j"] = total
        out["energy_total_wh"] = total / 3600.0
        out["energy_total_j_low"] = total * 0.9
        out["energy_total_j_high"] = total * 1.1
        intensity = df["carbon_intensity_g_per_kwh"] if "carbon_intensity_g_per_kwh" in df else self.carbon
        out["co2e_g"] = total / 3.6e6 * np.asarray(intensity, dtype=float)
        out["interval_level"] = "analytic"  # round constants, not a calibrated interval
        out["energy_total_j_law"] = total
        out["energy_scope"] = schema.SCOPE_TOTAL
        out["time_total_s"] = total / self.watts
        return out

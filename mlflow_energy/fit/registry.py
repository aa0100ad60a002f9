"""What a registered model version says about itself: a description and tags, and the fit's fingerprint.

The fingerprint hashes the training runs (their ids) and the fit settings, so an identical
re-fit finds the version it would add and reuses it.

Example:
    >>> import pandas as pd
    >>> fit_fingerprint(pd.DataFrame({"run_id": ["b", "a"]}), {"target": "total"}) == \\
    ...     fit_fingerprint(pd.DataFrame({"run_id": ["a", "b"]}), {"target": "total"})
    True
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from mlflow_energy import schema

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlflow_energy.fit.result import FitResult

__all__ = ["fit_fingerprint", "version_card"]


def fit_fingerprint(frame: pd.DataFrame, settings: dict[str, Any]) -> str:
    """A hash of the training runs (sorted ids) and the fit settings (16 hex digits)."""
    text = json.dumps({"runs": sorted(map(str, frame["run_id"])), "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pct(value: Any) -> str:
    return f"{float(value):.1%}" if value == value else "n/a"


def version_card(result: FitResult, *, experiment: str, fingerprint: str) -> tuple[str, dict[str, str]]:
    """``(description, tags)`` of the model version a fit registers (markdown description)."""
    frame = result.frame
    hardware = sorted(set(map(str, frame.get("hardware_raw", frame["hardware"]))))
    sources = sorted(set(map(str, frame["energy_source"]))) if "energy_source" in frame else []
    flops = frame["flops_total"].astype(float)
    flops_range = f"{flops.min():.3g} to {flops.max():.3g}"
    cv = result.cv_summary
    total = cv[cv["phase"] == schema.PHASE_TOTAL] if len(cv) else cv
    column = "mape_corrected" if result.model.corrector_used else "mape_law"
    cv_text = ", ".join(f"{r['scheme']} {_pct(r[column])}" for _, r in total.iterrows()) if len(total) else "not run"
    tags = {
        schema.T_FIT_FINGERPRINT: fingerprint,
        schema.T_MV_TRAINING_DATA: f"{experiment}: {len(frame)} runs",
        schema.T_HARDWARE: ", ".join(hardware)[:500],
        schema.T_ENERGY_SOURCE: ", ".join(sources),
        schema.T_ENERGY_SCOPE: str(result.model.energy_scope),
        schema.T_MV_FLOPS_RANGE: flops_range,
        schema.T_MV_CV_MAPE: cv_text,
    }
    families = sorted(set(map(str, frame["model"])))
    description = "\n".join([
        f"Energy per image of text-to-image diffusion inference, fitted on **{len(frame)} runs** of "
        f"experiment `{experiment}` ({result.target} energy).",
        "",
        "| | |",
        "| --- | --- |",
        f"| families | {', '.join(families)} |",
        f"| hardware | {', '.join(hardware)} |",
        f"| energy source, scope | {', '.join(sources) or 'n/a'}, {result.model.energy_scope} |",
        f"| fitted FLOPs per image | {flops_range} |",
        f"| grouped-CV MAPE of the total | {cv_text} |",
        f"| corrector | {'used' if result.model.corrector_used else 'off (law only)'} |",
        f"| law per phase | {', '.join(f'{p} {pm.law_form}' for p, pm in result.model.phases.items())} |",
        "",
        f"Fit fingerprint `{fingerprint}`: an identical re-fit reuses this version.",
    ])
    return description, tags

"""Per-family derived data, shipped so that counting FLOPs and predicting never import torch or diffusers.

``families/data/derived.json`` holds, for every registered family (tiny variants too):

- ``denoiser_calls``: denoiser evaluations per sample pass of the family's own scheduler, as
  ``{"per_step": a, "offset": c, "from_steps": s0, "first": [calls at 1 .. s0 - 1 steps]}``:
  ``calls = a * steps + c`` from ``s0`` steps on (PNDM, SD 1.5: ``steps + 1`` from 2 steps on);
- ``params``: parameter counts of the denoiser, the text encoders and the VAE (as built on the
  meta device from the shipped architecture).

Both are computed from the real diffusers schedulers and the real model classes by
:func:`compute_derived` (which imports torch and diffusers) and checked against them in
``tests/families/test_derived.py``; regenerate the file after adding a family with
``python -m mlflow_energy.families._derived``. A family missing from the file (a plugin) is
computed on first use, paying the import once.

Example:
    >>> from mlflow_energy.families._derived import denoiser_calls, params
    >>> denoiser_calls("sd1.5", 50), denoiser_calls("sd2", 50)
    (51, 50)
    >>> round(params("sd2")["denoiser"] / 1e9, 2)
    0.87
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

DATA_FILE = "derived.json"
_PROBE_STEPS = (1, 2, 3, 11, 37, 50)


@functools.cache
def _table() -> dict[str, Any]:
    path = resources.files("mlflow_energy.families") / "data" / DATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


@functools.cache
def derived(name: str) -> dict[str, Any]:
    """The derived record of family ``name`` (shipped, else computed once)."""
    table = _table()
    return table[name] if name in table else compute_derived(name)


def calls_of(record: dict[str, Any], steps: int) -> int:
    """Denoiser calls for ``steps`` steps from a ``denoiser_calls`` record."""
    if steps < record["from_steps"]:
        return int(record["first"][steps - 1])
    return int(record["per_step"] * steps + record["offset"])


def denoiser_calls(name: str, steps: int) -> int:
    """Denoiser evaluations per sample pass of family ``name``'s own scheduler for ``steps`` steps."""
    return calls_of(derived(name)["denoiser_calls"], int(steps))


def params(name: str) -> dict[str, float]:
    """``{"denoiser", "text_encoder", "vae"}`` parameter counts of family ``name``."""
    return dict(derived(name)["params"])


# ---------------------------------------------------------------------- computing (imports torch)
def scheduler_calls(scheduler: dict[str, Any], steps: int, class_name: str | None = None) -> int:
    """Timesteps the diffusers scheduler ``class_name`` (default: the family's) runs for ``steps`` steps."""
    import diffusers

    cls = getattr(diffusers, class_name or scheduler["class"])
    sched = cls.from_config(dict(scheduler.get("config", {})))
    kwargs = {"mu": 0.0} if sched.config.get("use_dynamic_shifting") else {}
    sched.set_timesteps(steps, **kwargs)
    return len(sched.timesteps)


def fit_calls(scheduler: dict[str, Any], max_first: int = 4) -> dict[str, Any]:
    """The ``denoiser_calls`` record of a scheduler: a line from the first step count it holds on."""
    probes = {n: scheduler_calls(scheduler, n) for n in (*range(1, max_first + 1), 11, 37, 50)}
    for start in range(1, max_first + 1):
        a, rem = divmod(probes[37] - probes[11], 37 - 11)
        c = probes[11] - a * 11
        if not rem and all(a * n + c == k for n, k in probes.items() if n >= start):
            return {"per_step": a, "offset": c, "from_steps": start, "first": [probes[n] for n in range(1, start)]}
    raise ValueError(f"{scheduler['class']}: denoiser calls are not linear in the steps")


def compute_derived(name: str) -> dict[str, Any]:
    """Compute the record of family ``name`` from the real scheduler and model classes (imports torch)."""
    from mlflow_energy.families._base import get_family
    from mlflow_energy.families._build import build_on_meta

    fam = get_family(name)
    counts = {"denoiser": 0, "text_encoder": 0, "vae": 0}
    for comp, spec in fam.components.items():
        kind = "denoiser" if comp in ("unet", "transformer") else "text_encoder" if comp.startswith(
            "text_encoder") else "vae" if comp == "vae" else None
        if kind is None or "class" not in spec:
            continue
        module = build_on_meta(spec["class"], dict(spec["config"]))
        counts[kind] += sum(p.numel() for p in module.parameters())
    calls = fit_calls(dict(fam.scheduler)) if fam.scheduler else {
        "per_step": 1, "offset": 0, "from_steps": 1, "first": []}
    return {"denoiser_calls": calls, "params": {k: float(v) for k, v in counts.items()}}


def write_table() -> str:
    """Recompute the records of every registered family and write ``data/derived.json``; returns the path."""
    from pathlib import Path

    from mlflow_energy.families import family_names

    table = {name: compute_derived(name) for name in family_names()}
    path = Path(__file__).resolve().parent / "data" / DATA_FILE
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return str(path)


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    print(write_table())

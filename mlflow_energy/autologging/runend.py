"""Your run is complete when it ends: its end waits, bounded, for the calls autolog queued for it.

The calls of a pipeline are logged off your thread (:mod:`.background`). So that
``with mlflow.start_run() as run: pipe(prompt)`` is followed by a run that already holds the
call's metrics (as MLflow's own autologgers leave it), :func:`install` wraps MLflow's fluent
``end_run`` (``mlflow.end_run``, and the one a ``with mlflow.start_run():`` block calls at its
exit): before ending your active run it waits until the calls logged into that run, or into its
child runs, are handled, for at most ``timeout`` seconds. Past that it says once, in one line,
that the rest is in the journal and will be logged, and ends the run. Calls made outside a run of
yours never wait.

Example:
    >>> from mlflow_energy.autologging import runend
    >>> runend.install(timeout=5.0)
    >>> runend.uninstall()
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

#: Default bound (seconds) of the wait at the end of your run.
DEFAULT_TIMEOUT = 10.0
_ORIGINAL_ATTR = "_mlflow_energy_original"
_STATE: dict[str, Any] = {"timeout": DEFAULT_TIMEOUT, "warn": None}


def _user_stacklevel() -> int:
    """The stack level of the first frame outside MLflow and this package: the user's ``with`` or ``end_run``."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("mlflow", "mlflow_energy"):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str) -> None:
    warnings.warn(f"mlflow-energy autolog: {message}", stacklevel=_user_stacklevel())


def install(timeout: float = DEFAULT_TIMEOUT, warn: Callable[[str], None] | None = None) -> None:
    """Make the end of your active run wait (at most ``timeout`` s) for its autologged calls.

    ``warn``: where the one-line warning of a wait that ran out goes (``None``: nowhere).
    """
    import mlflow
    from mlflow.tracking import fluent

    _STATE["timeout"] = float(timeout)
    _STATE["warn"] = warn
    current = fluent.end_run
    if getattr(current, _ORIGINAL_ATTR, None) is not None:
        return  # installed already

    @functools.wraps(current)
    def end_run(*args: Any, **kwargs: Any) -> Any:
        _wait_for_active_run()
        return current(*args, **kwargs)

    setattr(end_run, _ORIGINAL_ATTR, current)
    fluent.end_run = end_run
    if getattr(mlflow, "end_run", None) is current:
        mlflow.end_run = end_run


def uninstall() -> None:
    """Restore MLflow's own ``end_run``."""
    import mlflow
    from mlflow.tracking import fluent

    original = getattr(fluent.end_run, _ORIGINAL_ATTR, None)
    if original is None:
        return
    if getattr(mlflow, "end_run", None) is fluent.end_run:
        mlflow.end_run = original
    fluent.end_run = original


def _wait_for_active_run() -> None:
    try:
        from mlflow.tracking import fluent

        from mlflow_energy.autologging.background import wait_for_run
        from mlflow_energy.autologging.journal import journal_path

        active = fluent.active_run()
        if active is None:
            return
        timeout = _STATE["timeout"]
        left = wait_for_run(active.info.run_id, timeout)
        if left and _STATE["warn"] is not None:
            _STATE["warn"](
                f"{left} call(s) of run {active.info.run_id} not logged within {timeout:g} s of its end; "
                f"they are in the journal {journal_path()} and will be logged (the logger goes on, "
                "mlflow_energy.flush(), or the next process)")
    except Exception:  # ending your run never fails because of autolog
        pass

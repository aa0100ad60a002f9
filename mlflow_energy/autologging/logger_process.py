"""The autolog logger process: logs the entries the background thread hands it, one JSON line each.

Started by :mod:`.background` as ``python -m mlflow_energy.autologging.logger_process`` at the
lowest CPU priority, in a session of its own. Each line on its stdin is
``{"entry": ..., "png": base64 or null, "skip": [call ids], "cwd": ..., "env": {...}}`` (``env``
only when the caller's environment changed); it answers ``{"say": message}`` for each warning and
``{"done": call id}`` when the entry is handled (logged, or kept pending in the journal). It ends
when its stdin closes, after the entry it is logging.

Example:
    >>> from mlflow_energy.autologging.logger_process import apply_env
    >>> import os
    >>> apply_env({**os.environ, "MLFLOW_ENERGY_EXAMPLE": "1"}); os.environ.pop("MLFLOW_ENERGY_EXAMPLE")
    '1'
"""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any


def apply_env(env: dict[str, str]) -> None:
    """Make this process's environment ``env`` (the caller's, at its call)."""
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)


_OUT = sys.stdout


def _reply(message: dict[str, Any]) -> None:
    try:
        _OUT.write(json.dumps(message) + "\n")
        _OUT.flush()
    except (OSError, ValueError):  # the caller has exited: finish the entry anyway
        pass


def main() -> None:
    """Serve entries until stdin closes."""
    if hasattr(os, "nice"):
        try:
            os.nice(19)
        except OSError:
            pass
    sys.stdout = sys.stderr  # what a library prints goes to stderr: stdout is the reply channel
    from mlflow import MlflowClient  # noqa: F401  (imported while the caller loads its pipeline)

    from mlflow_energy.autologging import send

    send.set_say(lambda message: _reply({"say": message}))
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:  # a line cut by the caller's exit
            continue
        if "env" in message:
            apply_env(message["env"])
        if message.get("cwd") and message["cwd"] != os.getcwd():
            try:
                os.chdir(message["cwd"])  # a relative sqlite:/// URI means what it means to the caller
            except OSError:
                pass
        entry = message["entry"]
        png = base64.b64decode(message["png"]) if message.get("png") else None
        send.handle(entry, png=png, skip=message.get("skip", ()))
        _reply({"done": entry["id"]})


if __name__ == "__main__":
    main()

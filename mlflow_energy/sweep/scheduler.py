"""The sweep's shard from the scheduler that started it: a Kubernetes Indexed Job or a Slurm job array.

Under a scheduler each task of one job gets its own index; ``mlflow-energy sweep SPEC --shard
auto`` measures shard ``index/count`` of the spec (configs split by config hash, so tasks never
overlap) and needs no claims: the scheduler runs each index until it succeeds, and a retried
index resumes, skipping the configs already FINISHED on the same hardware. ``--shard`` may also
come from ``$MLFLOW_ENERGY_SHARD`` (``I/N`` or ``auto``). Looked up in order:

1. Kubernetes Indexed Job (``completionMode: Indexed``; also ``mlflow run --backend kubernetes``
   with such a Job template): ``JOB_COMPLETION_INDEX``, which Kubernetes sets in each pod, and
   ``MLFLOW_ENERGY_SHARD_COUNT``, which the manifest sets to the Job's ``completions``
   (Kubernetes does not expose the count to the pod);
2. Slurm job array (``sbatch --array=0-3``): ``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_MIN``,
   ``SLURM_ARRAY_TASK_MAX``, ``SLURM_ARRAY_TASK_STEP``, ``SLURM_ARRAY_TASK_COUNT`` (any evenly
   spaced range: ``--array=1-7:2`` is shards 0..3 of 4; a list such as ``0,5,9`` is refused).

No scheduler variable set: no shard (the claims give each config to one worker).

A Slurm task resubmitted alone (``sbatch --array=2`` after a task of ``--array=0-3`` failed) sees
an array of one task (``SLURM_ARRAY_TASK_COUNT=1``, ``MIN=MAX=ID``): it would be shard 0 of 1 and
measure the whole spec. Such a task (``ID != 0``) is refused in one line unless the count is given:
``--shard auto/4``, or ``shards: 4`` in the sweep spec, makes it shard ``ID`` of 4 (the ID of a
0-based array is its shard); a count that differs from what a task sees of its array is refused. With a
claims database the sweep may instead measure the whole spec under claims (``PartialArray``).

Example:
    >>> scheduler_shard({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
    ...                  "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"})
    ((2, 4), 'Slurm job array: SLURM_ARRAY_TASK_ID=5 of 1-7:2')
    >>> scheduler_shard({"JOB_COMPLETION_INDEX": "3", "MLFLOW_ENERGY_SHARD_COUNT": "8"})
    ((3, 8), 'Kubernetes Indexed Job: JOB_COMPLETION_INDEX=3 of 8')
    >>> scheduler_shard({})
    (None, 'no scheduler index (JOB_COMPLETION_INDEX and SLURM_ARRAY_TASK_ID unset)')
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mlflow_energy.errors import ConfigError

__all__ = ["AUTO", "SHARD_COUNT_ENV", "SHARD_ENV", "PartialArray", "parse_auto", "scheduler_shard"]

#: ``--shard auto``: the shard from the scheduler's environment.
AUTO = "auto"
#: The environment variable of ``--shard`` (``I/N`` or ``auto``).
SHARD_ENV = "MLFLOW_ENERGY_SHARD"
SHARD_COUNT_ENV = "MLFLOW_ENERGY_SHARD_COUNT"
_K8S_INDEX = "JOB_COMPLETION_INDEX"
_SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP",
          "SLURM_ARRAY_TASK_COUNT")


class PartialArray(ConfigError):
    """A scheduler task that sees only part of its array (a resubmitted index): its shard count is unknown."""


def parse_auto(text: str | None) -> tuple[bool, int | None]:
    """``"auto"`` -> ``(True, None)``; ``"auto/N"`` -> ``(True, N)``; anything else ``(False, None)``.

    Example:
        >>> parse_auto("auto/4"), parse_auto("auto"), parse_auto("1/4")
        ((True, 4), (True, None), (False, None))
    """
    head, sep, tail = (text or "").strip().lower().partition("/")
    if head != AUTO:
        return False, None
    if not sep:
        return True, None
    if not tail.strip().isdigit() or int(tail) < 1:
        raise ConfigError("shard", text, "auto, or auto/N with N >= 1 the number of tasks of the whole array")
    return True, int(tail)


def _int(env: Mapping[str, str], name: str, minimum: int = 0) -> int:
    text = env.get(name, "").strip()
    if not text.isdigit() or int(text) < minimum:
        raise ConfigError(name, env.get(name), f"an integer >= {minimum}")
    return int(text)


def _given(given: int, count_from: str | None) -> str:
    """Where the given count came from, as the user wrote it."""
    return f"shards: {given} in the sweep spec" if count_from else f"--shard auto/{given}"


def _kubernetes(env: Mapping[str, str], given: int | None, count_from: str | None) -> tuple[tuple[int, int], str]:
    index = _int(env, _K8S_INDEX)
    if count_from and env.get(SHARD_COUNT_ENV, "").strip() and _int(env, SHARD_COUNT_ENV, 1) != given:
        raise ConfigError(count_from, given, f"the Job's own count ({SHARD_COUNT_ENV}={env[SHARD_COUNT_ENV]})")
    if given is not None:
        env = {**env, SHARD_COUNT_ENV: str(given)}
    if SHARD_COUNT_ENV not in env:
        raise ConfigError(SHARD_COUNT_ENV, None, "the Job's completions, set in the pod's env (Kubernetes sets "
                          f"{_K8S_INDEX}={index} but not the count)")
    count = _int(env, SHARD_COUNT_ENV, 1)
    if given is not None and index >= given:
        raise ConfigError(_K8S_INDEX, index, f"an index below the {given} tasks of {_given(given, count_from)}")
    if index >= count:
        raise ConfigError(_K8S_INDEX, index, f"an index below {SHARD_COUNT_ENV}={count} (the Job's completions)")
    return (index, count), f"Kubernetes Indexed Job: {_K8S_INDEX}={index} of {count}"


def _slurm(env: Mapping[str, str], given: int | None, count_from: str | None) -> tuple[tuple[int, int], str]:
    task, low, high = (_int(env, name) for name in _SLURM[:3])
    step = _int(env, _SLURM[3], 1) if _SLURM[3] in env else 1
    count = _int(env, _SLURM[4], 1) if _SLURM[4] in env else (high - low) // step + 1
    span = f"{low}-{high}" + (f":{step}" if step != 1 else "")
    if count == 1 and low == high == task and task != 0 and given != 1:  # a task resubmitted alone
        if given is None:
            raise PartialArray(_SLURM[0], task, f"a task of an array it can see: this one sees --array={task} alone "
                               "(resubmitted?), so the array's size is unknown; give it with --shard auto/N or shards: N in the sweep spec")
        if task >= given:
            raise ConfigError(_SLURM[0], task, f"an index below the {given} tasks of {_given(given, count_from)}")
        return (task, given), f"Slurm job array: {_SLURM[0]}={task} resubmitted alone, of {given} ({_given(given, count_from)})"
    if given is not None and given != count:
        if count_from:
            raise ConfigError(count_from, given, f"the array's own count ({_SLURM[4]}={count}): the number of tasks "
                              "of the whole array")
        raise ConfigError("shard", f"auto/{given}", f"the array's own count ({_SLURM[4]}={count}), or auto")
    if (high - low) % step or (high - low) // step + 1 != count:
        raise ConfigError("SLURM array", f"{count} tasks from {low} to {high}",
                          "an evenly spaced range such as --array=0-3 (a list such as 0,5,9 has no shard order)")
    if not low <= task <= high or (task - low) % step:
        raise ConfigError(_SLURM[0], task, f"a task of the array {span}")
    return ((task - low) // step, count), f"Slurm job array: {_SLURM[0]}={task} of {span}"


def scheduler_shard(env: Mapping[str, str] | None = None, count: int | None = None, count_from: str | None = None
                    ) -> tuple[tuple[int, int] | None, str]:
    """``((index, count), where it came from)``, or ``(None, why not)`` outside a scheduler's task.

    ``count``: the number of tasks of the whole array (``--shard auto/N``), for a task that cannot see it;
    ``count_from``: the spec key it came from (``"shards"``), named when it is refused (else ``--shard``).

    Raises:
        PartialArray: a Slurm task resubmitted alone, without ``count`` (one line).
        ConfigError: a scheduler variable is set but unusable (one line naming it).
    """
    env = os.environ if env is None else env
    if env.get(_K8S_INDEX, "").strip():
        return _kubernetes(env, count, count_from)
    if env.get(_SLURM[0], "").strip():
        return _slurm(env, count, count_from)
    return None, f"no scheduler index ({_K8S_INDEX} and {_SLURM[0]} unset)"

"""Every MLflow key mlflow-energy writes or reads, in one place.

The run schema is a contract (see the README, "Run schema"): one inference config is
one MLflow run; values are per image. Other modules import names from here and never
spell a key themselves.

The keys sit in three private modules by subject (the run schema itself, the predictor and
fitted models, the workflows around them); import them from here.
"""

from __future__ import annotations

from . import _models, _runs, _workflows
from ._models import *  # noqa: F403
from ._runs import *  # noqa: F403
from ._workflows import *  # noqa: F403

__all__ = sorted({
    name for mod in (_runs, _models, _workflows) for name in vars(mod)
    if not name.startswith("_") and name != "annotations"}
)

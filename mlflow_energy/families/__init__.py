"""Model families: released architectures, tiny variants, builders and phase adapters.

Example:
    >>> from mlflow_energy.families import get_family, family_names
    >>> get_family("sd2").default_steps
    50
    >>> "tiny-sd2" in family_names()
    True
"""

from mlflow_energy.families import sd2  # noqa: F401  (each module registers its family)
from mlflow_energy.families._base import Family, family_names, get_family, register, tiny_variant

__all__ = ["Family", "family_names", "get_family", "register", "tiny_variant"]

"""Model families: released architectures, tiny variants, builders and phase adapters.

Example:
    >>> from mlflow_energy.families import get_family, family_names
    >>> get_family("sd2").default_steps
    50
    >>> "tiny-sd2" in family_names()
    True
"""

# Each module registers its family and the tiny variant.
from mlflow_energy.families import (  # noqa: F401
    flux_1_dev,
    flux_1_schnell,
    pixart_sigma,
    qwen_image,
    sana_1_6b,
    sd1_5,
    sd2,
    sd3_5_large,
    sd3_5_medium,
    sd3_medium,
    sdxl,
    ssd_1b,
)
from mlflow_energy.families._base import Family, family_names, get_family, register, tiny_variant

__all__ = ["Family", "family_names", "get_family", "register", "tiny_variant"]

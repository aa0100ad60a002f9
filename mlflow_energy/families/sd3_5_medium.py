"""Stable Diffusion 3.5 Medium (1024 px): MMDiT-X 2.2 B + CLIP-L + CLIP-G + T5-XXL + VAE f8c16.

MMDiT-X: dual self-attention in blocks 0-12 and QK RMS-norm.

Architecture: ``data/sd3.5-medium.json`` (released configs; provenance in ``data/PROVENANCE.md``).
Runs in ``StableDiffusion3Pipeline``: T5 at 256 tokens, so the transformer sees 77 + 256
text tokens; 40 steps by default. Scheduler: the released FlowMatchEulerDiscrete config
(shift 3.0). Guidance 7.0, the pipeline default (model cards suggest 3.5-4.5 for SD3.5;
either way CFG runs the transformer twice per step).
"""

from mlflow_energy.families._base import family_from_data, register
from mlflow_energy.families._sd3_common import SCHEDULER, tiny_sd3
from mlflow_energy.families._small import small_sd3

FULL = family_from_data("sd3.5-medium", default_guidance_scale=7.0, adapter="sd3", scheduler=SCHEDULER)
TINY = tiny_sd3(FULL)

SMALL = small_sd3(FULL)

register(FULL, TINY, SMALL)

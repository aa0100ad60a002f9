"""FLUX.1 [schnell] (1024 px, 4 steps): the timestep-distilled FLUX.1, same 11.9 B transformer.

No guidance at all (no guidance embedding, no negative prompt: ``cfg: none``, scale 0.0 as
in the model card); T5 runs at 256 tokens instead of dev's 512. Architecture:
``data/flux.1-schnell.json`` (provenance in ``data/PROVENANCE.md``). Scheduler: the
released FlowMatchEulerDiscrete config, shift 1.0 without dynamic shifting.
"""

from mlflow_energy.families._base import family_from_data, register
from mlflow_energy.families._flux_common import tiny_flux
from mlflow_energy.families._small import small_flux

FULL = family_from_data(
    "flux.1-schnell",
    default_guidance_scale=0.0,
    adapter="flux",
    scheduler={
        "class": "FlowMatchEulerDiscreteScheduler",
        "config": {
            "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False,
            "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
        },
    },
)
TINY = tiny_flux(FULL)

SMALL = small_flux(FULL)

register(FULL, TINY, SMALL)

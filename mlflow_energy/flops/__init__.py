"""Analytical FLOPs per inference phase: closed forms per block, per config and vectorised.

Owns: counting what each phase computes, from the architecture configs alone.
Modules:
    blocks         primitives (linear, attention, conv, ResNet block) shared by the closed forms
    text_encoders  one forward of each text-encoder class
    denoisers      one denoiser call: UNet, MMDiT, FLUX, Qwen-Image, PixArt, SANA
    decoders       one VAE decode
    count          per phase for one :class:`~mlflow_energy.config.InferenceConfig`
    frame          the same, vectorised over a DataFrame
    reference      ground truth: ``FlopCounterMode`` on the meta device (tests, benchmarks)
    traffic        beside the FLOPs of one traced call: kernel-launching ops and bytes moved (meta device)
    memory         bytes one denoiser call moves, in closed form per family (no torch)
May import: the shared ground (``config``, ``errors``, ``schema``) and ``families``.

Example:
    >>> from mlflow_energy.config import InferenceConfig
    >>> from mlflow_energy.flops import config_flops
    >>> f = config_flops(InferenceConfig(model="sd2", height=768, width=768, steps=50))
    >>> f["denoise"] == 50 * f["denoise_per_step"]
    True
"""

from mlflow_energy._imports import lazy_exports

__all__ = ["FRAME_INPUTS", "FRAME_OUTPUTS", "PHASES", "CallCounts", "call_counts_frame", "component_flops",
           "config_flops", "count_call", "denoiser_call_counts", "flops_columns", "flops_frame", "flops_metrics"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FRAME_INPUTS": "count",
        "FRAME_OUTPUTS": "count",
        "PHASES": "count",
        "component_flops": "count",
        "config_flops": "count",
        "flops_metrics": "count",
        "flops_frame": "frame",
        "flops_columns": "frame",
        "CallCounts": "traffic",
        "call_counts_frame": "traffic",
        "count_call": "traffic",
        "denoiser_call_counts": "traffic",
    },
)

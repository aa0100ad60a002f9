"""The role of each pipeline component, by its class first: which phase its calls belong to.

``text_encode``
    a prompt encoder: a transformers model (``PreTrainedModel``: CLIP, T5, Gemma, Qwen, an LDM
    ``bert``), or a component named ``text_encoder*``/``image_encoder*`` (a prior's image prompt);
``denoise``
    a diffusers model whose class is a UNet, a transformer, a prior or a ControlNet (a Stable
    Cascade ``decoder`` is a ``StableCascadeUNet``), or a component named ``unet``, ``transformer*``,
    ``prior``, ``controlnet``;
``decode``
    the image autoencoder's ``decode`` (a diffusers ``AutoencoderKL*``, ``AutoencoderDC``,
    ``VQModel``: an LDM ``vqvae``, a Kandinsky ``movq``); its ``encode`` is ``image_encode``, the
    phase where img2img, inpaint, FLUX fill/kontext/control and SVD encode an input image.

A safety checker is not a prompt encoder: it is left to ``energy/other_j``.

Example:
    >>> from mlflow_energy.autologging.roles import component_phase
    >>> component_phase("text_encoder_2"), component_phase("transformer"), component_phase("vae")
    ('text_encode', 'denoise', 'decode')
"""

from __future__ import annotations

from typing import Any

from mlflow_energy import schema

__all__ = ["component_phase", "component_stage", "is_autoencoder"]

#: Component names (prefixes) whose calls are the denoiser's.
DENOISER_PREFIXES = ("unet", "transformer", "prior", "denoiser", "decoder", "controlnet")
#: Component names (prefixes) of encoders of the prompt (text, or an image prompt of a prior).
ENCODER_PREFIXES = ("text_encoder", "prior_text_encoder", "image_encoder", "prior_image_encoder")
#: Component names (prefixes) of the image decoders (VAE, MoVQ, VQGAN).
DECODER_PREFIXES = ("vae", "movq", "vqgan", "vqvae")
#: Substrings of diffusers model class names that denoise.
_DENOISER_CLASSES = ("UNet", "Transformer", "PriorTransformer", "Prior", "ControlNet")
#: Substrings of diffusers model class names of image autoencoders.
_AUTOENCODER_CLASSES = ("Autoencoder", "VQModel", "VQGAN", "DecoderVAE")
#: Components that are not part of generating the image.
_NOT_METERED = ("safety_checker", "watermark", "feature_extractor")


def _bases(module: Any) -> set[str]:
    return {c.__name__ for c in type(module).__mro__}


def is_autoencoder(module: Any) -> bool:
    """Whether ``module`` is an image autoencoder (its ``decode`` decodes, its ``encode`` encodes an image).

    Example:
        >>> is_autoencoder(object())
        False
    """
    cls = type(module).__name__
    return (any(c in cls for c in _AUTOENCODER_CLASSES) and callable(getattr(module, "decode", None))
            and "PreTrainedModel" not in _bases(module))


def component_phase(name: str, module: Any = None) -> str | None:
    """The phase a pipeline component's calls belong to, by its class, else its name; ``None``: not metered.

    Example:
        >>> component_phase("prior_text_encoder"), component_phase("controlnet"), component_phase("movq")
        ('text_encode', 'denoise', 'decode')
    """
    if name.startswith(_NOT_METERED):
        return None
    if module is not None:
        bases = _bases(module)
        if is_autoencoder(module):
            return schema.PHASE_DECODE
        if "PreTrainedModel" in bases:  # transformers: a prompt (or image prompt) encoder
            return schema.PHASE_TEXT_ENCODE
        cls = type(module).__name__
        if "ModelMixin" in bases and any(c in cls for c in _DENOISER_CLASSES):
            return schema.PHASE_DENOISE
    base = name.rsplit("_", 1)[-1] if name.startswith("prior_") else name
    if name.startswith(ENCODER_PREFIXES) or base.startswith(ENCODER_PREFIXES):
        return schema.PHASE_TEXT_ENCODE
    if name.startswith(DECODER_PREFIXES):
        return schema.PHASE_DECODE
    if name.startswith(DENOISER_PREFIXES) or name == "prior_prior":
        return schema.PHASE_DENOISE
    return None


def component_stage(name: str, components: dict[str, Any]) -> str | None:
    """The stage of a combined pipeline a component belongs to; ``None`` for a one-stage pipeline.

    A combined pipeline (Kandinsky 2.2, Stable Cascade) registers its prior's components with a
    ``prior_`` prefix next to its decoder's own denoiser: those are the ``prior`` stage, the rest
    the ``decoder`` stage. A prior pipeline alone (``prior``, ``text_encoder``) has one stage.

    Example:
        >>> parts = {"prior_prior": 0, "prior_text_encoder": 0, "unet": 0, "movq": 0}
        >>> component_stage("prior_text_encoder", parts), component_stage("movq", parts)
        ('prior', 'decoder')
        >>> component_stage("unet", {"unet": 0, "vae": 0}) is None
        True
    """
    names = list(components)
    has_prior = any(n.startswith("prior_") for n in names)
    has_decoder = any(not n.startswith("prior_") and n.startswith(DENOISER_PREFIXES) for n in names)
    if not (has_prior and has_decoder):
        return None
    return schema.STAGE_PRIOR if name.startswith("prior_") else schema.STAGE_DECODER

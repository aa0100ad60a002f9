"""The Family record and the registry of model families.

A family is the released architecture of one text-to-image model (its component configs,
shipped as package data in ``families/data/<name>.json``), its pipeline defaults, a tiny
variant of the same classes for CPU tests, and the phase adapter that splits its pipeline
into text encoding, denoising and decoding. Each family lives in one module of this
package and registers itself with :func:`register`; third-party packages may add families
through the ``mlflow_energy.families`` entry-point group.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Literal

from mlflow_energy.errors import ConfigError

CfgMode = Literal["true", "distilled", "none"]
TINY_PREFIX = "tiny-"
#: Prefix of the small variants: same classes, widths where compute dominates on a CPU (demo).
SMALL_PREFIX = "small-"
_REDUCED_PREFIXES = (TINY_PREFIX, SMALL_PREFIX)

# Pipelines that check a fixed pixel multiple of their own, whatever their VAE (tiny VAEs
# downsample by less than the released ones, so this check can be the binding one).
_PIPELINE_PIXEL_MULTIPLE = {
    "StableDiffusionPipeline": 8,
    "StableDiffusionXLPipeline": 8,
    "PixArtSigmaPipeline": 8,
    "SanaPipeline": 32,
}


@dataclass(frozen=True)
class Family:
    """One model family (or its tiny variant).

    Attributes:
        name: registry name (``sd2``, ``tiny-sd2``).
        pipeline_class: diffusers pipeline class name that runs the family.
        components: ``{component: {"class": "<module>.<Class>", "config": {...}}}``.
        text_lengths: tokens each text encoder runs at for one prompt (see data README).
        default_steps, default_resolution, default_guidance_scale: pipeline defaults.
        cfg: ``"true"`` (negative prompt encoded, two denoiser samples per step when the
            guidance scale is > 1), ``"distilled"`` (guidance is an input embedding, one
            pass) or ``"none"``.
        latent_downsample, latent_channels, patch_size: latent geometry.
        scheduler: ``{"class": "<DiffusersScheduler>", "config": {...}}`` for random weights.
        extras: any other keys of the data file (``transformer_joint`` lengths, notes, ...).
        adapter: name of the phase adapter (``sd``, ``sdxl``, ``sd3``, ``flux``, ``qwen``,
            ``pixart``); ``None`` for families that have FLOPs but are not measured here.
        base: the full-size family name (itself for a full-size family).
        min_steps: the fewest denoising steps the released scheduler runs correctly.
    """

    name: str
    pipeline_class: str
    components: Mapping[str, Mapping[str, Any]]
    text_lengths: Mapping[str, int]
    default_steps: int
    default_resolution: int
    default_guidance_scale: float
    cfg: CfgMode
    latent_downsample: int
    latent_channels: int
    patch_size: int | None
    scheduler: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)
    adapter: str | None = None
    base: str = ""
    min_steps: int = 1

    # ------------------------------------------------------------------ geometry
    @property
    def is_tiny(self) -> bool:
        """True for a reduced variant (``tiny-`` or ``small-``), False for a released size."""
        return self.name.startswith(_REDUCED_PREFIXES)

    @property
    def pixel_multiple(self) -> int:
        """Height and width must be a multiple of this.

        The latent downsample x patch size, and a multiple of what the pipeline itself checks
        (SD, SDXL and PixArt pipelines require multiples of 8 even with a tiny VAE).
        """
        own = self.latent_downsample * (self.patch_size or 1)
        return math.lcm(own, _PIPELINE_PIXEL_MULTIPLE.get(self.pipeline_class, 1))

    @property
    def measurable(self) -> bool:
        """True when the runner can build and run this family's pipeline."""
        return self.adapter is not None

    @property
    def denoiser(self) -> str:
        """Component name of the denoiser (``unet`` or ``transformer``)."""
        return "unet" if "unet" in self.components else "transformer"

    @property
    def text_encoders(self) -> tuple[str, ...]:
        return tuple(sorted(c for c in self.components if c.startswith("text_encoder")))

    def uses_cfg(self, guidance_scale: float | None) -> bool:
        """True when the denoiser runs twice per step (classifier-free guidance)."""
        scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        return self.cfg == "true" and scale > 1.0

    def passes(self, guidance_scale: float | None) -> int:
        """Denoiser samples per step and image: 2 with classifier-free guidance, else 1."""
        return 2 if self.uses_cfg(guidance_scale) else 1

    def denoiser_calls(self, steps: int, scheduler: str | None = None) -> int:
        """Denoiser evaluations per sample pass for ``steps`` steps: the scheduler's timesteps.

        Equal to ``steps`` for most schedulers; PNDM (SD 1.5) evaluates ``steps + 1`` times
        (its PLMS warm-up repeats the first step), Heun ``2 * steps - 1``. ``scheduler``
        names another diffusers scheduler class, configured from this family's config (that
        one is probed, importing diffusers; the family's own comes from ``data/derived.json``).

        Example:
            >>> from mlflow_energy.families import get_family
            >>> get_family("sd1.5").denoiser_calls(50), get_family("sd2").denoiser_calls(50)
            (51, 50)
        """
        from mlflow_energy.families._derived import denoiser_calls, scheduler_calls

        if scheduler is None or scheduler == self.scheduler.get("class"):
            return denoiser_calls(self.name, steps)  # shipped per-family data: no diffusers import
        return scheduler_calls(dict(self.scheduler), steps, scheduler)

    def config_of(self, component: str) -> dict[str, Any]:
        """A deep copy of one component's architecture config."""
        return copy.deepcopy(dict(self.components[component]["config"]))


# ---------------------------------------------------------------------- data loading
def load_architecture(name: str) -> dict[str, Any]:
    """The shipped architecture record of a full-size family (``families/data/<name>.json``)."""
    path = resources.files("mlflow_energy.families") / "data" / f"{name}.json"
    return json.loads(path.read_text())


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_KNOWN_KEYS = {
    "family", "pipeline_class", "components", "text_lengths", "default_steps",
    "default_resolution", "cfg", "latent_downsample", "latent_channels", "patch_size",
}


def family_from_data(
    name: str,
    *,
    default_guidance_scale: float,
    adapter: str | None,
    scheduler: Mapping[str, Any] | None = None,
    min_steps: int = 1,
) -> Family:
    """Build the full-size :class:`Family` from its shipped architecture file."""
    data = load_architecture(name)
    return Family(
        name=name,
        pipeline_class=data["pipeline_class"],
        components=data["components"],
        text_lengths={k: v for k, v in data["text_lengths"].items() if isinstance(v, int)},
        default_steps=int(data["default_steps"]),
        default_resolution=int(data["default_resolution"]),
        default_guidance_scale=float(default_guidance_scale),
        cfg=str(data["cfg"]),  # type: ignore[arg-type]
        latent_downsample=int(data["latent_downsample"]),
        latent_channels=int(data["latent_channels"]),
        patch_size=data["patch_size"],
        scheduler=dict(scheduler or {}),
        extras={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        adapter=adapter,
        base=name,
        min_steps=min_steps,
    )


def tiny_variant(
    full: Family,
    component_overrides: Mapping[str, Mapping[str, Any]],
    *,
    default_resolution: int = 64,
    default_steps: int = 4,
    prefix: str = TINY_PREFIX,
    **changes: Any,
) -> Family:
    """The tiny variant of ``full``: same classes, configs overridden to small dimensions.

    ``prefix=SMALL_PREFIX`` names a ``small-`` variant instead (see ``families/_small.py``).
    """
    components = {
        comp: {"class": spec["class"], "config": _merge(spec["config"], component_overrides.get(comp, {}))}
        for comp, spec in full.components.items()
    }
    return replace(
        full,
        name=prefix + full.name,
        components=components,
        default_resolution=default_resolution,
        default_steps=default_steps,
        base=full.name,
        **changes,
    )


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, Family] = {}
_PLUGINS_LOADED = False


def register(*families: Family) -> Family:
    """Register families by name; returns the first (the full-size family by convention)."""
    for fam in families:
        _REGISTRY[fam.name] = fam
    return families[0]


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="mlflow_energy.families"):
        ep.load()


def family_names(*, tiny: bool = True, measurable_only: bool = False) -> list[str]:
    """Registered family names, full-size first, then the tiny variants."""
    _load_plugins()
    names = [
        n for n, f in _REGISTRY.items()
        if (tiny or not f.is_tiny) and (f.measurable or not measurable_only)
    ]
    return sorted(names, key=lambda n: (n.startswith(_REDUCED_PREFIXES), n))


def get_family(name: str) -> Family:
    """The registered family called ``name``.

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError("model", name, "one of " + ", ".join(family_names())) from None



"""What the measuring host must have installed, checked before anything is built, with a fix to copy."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# --------------------------------------------------------------------------- dependencies
#: Modules the campaign imports on the measuring host, and the pip package of each.
_GPU_MODULES: tuple[tuple[str, str], ...] = (
    ("yaml", "pyyaml"),
    ("numpy", "numpy"),
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("tokenizers", "tokenizers"),
    ("safetensors", "safetensors"),
    ("accelerate", "accelerate"),
    ("diffusers", "diffusers"),
    ("pynvml", "nvidia-ml-py"),
    ("zeus.monitor", "zeus"),
)


_CPU_SKIP = {"pynvml", "zeus.monitor"}


#: Top-level module -> pip package, where the names differ.
_PIP_NAMES = {
    "yaml": "pyyaml", "pynvml": "nvidia-ml-py", "PIL": "pillow", "sklearn": "scikit-learn",
    "dateutil": "python-dateutil", "huggingface_hub": "huggingface-hub", "markdown_it": "markdown-it-py",
    "google": "protobuf", "typing_extensions": "typing-extensions", "pydantic_core": "pydantic-core",
}


WHEELS_HINT = (
    "on a connected machine run `pip download --only-binary=:all: -d wheels diffusers zeus` (and "
    "`pip download --only-binary=:all: --no-deps -d wheels accelerate psutil`), copy wheels/ to this host and run "
    "`pip install --no-index --find-links wheels {packages}` (see data/measurements/README.md)"
)


@dataclass(frozen=True)
class MissingModule:
    """A module the campaign needs that does not import: its pip package and why."""

    module: str
    package: str
    reason: str


def _pip_name(module: str) -> str:
    top = module.split(".")[0]
    return _PIP_NAMES.get(top, top.replace("_", "-"))


def check_dependencies(device: str = "cuda", pipeline_classes: Iterable[str] = ()) -> list[MissingModule]:
    """Import every module the campaign needs (without touching the device); list what fails.

    ``pipeline_classes`` (diffusers class names) are resolved too, so a package that imports
    but lacks one of its own requirements is caught here, not after minutes of work. On
    ``cpu`` neither Zeus nor NVML is needed (the estimate meter measures).

    Example:
        >>> from mlflow_energy.sweep.campaign import check_dependencies
        >>> check_dependencies("cpu")
        []
    """
    missing: list[MissingModule] = []
    gpu = device.split(":", 1)[0] == "cuda"
    for module, package in _GPU_MODULES:
        if not gpu and module in _CPU_SKIP:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a package failing inside its own imports
            name = getattr(exc, "name", None) or module
            pkg = package if name.split(".")[0] == module.split(".")[0] else _pip_name(name)
            missing.append(MissingModule(module, pkg, _one_line(exc)))
    if not any(m.module == "diffusers" for m in missing):
        import diffusers

        for cls in pipeline_classes:
            try:
                getattr(diffusers, cls)
            except Exception as exc:
                name = getattr(exc, "name", None) or _module_in_message(str(exc)) or "diffusers"
                missing.append(MissingModule(f"diffusers.{cls}", _pip_name(name), _one_line(exc)))
    return missing


def _module_in_message(message: str) -> str | None:
    found = re.search(r"No module named '([\w.]+)'", message)
    return found.group(1) if found else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else text or type(exc).__name__


def missing_message(missing: Sequence[MissingModule]) -> str:
    """One line naming the missing packages and the commands that install them offline.

    Example:
        >>> from mlflow_energy.sweep.campaign import MissingModule, missing_message
        >>> missing_message([MissingModule("zeus.monitor", "zeus", "No module named 'zeus'")])[:58]
        "Error: missing package 'zeus' (No module named 'zeus'): on"
    """
    packages = list(dict.fromkeys(m.package for m in missing))
    names = ", ".join(f"'{p}'" for p in packages)
    plural = "s" if len(packages) > 1 else ""
    return (
        f"Error: missing package{plural} {names} ({missing[0].reason}): "
        + WHEELS_HINT.format(packages=" ".join(packages))
    )

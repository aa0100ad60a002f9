"""GPU specifications: peak dense FP16/BF16 tensor throughput, board power (TDP), memory bandwidth.

The table ships as package data (``data/gpu_specs.csv``, sources per row in ``data/PROVENANCE.md``).
Rows whose ``verified`` column is not ``yes`` hold recalled or derived figures; :class:`GpuSpec`
carries that flag so every user of a figure can say so. Memory bandwidth figures are all recalled
datasheet values (see the provenance file).

Names are matched the way drivers, clouds and benchmark files spell them: ``"H100"``,
``"NVIDIA H100 80GB HBM3"`` (what NVML reports), ``"H100-SXM5-80GB"``, ``"A100-SXM4-40GB"``.

Example:
    >>> from mlflow_energy.measure.hardware import lookup_gpu
    >>> spec = lookup_gpu("NVIDIA H100 80GB HBM3")
    >>> spec.name, spec.tdp_w, spec.dense_fp16_tflops
    ('H100 SXM5 80GB', 700.0, 989.4)
    >>> lookup_gpu("A100-SXM4-40GB").name
    'A100 SXM4 40GB/80GB'
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path

from mlflow_energy.errors import ConfigError

# package data, found next to this file (works for wheels and editable installs alike)
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SPECS_FILE = "gpu_specs.csv"


@dataclass(frozen=True)
class GpuSpec:
    """One row of the GPU spec table.

    Attributes:
        gpu: chip family as the table names it (``H100``, ``RTX A6000``).
        name: the variant (``H100 SXM5 80GB``): the canonical hardware name used by the fit.
        tdp_w: board power limit in watts.
        dense_fp16_tflops: peak dense FP16/BF16 tensor throughput, TFLOP/s.
        mem_bw_gb_s: memory bandwidth, GB/s (recalled datasheet figure).
        verified: ``True`` only when the row's ``verified`` column is ``yes`` (TDP and FLOP/s
            checked against a cited page).
        source: where TDP and FLOP/s come from.
    """

    gpu: str
    name: str
    tdp_w: float
    dense_fp16_tflops: float
    mem_bw_gb_s: float
    verified: bool
    source: str

    @property
    def j_per_flop_at_tdp(self) -> float:
        """Best-case energy per FLOP: TDP / peak dense FP16 throughput (the roofline)."""
        return self.tdp_w / (self.dense_fp16_tflops * 1e12)

    def descriptors(self) -> dict[str, float]:
        """The hardware features the energy corrector uses."""
        return {
            "hw_tdp_w": self.tdp_w,
            "hw_tflops": self.dense_fp16_tflops,
            "hw_mem_bw_gb_s": self.mem_bw_gb_s,
        }


@functools.lru_cache(maxsize=1)
def gpu_specs() -> tuple[GpuSpec, ...]:
    """All rows of the shipped table, in file order.

    Example:
        >>> from mlflow_energy.measure.hardware import gpu_specs
        >>> any(s.gpu == "B200" for s in gpu_specs())
        True
    """
    text = (DATA_DIR / SPECS_FILE).read_text()
    rows = []
    for row in csv.DictReader(text.splitlines()):
        rows.append(
            GpuSpec(
                gpu=row["gpu"],
                name=row["variant"],
                tdp_w=float(row["tdp_w"]),
                dense_fp16_tflops=float(row["dense_fp16_bf16_tensor_tflops"]),
                mem_bw_gb_s=float(row["mem_bw_gb_s"]),
                verified=row["verified"].strip().lower() == "yes",
                source=f"{row['tdp_source']}; {row['flops_source']}",
            )
        )
    return tuple(rows)


def _norm(text: str) -> str:
    text = text.lower().replace("-", " ").replace("_", " ")
    text = re.sub(r"\b(nvidia|geforce|tesla)\b", " ", text)
    return " " + re.sub(r"\s+", " ", text).strip() + " "


def _gpu_pattern(gpu: str) -> str:
    return _norm(gpu)


@functools.lru_cache(maxsize=1024)
def find_gpu(name: str) -> GpuSpec | None:
    """The spec row for ``name``, or ``None`` when the table has no such GPU.

    The chip is matched as whole words (``L40`` is not ``L40S``); among its rows the form
    factor in the name picks the variant (``PCIe``, or ``SXM``/``HBM3`` for SXM), else the
    first row of the chip (the SXM/flagship variant).

    Example:
        >>> from mlflow_energy.measure.hardware import find_gpu
        >>> find_gpu("NVIDIA H100 PCIe").tdp_w
        350.0
        >>> find_gpu("Intel Xeon Platinum 8480") is None
        True
    """
    if not isinstance(name, str) or not name.strip():
        return None
    norm = _norm(name)
    specs = gpu_specs()
    exact = [s for s in specs if _norm(s.name) == norm]
    if exact:
        return exact[0]
    chips = sorted({s.gpu for s in specs}, key=len, reverse=True)
    chip = next((c for c in chips if _gpu_pattern(c) in norm), None)
    if chip is None:
        return None
    rows = [s for s in specs if s.gpu == chip]
    if " pcie " in norm:
        pcie = [s for s in rows if "pcie" in s.name.lower()]
        if pcie:
            return pcie[0]
    if " sxm" in norm or "hbm3" in norm:
        sxm = [s for s in rows if "sxm" in s.name.lower()]
        if sxm:
            return sxm[0]
    return rows[0]


def lookup_gpu(name: str) -> GpuSpec:
    """The spec row for ``name``.

    Raises:
        ConfigError: when the table has no such GPU, listing the ones it has.
    """
    spec = find_gpu(name)
    if spec is None:
        known = ", ".join(dict.fromkeys(s.gpu for s in gpu_specs()))
        raise ConfigError("hardware", name, f"a GPU of the spec table ({known}), or pass its specs")
    return spec


def canonical_hardware(name: str) -> str:
    """The name the fit groups by: the spec variant when the GPU is known, else ``name`` as given.

    Example:
        >>> from mlflow_energy.measure.hardware import canonical_hardware
        >>> canonical_hardware("H100-SXM5-80GB") == canonical_hardware("NVIDIA H100 80GB HBM3")
        True
        >>> canonical_hardware("cpu: AMD EPYC 7763")
        'cpu: AMD EPYC 7763'
    """
    spec = find_gpu(name)
    return spec.name if spec is not None else str(name).strip()

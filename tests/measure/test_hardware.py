"""GPU spec lookup by the names drivers, clouds and benchmark files use."""

from __future__ import annotations

import pytest

from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.hardware import canonical_hardware, find_gpu, gpu_specs, lookup_gpu


@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("H100", "H100 SXM5 80GB"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM5 80GB"),
        ("H100-SXM5-80GB", "H100 SXM5 80GB"),
        ("NVIDIA H100 PCIe", "H100 PCIe 80GB"),
        ("A100-SXM4-40GB", "A100 SXM4 40GB/80GB"),
        ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
        ("NVIDIA L40S", "L40S 48GB (AD102)"),
        ("NVIDIA RTX A6000", "RTX A6000 48GB (Ampere GA102)"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada Generation 48GB (AD102)"),
    ],
)
def test_names_resolve_to_their_variant(name, variant):
    assert lookup_gpu(name).name == variant


def test_figures_and_verification_flag():
    h100 = lookup_gpu("H100")
    assert (h100.tdp_w, h100.dense_fp16_tflops, h100.mem_bw_gb_s) == (700.0, 989.4, 3350.0)
    assert h100.verified
    assert h100.j_per_flop_at_tdp == pytest.approx(7.075e-13, rel=1e-3)
    assert not lookup_gpu("H200").verified  # recalled TDP: flagged
    assert not lookup_gpu("NVIDIA H100 PCIe").verified  # "partial (TDP yes, FLOPs no)"
    assert all(s.source for s in gpu_specs())


def test_unknown_gpus_are_not_guessed():
    assert find_gpu("NVIDIA L40") is None  # the table has the L40S only
    assert find_gpu("AMD EPYC 7763") is None
    with pytest.raises(ConfigError, match="hardware='Radeon 7900'.*pass its specs"):
        lookup_gpu("Radeon 7900")


def test_canonical_names_group_one_gpu_and_keep_unknown_names():
    assert canonical_hardware("H100-SXM5-80GB") == canonical_hardware("NVIDIA H100 80GB HBM3") == "H100 SXM5 80GB"
    assert canonical_hardware(" Intel Xeon ") == "Intel Xeon"

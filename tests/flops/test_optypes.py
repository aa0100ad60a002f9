"""The op-type split of one call adds up to the closed form and moves with resolution as attention should."""

from __future__ import annotations

import numpy as np
import pytest

from mlflow_energy.flops import component_flops
from mlflow_energy.flops.optypes import call_op_flops, op_fractions


@pytest.mark.parametrize("model, component", [("sd2", "unet"), ("flux.1-dev", "transformer"),
                                              ("sana-1.6b", "transformer"), ("sd3-medium", "transformer")])
def test_split_adds_up_to_the_closed_form(model, component):
    ops = call_op_flops(model, height=1024, width=1024)
    assert ops["total"] == pytest.approx(component_flops(model, component, height=1024, width=1024))
    assert ops["attention"] + ops["conv"] + ops["gemm"] == pytest.approx(ops["total"])
    assert min(ops["attention"], ops["conv"], ops["gemm"]) >= 0.0


def test_attention_share_grows_with_resolution_and_dits_have_no_conv_in_their_blocks():
    small = call_op_flops("sd2", height=512, width=512)
    large = call_op_flops("sd2", height=1024, width=1024)
    assert large["attention"] / large["total"] > small["attention"] / small["total"]
    assert call_op_flops("flux.1-dev", height=1024, width=1024)["conv"] == 0.0


def test_vectorised_split_matches_scalar_and_the_ordinary_counter_is_untouched():
    before = component_flops("sdxl", "unet", height=768, width=768)
    arr = call_op_flops("sdxl", height=np.array([512, 768]), width=np.array([512, 768]))
    one = call_op_flops("sdxl", height=768, width=768)
    assert arr["attention"][1] == pytest.approx(one["attention"])
    assert component_flops("sdxl", "unet", height=768, width=768) == before
    fr = op_fractions({"model": ["sdxl", "sdxl"], "height": [512, 768], "width": [512, 768]})
    assert fr["attention"][0] + fr["conv"][0] + fr["gemm"][0] == pytest.approx(1.0)

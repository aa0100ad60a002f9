"""Ops launched and bytes moved per call, counted from the trace: hand-counted modules, a tiny denoiser, the table."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mlflow_energy.flops import traffic
from mlflow_energy.flops.reference import count_component
from mlflow_energy.flops.traffic import CallCounts, call_counts_frame, count_call, denoiser_call_counts

META = torch.device("meta")


def _linear_gelu() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU()).to(META)


def test_linear_gelu_counted_by_hand():
    c = count_call(_linear_gelu(), torch.zeros(2, 4, device=META))
    # addmm: bias 3 + x 8 + W^T 12 in, 6 out; gelu: 6 in, 6 out -> 41 floats of 4 bytes; t() is a view
    assert c == CallCounts(flops=2 * 2 * 4 * 3, ops=2, bytes=41 * 4)
    assert c.intensity == pytest.approx(48 / 164)


def test_float_bytes_counts_floats_at_the_runs_precision():
    c = count_call(_linear_gelu(), torch.zeros(2, 4, device=META), float_bytes=2)
    assert (c.ops, c.bytes) == (2, 41 * 2)


def test_views_launch_nothing_and_copies_launch_one():
    x = torch.zeros(6, 4, device=META)
    assert count_call(lambda t: t.view(4, 6).t()[:3].unsqueeze(0).expand(2, 3, 4), x) == CallCounts(0.0, 0, 0.0)
    c = count_call(lambda t: t.t().contiguous(), x)  # one copy kernel: 24 floats in, 24 out
    assert (c.ops, c.bytes) == (1, 48 * 4)


def test_attention_is_one_fused_kernel():
    q = torch.zeros(1, 2, 16, 8, device=META)
    c = count_call(torch.nn.functional.scaled_dot_product_attention, q, q, q)
    # q, k, v in and the output out (256 floats each); the 16 x 16 scores are never written
    assert (c.ops, c.bytes) == (1, 4 * 256 * 4)
    assert c.flops == 2 * (2 * 2 * 16 * 16 * 8)  # QK^T and PV, as the FLOP counter has them


@pytest.mark.parametrize("family", ["tiny-sdxl", "tiny-pixart-sigma"])
def test_denoiser_call_counts(family):
    from mlflow_energy.families import get_family
    from mlflow_energy.flops.count import _denoiser_text_tokens

    fam = get_family(family)
    name = next(c for c in fam.components if c in ("unet", "transformer"))
    spec = fam.components[name]
    px = 16 * fam.pixel_multiple
    one = denoiser_call_counts(family, height=px, width=px, batch=1)
    two = denoiser_call_counts(family, height=px, width=px, batch=2)
    big = denoiser_call_counts(family, height=2 * px, width=2 * px, batch=1)
    lh = px // fam.latent_downsample
    assert one.flops == count_component(spec["class"], spec["config"], role="denoise", lh=lh, lw=lh,
                                        text=_denoiser_text_tokens(fam), batch=1)
    assert one.ops > 50  # kernels per call: (almost) the same whatever the batch or the size
    assert abs(two.ops - one.ops) <= 0.02 * one.ops and abs(big.ops - one.ops) <= 0.02 * one.ops
    assert two.flops == 2 * one.flops and 1.5 * one.bytes < two.bytes < 2.1 * one.bytes
    fp32 = denoiser_call_counts(family, height=px, width=px, batch=1, precision="fp32")
    assert fp32.bytes == pytest.approx(2 * one.bytes, rel=0.02)  # ids and timesteps are not floats


def test_table_counts_what_it_lacks_once(tmp_path, monkeypatch):
    table = tmp_path / "counts.csv"
    keys = pd.DataFrame({"model": ["tiny-sd2"] * 3, "height": [64, 64, 128], "width": [64, 64, 128],
                         "call_batch": [2, 2, 2], "precision": ["fp16"] * 3})
    first = call_counts_frame(keys, table=table, save=True)
    assert len(first) == 3 and first["ops"].nunique() == 1 and first["bytes"].iloc[2] > first["bytes"].iloc[0]
    assert len(pd.read_csv(table)) == 2  # one row per distinct key

    def untraced(*args, **kwargs):
        raise AssertionError("traced again")

    monkeypatch.setattr(traffic, "denoiser_call_counts", untraced)
    again = call_counts_frame(keys, table=table)
    pd.testing.assert_frame_equal(again, first)


def test_packaged_table_covers_the_public_sizes():
    t = pd.read_csv(traffic.TABLE)
    sdxl = t[(t["model"] == "sdxl")]
    assert {512, 1024} <= set(sdxl["height"]) and sdxl["ops"].nunique() == 1
    assert (t["bytes"] > 0).all() and (t["flops"] > 0).all()

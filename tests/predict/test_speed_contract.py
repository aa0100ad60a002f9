"""What keeps a large prediction cheap: FLOPs per size cached across requests, the seen check per
distinct class of rows, the working frame's strings left as NumPy objects. Outputs never change."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from mlflow_energy.flops import frame as flops_frame_module
from mlflow_energy.flops.frame import flops_columns
from mlflow_energy.predict import seen as seen_module
from mlflow_energy.predict.seen import outside_rows


def _configs(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "model": rng.choice(["sd2", "sdxl", "sd1.5", "sd3-medium", "flux.1-dev"], n),
        "height": rng.choice([512, 768, 1024], n), "width": rng.choice([512, 768, 1024], n),
        "steps": rng.integers(1, 60, n), "guidance_scale": rng.choice([1.0, 3.5, 7.5], n),
        "batch_size": rng.choice([1, 2, 4], n),
    })


@pytest.fixture
def empty_size_cache(monkeypatch):
    monkeypatch.setattr(flops_frame_module, "_SIZE_CACHE", type(flops_frame_module._SIZE_CACHE)())
    return flops_frame_module._SIZE_CACHE


def test_flops_per_size_are_computed_once_then_served_from_the_cache(empty_size_cache, monkeypatch):
    df = _configs(500)
    cold = flops_columns(df)
    sizes = {(m, h // 8, w // 8) for m, h, w in zip(df["model"], df["height"], df["width"], strict=True)}
    assert set(empty_size_cache) == sizes  # one entry per (family, latent size), nothing more

    real_plan = flops_frame_module._plan

    def evaluated_again(*args):
        raise AssertionError("a closed form evaluated again for a cached size")

    monkeypatch.setattr(flops_frame_module, "_plan", lambda name: dataclasses.replace(
        real_plan(name), denoise_fn=evaluated_again, decode_fn=evaluated_again))
    warm = flops_columns(df.sample(frac=1.0, random_state=1).reset_index(drop=True))
    again = flops_columns(df)
    for col, values in cold.items():
        np.testing.assert_array_equal(again[col], values)  # identical, not approximately
        assert np.isfinite(warm[col]).all()


def test_the_size_cache_is_bounded_and_answers_the_same(empty_size_cache, monkeypatch):
    df = _configs(300, seed=2)
    full = flops_columns(df)
    empty_size_cache.clear()
    monkeypatch.setattr(flops_frame_module, "SIZE_CACHE_MAX", 3)
    small = flops_columns(df)
    assert len(empty_size_cache) <= 3
    for col, values in full.items():
        np.testing.assert_array_equal(small[col], values)


SEEN = {"families": ["sd2", "sdxl"], "precision_classes": ["half"], "hardware": ["A100", "H100"],
        "hardware_kinds": ["gpu"], "height": [512, 1024], "width": [512, 1024], "steps": [20, 50],
        "batch_size": [1, 4]}


def test_seen_check_runs_once_per_distinct_class_and_names_the_first_reason(monkeypatch):
    calls = []
    real = seen_module._class_why

    def counting(seen, row, descriptors):
        calls.append((row["model"], row["precision"], row["hardware"]))
        return real(seen, row, descriptors)

    monkeypatch.setattr(seen_module, "_class_why", counting)
    n = 2000
    rng = np.random.default_rng(3)
    cols = {"model": rng.choice(["sd2", "sdxl", "sd1.5"], n).astype(object),
            "precision": rng.choice(["fp16", "fp32"], n).astype(object),
            "hardware": rng.choice(["A100", "H100"], n).astype(object),
            "height": rng.choice([256, 512, 1024], n), "width": rng.choice([512, 2048], n),
            "steps": rng.integers(10, 60, n), "batch_size": rng.integers(1, 6, n)}
    bad, why = outside_rows(SEEN, cols, np.full(n, "", dtype=object), {}, {})
    assert len(calls) == len(set(calls)) == 12  # 3 families x 2 precisions x 2 GPUs, not one per row
    for i in range(n):  # the reason each row gets, in the order families, precision, ranges
        expected = None
        if cols["model"][i] not in SEEN["families"]:
            expected = ("model", cols["model"][i], "families sd2, sdxl")
        elif cols["precision"][i] == "fp32":
            expected = ("precision", "fp32", "precisions fp16/bf16")
        else:
            for col in ("height", "width", "steps", "batch_size"):
                lo, hi = SEEN[col]
                if not lo <= cols[col][i] <= hi:
                    expected = (col, int(cols[col][i]), f"{col} {lo} to {hi}")
                    break
        assert why[i] == expected, i
        assert bad[i] == (expected is not None)


def test_the_working_frame_keeps_strings_as_numpy_objects():
    from mlflow_energy.predict.frame import numpy_frame

    frame = numpy_frame({"model": np.array(["sd2", "sdxl"], dtype=object), "steps": np.array([20, 30])})
    assert frame["model"].dtype == object and frame["steps"].dtype == np.int64
    assert frame["model"].tolist() == ["sd2", "sdxl"]

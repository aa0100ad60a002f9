"""Quality: PSNR/SSIM behave, fidelity to the reference grows with steps, the quality model."""

from __future__ import annotations

import importlib.util
import math

import mlflow
import pandas as pd
import pytest
import torch

from mlflow_energy import schema
from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError, MissingDependencyError
from mlflow_energy.search.quality import (
    PSNR_MAX_DB,
    QualityModel,
    clip_score,
    log_quality_model,
    psnr,
    reference_config,
    reference_quality,
    render,
    ssim,
)


def _image(seed: int, shape: tuple[int, ...] = (2, 3, 24, 24)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_psnr_known_values() -> None:
    ref = torch.full((1, 3, 8, 8), 0.5)
    assert psnr(ref + 0.1, ref) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(ref + 0.01, ref) == pytest.approx(40.0)
    assert psnr(ref, ref) == PSNR_MAX_DB
    assert psnr(ref[0], ref[0]) == PSNR_MAX_DB  # (C, H, W) accepted


def test_ssim_properties() -> None:
    ref = _image(0)
    assert ssim(ref, ref) == pytest.approx(1.0)
    noisy = [(ref + s * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
             for s in (0.02, 0.1, 0.5)]
    scores = [ssim(n, ref) for n in noisy]
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.8
    assert ssim(noisy[1], ref) == pytest.approx(ssim(ref, noisy[1]))  # symmetric
    # a brightness shift keeps structure: SSIM stays high while PSNR drops
    shifted = (ref * 0.8 + 0.1)
    assert ssim(shifted, ref) > ssim(noisy[2], ref)
    # images smaller than the 11-px window use a window of their own size
    small = _image(2, (1, 3, 6, 6))
    assert ssim(small, small) == pytest.approx(1.0)


def test_ssim_matches_the_formula_on_constant_images() -> None:
    # constant images: variances and covariance are 0, SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1)
    x, y = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    assert ssim(x, y) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1))


def test_shape_mismatch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="reference"):
        psnr(_image(0), _image(1, (1, 3, 16, 16)))


def test_more_steps_give_higher_fidelity_on_a_tiny_family() -> None:
    from mlflow_energy.measure.runner import PipelineCache

    base = InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1)
    pipe = PipelineCache().get(base.validate())
    reference = render(reference_config(base, 8), pipeline=pipe)
    scores = [reference_quality(render(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=s), pipe), reference)
              for s in (1, 2, 4)]
    psnrs = [q[schema.M_QUALITY_PSNR] for q in scores]
    ssims = [q[schema.M_QUALITY_SSIM] for q in scores]
    assert psnrs == sorted(psnrs) and psnrs[-1] - psnrs[0] > 5  # strictly better with steps
    assert ssims == sorted(ssims) and 0 < ssims[0] < ssims[-1] <= 1
    # the reference against itself: same seed, same images
    assert reference_quality(render(reference_config(base, 8), pipe), reference)[schema.M_QUALITY_PSNR] == PSNR_MAX_DB


def _runs() -> pd.DataFrame:
    rows = []
    for steps in (2, 4, 8, 16):
        rows.append({"model": "sd2", "scheduler": "default", "steps": steps,
                     "quality/psnr_db": 12 + 6 * math.log(steps), "quality/ssim": 0.4 + 0.1 * math.log(steps)})
        rows.append({"model": "sd2", "scheduler": "EulerDiscreteScheduler", "steps": steps,
                     "quality/psnr_db": 14 + 6 * math.log(steps), "quality/ssim": 0.5 + 0.1 * math.log(steps)})
    rows.append({"model": "sd2", "scheduler": "default", "steps": 50, "quality/psnr_db": PSNR_MAX_DB, "quality/ssim": 1.0})
    return pd.DataFrame(rows)


def test_quality_model_lines_in_log_steps() -> None:
    qm = QualityModel.fit(_runs())
    frame = pd.DataFrame({"model": ["sd2", "sd2", "sd2", "sdxl"],
                          "scheduler": ["default", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "default"],
                          "steps": [10, 10, 10, 10]})
    out = qm.predict(None, frame)
    assert out["quality_psnr_db"][0] == pytest.approx(12 + 6 * math.log(10))  # the cap point is left out
    assert out["quality_psnr_db"][1] == pytest.approx(14 + 6 * math.log(10))
    # an unseen scheduler uses the family's pooled line, between the two
    assert out["quality_psnr_db"][0] < out["quality_psnr_db"][2] < out["quality_psnr_db"][1]
    assert math.isnan(out["quality_psnr_db"][3])  # unseen family: unknown, not guessed
    # monotone: a fit that would fall with steps is flattened to the mean
    falling = pd.DataFrame({"model": ["sd2"] * 3, "steps": [2, 4, 8], "quality/psnr_db": [30.0, 28.0, 26.0]})
    flat = QualityModel.fit(falling).predict(None, pd.DataFrame({"model": ["sd2", "sd2"], "steps": [2, 64]}))
    assert flat["quality_psnr_db"].tolist() == pytest.approx([28.0, 28.0])
    with pytest.raises(ConfigError, match="quality"):
        QualityModel.fit(pd.DataFrame({"model": ["sd2"], "steps": [4]}))


def test_quality_model_is_a_registered_pyfunc(tracking_uri: str) -> None:
    qm = QualityModel.fit(_runs())
    mlflow.set_experiment("quality")
    with mlflow.start_run():
        log_quality_model(qm, registered_model_name="quality")
    loaded = mlflow.pyfunc.load_model("models:/quality/1")
    frame = pd.DataFrame({"model": ["sd2"], "scheduler": ["default"], "steps": [20]})
    assert loaded.predict(frame)["quality_psnr_db"][0] == pytest.approx(qm.predict(None, frame)["quality_psnr_db"][0])


def test_clip_score_needs_a_local_model_and_torchmetrics(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="clip_model"):
        clip_score(_image(0), "a cat", str(tmp_path / "missing"))
    if importlib.util.find_spec("torchmetrics") is None:
        with pytest.raises(MissingDependencyError, match=r"mlflow-energy\[clip\]"):
            clip_score(_image(0), "a cat", str(tmp_path))

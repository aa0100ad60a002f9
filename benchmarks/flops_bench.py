"""Closed-form FLOPs vs torch's FLOP counter on the meta device: agreement and speed, one run.

For each full-size family at one image size: the meta counter (build every component on
``meta``, count one forward of each) against :func:`mlflow_energy.flops.config_flops`, then
the vectorised :func:`mlflow_energy.flops.flops_frame` on ``--rows`` random configurations.

    python benchmarks/flops_bench.py                 # all full-size families at 1024 px, 100k rows
    python benchmarks/flops_bench.py --families sd2,flux.1-dev --size 512 --rows 10000
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from mlflow_energy.config import InferenceConfig
from mlflow_energy.families import family_names, get_family
from mlflow_energy.families._build import build_on_meta
from mlflow_energy.flops import component_flops, config_flops, flops_frame
from mlflow_energy.flops.count import _denoiser_text_tokens
from mlflow_energy.flops.reference import count_component


def meta_config_flops(family: str, height: int, width: int) -> tuple[dict[str, float], float, float]:
    """Per-component FLOPs counted on meta; (counts, seconds building, seconds counting)."""
    fam = get_family(family)
    counts: dict[str, float] = {}
    build_s = count_s = 0.0
    for comp, spec in sorted(fam.components.items()):
        t0 = time.perf_counter()
        model = build_on_meta(spec["class"], dict(spec["config"]))
        t1 = time.perf_counter()
        text_encoder = spec["class"].startswith("transformers.")
        role = "text" if text_encoder else ("decode" if "Autoencoder" in spec["class"] else "denoise")
        counts[comp] = count_component(
            spec["class"], dict(spec["config"]), role=role, lh=height // fam.latent_downsample,
            lw=width // fam.latent_downsample, text=fam.text_lengths[comp] if text_encoder else _denoiser_text_tokens(fam),
            model=model,
        )
        t2 = time.perf_counter()
        build_s += t1 - t0
        count_s += t2 - t1
        del model
    return counts, build_s, count_s


# Elementwise work that FLOP counts leave out, estimated per output (or input, for reductions)
# element: softmax ~5 (max, subtract, exp, sum, divide), norms ~5, tanh-GELU ~8, SiLU ~4,
# any other arithmetic op 1; data movement, views and tensor creation 0; matmuls are counted.
_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "convolution", "_scaled_dot_product_efficient_attention",
           "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention"}
_MOVEMENT = {
    "view", "_unsafe_view", "expand", "t", "transpose", "permute", "split", "split_with_sizes", "clone", "copy_",
    "cat", "stack", "unsqueeze", "squeeze", "slice", "select", "zeros", "ones", "empty", "arange", "full", "detach",
    "alias", "upsample_nearest2d", "upsample_nearest3d", "_to_copy", "contiguous", "reshape", "unbind",
    "constant_pad_nd", "index", "repeat", "repeat_interleave", "pixel_shuffle", "pixel_unshuffle", "embedding",
    "lift_fresh", "new_zeros", "new_ones", "new_empty", "fill_", "zero_", "index_select", "gather", "flatten",
    "unflatten", "as_strided", "_reshape_alias", "roll", "narrow", "unfold", "_unsafe_index", "empty_like",
    "zeros_like", "ones_like", "full_like", "scalar_tensor", "_local_scalar_dense", "lift_fresh_copy", "triu", "tril",
    "masked_fill", "masked_fill_", "embedding_dense_backward", "argmax", "eq", "ne", "ge", "le", "gt", "lt",
}
_WEIGHT = {"_softmax": 5, "_safe_softmax": 5, "native_layer_norm": 5, "native_group_norm": 5, "_fused_rms_norm": 5,
           "gelu": 8, "silu": 4}


def elementwise_estimate(family: str, height: int, width: int) -> dict[str, tuple[float, float]]:
    """Per component: (matmul FLOPs counted, elementwise FLOPs estimated) of one call, 1 image, on meta."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Elementwise(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.total = 0.0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name not in _MATMUL and name not in _MOVEMENT:
                outs = out if isinstance(out, (tuple, list)) else (out,)
                n_out = sum(o.numel() for o in outs if isinstance(o, torch.Tensor))
                n_in = max((a.numel() for a in args if isinstance(a, torch.Tensor)), default=0)
                self.total += _WEIGHT.get(name, 1) * max(n_out, n_in)
            return out

    from mlflow_energy.flops.reference import _decoder_call, _denoiser_call, _text_call

    fam = get_family(family)
    lh, lw = height // fam.latent_downsample, width // fam.latent_downsample
    result = {}
    for comp, spec in sorted(fam.components.items()):
        model = build_on_meta(spec["class"], dict(spec["config"]))
        cls = spec["class"].rpartition(".")[2]
        mode = _Elementwise()
        with mode, torch.no_grad():
            if spec["class"].startswith("transformers."):
                _text_call(model, cls, fam.text_lengths[comp], 1)
            elif "Autoencoder" in cls:
                _decoder_call(model, cls, spec["config"], lh, lw, 1)
            else:
                _denoiser_call(model, cls, spec["config"], lh, lw, _denoiser_text_tokens(fam), 1)
        result[comp] = (component_flops(family, comp, height=height, width=width), mode.total)
    return result


def random_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = family_names(tiny=False)
    model = rng.choice(names, n)
    side = rng.choice([256, 512, 768, 1024, 1280, 1536, 2048], size=(n, 2))
    return pd.DataFrame({
        "model": model, "height": side[:, 0], "width": side[:, 1], "steps": rng.integers(1, 60, n),
        "guidance_scale": rng.choice([0.0, 1.0, 3.5, 7.5], n), "batch_size": rng.integers(1, 5, n),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(family_names(tiny=False)))
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--elementwise", default="sd2:768,flux.1-dev:1024",
                        help="FAMILY:SIZE list for the elementwise-share estimate ('' to skip)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    print(f"meta counter vs closed form, one config per family at {args.size}x{args.size}")
    print(f"{'family':<16} {'max rel err':>11} {'meta build s':>12} {'meta count s':>12} {'closed s':>10} {'speed-up':>9}")
    meta_total = closed_total = 0.0
    n_fam = 0
    for family in args.families.split(","):
        counts, build_s, count_s = meta_config_flops(family, args.size, args.size)
        err = max(abs(component_flops(family, c, height=args.size, width=args.size) - v) / v for c, v in counts.items())
        cfg = InferenceConfig(model=family, height=args.size, width=args.size)
        reps = 200
        t0 = time.perf_counter()
        for _ in range(reps):
            config_flops(cfg)
        closed_s = (time.perf_counter() - t0) / reps
        meta_total += build_s + count_s
        closed_total += closed_s
        n_fam += 1
        print(f"{family:<16} {err:>11.1e} {build_s:>12.3f} {count_s:>12.3f} {closed_s:>10.2e} "
              f"{(build_s + count_s) / closed_s:>8.0f}x")
    print(f"mean per config: meta counter {meta_total / n_fam:.2f} s ({n_fam / meta_total:.2f} configs/s), "
          f"closed form config_flops {closed_total / n_fam * 1e6:.0f} us ({n_fam / closed_total:,.0f} configs/s)")

    df = random_frame(args.rows)
    flops_frame(df.head(100))  # warm the per-family caches
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        flops_frame(df)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"flops_frame: {args.rows:,} rows, {df['model'].nunique()} families, best of 5 {best * 1e3:.1f} ms "
          f"({args.rows / best:,.0f} configs/s; median {np.median(times) * 1e3:.1f} ms)")

    for item in filter(None, args.elementwise.split(",")):
        family, size = item.split(":")
        est = elementwise_estimate(family, int(size), int(size))
        print(f"elementwise work not counted, {family} at {size} px (one call, 1 image):")
        for comp, (counted, extra) in est.items():
            print(f"  {comp:<16} counted {counted:.3e}  elementwise ~{extra:.3e}  ({100 * extra / counted:.2f}% on top)")
        phases = config_flops(InferenceConfig(model=family, height=int(size), width=int(size)))
        fam = get_family(family)
        passes = fam.passes(fam.default_guidance_scale)
        text_x = sum(e for c, (_, e) in est.items() if c in fam.text_encoders) * passes
        extra = text_x + fam.default_steps * passes * est[fam.denoiser][1] + est["vae"][1]
        print(f"  per image at default steps: ~{100 * extra / phases['total']:.2f}% on top of the counted total")


if __name__ == "__main__":
    main()

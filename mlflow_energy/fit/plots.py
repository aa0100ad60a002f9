"""Plots of a fit, written as PNG files (matplotlib, Agg backend): log-log energy vs FLOPs with the
fitted line per family (per call, the registered law; per image, each family's law alone),
predicted vs measured (cross-validated), residuals."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlflow_energy import schema
from mlflow_energy._plotstyle import family_style, legend_outside, log_axes
from mlflow_energy.fit.features import call_terms
from mlflow_energy.fit.saturation import call_intensity, op_shares

if TYPE_CHECKING:
    from mlflow_energy.fit.result import FitResult


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write at 110 dpi (outside legends included) and close one figure."""
    from mlflow_energy._plotstyle import save

    fig.tight_layout()
    return save(fig, path)


def make_plots(result: FitResult, out_dir: Path) -> list[Path]:
    """Write the plots of ``result`` into ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    frame = result.frame
    written: list[Path] = []
    for phase, pm in result.model.phases.items():
        col = f"energy_{phase}"
        have = frame[frame[col].notna()]
        hws = sorted(have["hardware"].unique())
        fig, axes = plt.subplots(1, len(hws), figsize=(6.5 * len(hws), 4.5), squeeze=False)
        for ax, hw in zip(axes[0], hws, strict=True):
            sub = have[have["hardware"] == hw]
            for fam, g in sub.groupby("model"):
                lx, log_calls = call_terms(g, phase)
                colour, marker = family_style(str(fam))
                ax.scatter(np.exp(lx), g[col].to_numpy(dtype=float) / np.exp(log_calls), s=22, color=colour,
                           marker=marker, label=fam, edgecolors="none")
                xs = np.linspace(lx.min() - 0.1, lx.max() + 0.1, 20)
                if pm.saturating is not None:  # the law that predicts: the shared saturating curve
                    first = g.iloc[[0] * len(xs)]
                    attention, conv = op_shares(first, phase)
                    peak = result.model.hardware.get(hw, {}).get("hw_tflops", float("nan")) * 1e12
                    li = call_intensity(g, phase)  # along the curve: the family's intensity, linear in log FLOPs
                    if li is not None:
                        li = np.polyval(np.polyfit(lx, li, 1) if np.ptp(lx) > 0 else [0.0, float(li.mean())], xs)
                    ys, _ = pm.saturating.log_predict(xs, models=first["model"].to_numpy(dtype=str),
                                                      hardware=first["hardware"].to_numpy(dtype=str),
                                                      log_peak=np.full(len(xs), np.log(peak)), attention=attention,
                                                      conv=conv, intensity=li)
                    ax.plot(np.exp(xs), np.exp(ys), color=colour, lw=1.2)
                else:
                    a, b, _, _ = pm.law_of(fam, hw)
                    ax.plot(np.exp(xs), np.exp(a + b * xs), color=colour, lw=1.2)
            cross = pm.cross.get(hw)
            if cross is not None and pm.saturating is None:
                xall = call_terms(sub, phase)[0]
                xs = np.linspace(xall.min() - 0.2, xall.max() + 0.2, 20)
                ax.plot(np.exp(xs), np.exp(cross.log_predict(xs)), "k--", lw=1,
                        label=f"cross-family b={cross.b:.2f}")
            log_axes(ax)
            ax.set_xlabel(f"FLOP per call ({phase}, whole batch)")
            ax.set_ylabel("J per call")
            ax.set_title(f"{hw} ({pm.law_form} law)", fontsize=9)
            legend_outside(ax)
        written.append(_save(fig, out_dir / f"energy_vs_flops_{phase}.png"))

    laws = result.family_laws
    if laws is not None and len(laws):
        written.append(_family_laws_plot(plt, frame, laws, out_dir / "family_laws_total.png"))

    pred = result.cv_predictions
    tot = pred[pred["phase"] == schema.PHASE_TOTAL] if len(pred) else pred
    if len(tot):
        schemes = list(dict.fromkeys(tot["scheme"]))
        fig, axes = plt.subplots(1, len(schemes), figsize=(5 * len(schemes), 4.5), squeeze=False)
        for ax, scheme in zip(axes[0], schemes, strict=True):
            g = tot[tot["scheme"] == scheme]
            ax.scatter(g["measured_j"], g["law_j"], s=14, alpha=0.6, label="power law")
            ax.scatter(g["measured_j"], g["corrected_j"], s=14, alpha=0.6, label="law + corrector")
            lo, hi = g[["measured_j", "law_j", "corrected_j"]].min().min(), g[["measured_j", "law_j", "corrected_j"]].max().max()
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            log_axes(ax)
            ax.set_xlabel("measured J per image")
            ax.set_ylabel("predicted J per image (held out)")
            ax.set_title(f"{scheme}: total", fontsize=9)
            legend_outside(ax)
        written.append(_save(fig, out_dir / "predicted_vs_measured.png"))

        fig, axes = plt.subplots(1, len(schemes), figsize=(5 * len(schemes), 4), squeeze=False)
        for ax, scheme in zip(axes[0], schemes, strict=True):
            g = tot[tot["scheme"] == scheme]
            ax.scatter(g["measured_j"], np.log(g["law_j"] / g["measured_j"]), s=14, alpha=0.6, label="power law")
            ax.scatter(g["measured_j"], np.log(g["corrected_j"] / g["measured_j"]), s=14, alpha=0.6,
                       label="law + corrector")
            ax.axhline(0.0, color="k", lw=0.8)
            log_axes(ax, y=False)
            ax.set_xlabel("measured J per image")
            ax.set_ylabel("log(predicted / measured)")
            ax.set_title(f"{scheme}: residuals of the total", fontsize=9)
            legend_outside(ax)
        written.append(_save(fig, out_dir / "residuals.png"))
    return written


def _family_laws_plot(plt: Any, frame: Any, laws: Any, path: Path) -> Path:
    """Energy per image against FLOPs per image, one panel per hardware, each family's own law
    (:func:`~mlflow_energy.fit.validation.family_laws`) as a line with its slope, span and LOCO error."""
    hws = sorted(laws["hardware"].unique())
    fig, axes = plt.subplots(1, len(hws), figsize=(9.0 * len(hws), 4.5), squeeze=False)
    for ax, hw in zip(axes[0], hws, strict=True):
        for _, law in laws[laws["hardware"] == hw].iterrows():
            g = frame[(frame["model"] == law["family"]) & (frame["hardware"] == hw)]
            colour, marker = family_style(str(law["family"]))
            f = g["flops_total"].to_numpy(dtype=float)
            ax.scatter(f, g["energy_total"].to_numpy(dtype=float), s=22, color=colour, marker=marker,
                       edgecolors="none", label=f"{law['family']}: b={law['b']:.2f}, {law['flops_span']:.0f}x, "
                                                f"LOCO {law['loco_mape']:.1%}")
            xs = np.geomspace(f.min() / 1.2, f.max() * 1.2, 20)
            ax.plot(xs, law["a"] * xs ** law["b"], color=colour, lw=1.2)
        log_axes(ax)
        ax.set_xlabel("FLOP per image (total)")
        ax.set_ylabel("J per image (total)")
        ax.set_title(f"{hw}: E = a * FLOPs^b per family", fontsize=9)
        legend_outside(ax)
    return _save(fig, path)

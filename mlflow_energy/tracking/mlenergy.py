"""Import the public ML.ENERGY leaderboard v2 and v3 text-to-image measurements as MLflow runs.

v3 (``data/mlenergy_v3_text_to_image.csv``): Zeus/NVML board energy of the whole pipeline call on
B200 (and H100 for SANA 1.5 and Hunyuan-DiT), bf16, the xDiT 0.4.5 runtime, 20-50 steps, batch
sizes 1 to 16. SANA 1.5 1.6B maps to the ``sana-1.6b`` family (its architecture file is SANA 1.5
1.6B); SANA 1.5 4.8B and Hunyuan-DiT have no family and are skipped with a count. Every run
records its runtime (``diffusers`` or ``xdit-0.4.5``), data source (``mlenergy-v2`` or
``mlenergy-v3``) and energy scope (``total``) as tags, so the fit can group by them.

The packaged copy is ``data/mlenergy_v2_text_to_image.csv`` (provenance in ``data/PROVENANCE.md``):
Zeus/NVML GPU energy of the whole pipeline call on A100-SXM4-40GB and H100-SXM5-80GB, fp16,
25 steps, batch sizes 1 to 64. Each row becomes one FINISHED run of kind ``measurement`` with the
source tag ``external:mlenergy-v2``, the hardware from the file, FLOPs counted analytically and the
per-image energy as ``energy/total_j`` (the phases are not in the source). Rows whose model has
no family here (Kandinsky) are skipped and counted. Importing twice logs nothing new: a row is
identified by its config hash and hardware.

Example:
    >>> from mlflow_energy.tracking.mlenergy import import_mlenergy
    >>> report = import_mlenergy(experiment="mlenergy")          # doctest: +SKIP
    >>> report.logged, report.skipped_no_family                  # doctest: +SKIP
    (73, 13)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlflow_energy import schema
from mlflow_energy._version import __version__
from mlflow_energy.errors import ConfigError

SOURCE = "external:mlenergy-v2"
SOURCE_V3 = "external:mlenergy-v3"
# package data, found next to this file (works for wheels and editable installs alike)
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DATA_FILE = "mlenergy_v2_text_to_image.csv"
DATA_FILE_V3 = "mlenergy_v3_text_to_image.csv"

#: Hub ids of the leaderboard to family names (see the data README): Openjourney v4 is an SD 1.5
#: fine-tune; SDXL-Turbo is the SDXL architecture, run at its own resolution, steps and guidance.
MODEL_FAMILIES: dict[str, str] = {
    "stabilityai/stable-diffusion-2-1": "sd2",
    "prompthero/openjourney-v4": "sd1.5",
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
    "stabilityai/sdxl-turbo": "sdxl",
    "segmind/SSD-1B": "ssd-1b",
    "stabilityai/stable-diffusion-3-medium-diffusers": "sd3-medium",
    # v3 (B200/H100, xDiT). SANA 1.5 1.6B is the architecture of families/data/sana-1.6b.json
    # (qk_norm rms_norm_across_heads); SANA 1.5 4.8B and Hunyuan-DiT have no family here.
    "black-forest-labs/FLUX.1-dev": "flux.1-dev",
    "stabilityai/stable-diffusion-3.5-large": "sd3.5-large",
    "stabilityai/stable-diffusion-3.5-medium": "sd3.5-medium",
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": "pixart-sigma",
    "Efficient-Large-Model/SANA1.5_1.6B_1024px_diffusers": "sana-1.6b",
}
_PRECISIONS = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}


@dataclass
class ImportReport:
    """What an import did."""

    logged: int = 0
    already_present: int = 0
    skipped_no_family: int = 0
    skipped_models: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)



def default_csv() -> Path:
    """The packaged copy of the leaderboard v2 data."""
    return DATA_DIR / DATA_FILE


def default_csvs() -> list[Path]:
    """Every packaged leaderboard file: v2 and v3."""
    return [DATA_DIR / DATA_FILE, DATA_DIR / DATA_FILE_V3]


def source_of(df: pd.DataFrame) -> tuple[str, str, str]:
    """``(energy_source tag, data source, runtime)`` of a leaderboard file, from its own columns."""
    v3 = df.get("source", pd.Series(dtype=str)).astype(str).str.endswith("_v3").any() or "ulysses_degree" in df
    if not v3:
        return SOURCE, "mlenergy-v2", "diffusers"
    notes = " ".join(df.get("notes", pd.Series(dtype=str)).astype(str).unique())
    match = re.search(r"xDiT (\d+(?:\.\d+)*)", notes)
    return SOURCE_V3, "mlenergy-v3", f"xdit-{match.group(1)}" if match else "xdit"


def hardware_name(gpu_variant: str) -> str:
    """``"H100-SXM5-80GB (NVML name 'H100 80GB HBM3')"`` -> ``"H100-SXM5-80GB"``."""
    return str(gpu_variant).split(" (", 1)[0].strip()


def read_rows(csv_path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows mapped to families, and the rows skipped for having no family."""
    path = Path(csv_path) if csv_path else default_csv()
    if not path.is_file():
        raise ConfigError("csv", str(path), "the path of an ML.ENERGY text-to-image CSV")
    df = pd.read_csv(path)
    need = {"model", "gpu_variant", "height", "width", "steps", "batch_size", "precision", "guidance_scale",
            "energy_j_per_image"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ConfigError("csv columns", ", ".join(missing), "the columns of the ML.ENERGY text-to-image CSV")
    fam = df["model"].map(MODEL_FAMILIES)
    if "num_gpus" in df.columns:  # the laws are per GPU: multi-GPU rows have no family here
        fam = fam.where(pd.to_numeric(df["num_gpus"], errors="coerce").fillna(1) == 1)
    return df.loc[fam.notna()].assign(family=fam[fam.notna()]), df.loc[fam.isna()]


def _scope(row: pd.Series) -> str:
    """The energy scope of a leaderboard row: both files hold board energy (NVML total counter)."""
    text = str(row.get("energy_scope", "")).lower()
    return schema.SCOPE_DYNAMIC if "idle" in text and "subtract" in text else schema.SCOPE_TOTAL


def import_mlenergy(csv_path: str | Path | None = None, *, experiment: str,
                    intensity: str | float | None = None) -> ImportReport:
    """Log the rows as measurement runs into ``experiment`` (created if missing); idempotent.

    Without ``csv_path`` both packaged files (v2 and v3) are imported; the report sums them.

    ``carbon/co2e_g`` is logged at the grid intensity ``intensity`` (default: world average),
    recorded as ``carbon/intensity_g_per_kwh`` and the ``carbon_region`` param.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from mlflow_energy.carbon import co2e_g, grid_intensity
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.families import get_family
    from mlflow_energy.flops import config_flops

    if csv_path is None:
        total = ImportReport()
        for path in default_csvs():
            rep = import_mlenergy(path, experiment=experiment, intensity=intensity)
            total.logged += rep.logged
            total.already_present += rep.already_present
            total.skipped_no_family += rep.skipped_no_family
            total.skipped_models = sorted({*total.skipped_models, *rep.skipped_models})
            total.run_ids += rep.run_ids
        return total
    rows, skipped = read_rows(csv_path)
    source, data_source, runtime = source_of(pd.concat([rows, skipped]))
    grid = grid_intensity(intensity)
    report = ImportReport(skipped_no_family=len(skipped), skipped_models=sorted(skipped["model"].unique()))
    client = MlflowClient()
    exp = mlflow.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    seen: set[tuple[str, str]] = set()
    token = None
    while True:
        page = client.search_runs([exp_id], filter_string=f"tags.`{schema.T_ENERGY_SOURCE}` = '{source}'",
                                  max_results=1000, page_token=token)
        seen |= {(r.data.tags.get(schema.T_CONFIG_HASH, ""), r.data.tags.get(schema.T_HARDWARE, "")) for r in page}
        token = page.token
        if not token:
            break
    for _, row in rows.iterrows():
        precision = _PRECISIONS.get(str(row["precision"]), str(row["precision"]))
        cfg = InferenceConfig(
            model=row["family"], weights=str(row["model"]), height=int(row["height"]), width=int(row["width"]),
            steps=int(row["steps"]), guidance_scale=float(row["guidance_scale"]), precision=precision,
            batch_size=int(row["batch_size"]), device="cuda", repeats=int(row.get("n_images_measured", 1) or 1),
        )
        hardware = hardware_name(row["gpu_variant"])
        key = (cfg.config_hash(), hardware)
        if key in seen:
            report.already_present += 1
            continue
        fam = get_family(cfg.model)
        flops = config_flops(cfg)
        energy = float(row["energy_j_per_image"])
        params = {
            schema.P_MODEL: cfg.model, schema.P_WEIGHTS: cfg.weights, schema.P_HEIGHT: cfg.height,
            schema.P_WIDTH: cfg.width, schema.P_STEPS: cfg.steps, schema.P_GUIDANCE_SCALE: cfg.guidance_scale,
            schema.P_CFG: str(fam.uses_cfg(cfg.guidance_scale)).lower(), schema.P_PRECISION: cfg.precision,
            schema.P_BATCH_SIZE: cfg.batch_size, schema.P_DEVICE: "cuda", schema.P_CARBON_REGION: grid.code,
        }
        metrics = {
            schema.M_ENERGY_TOTAL: energy,
            schema.M_CARBON_CO2E: co2e_g(energy, grid.g_per_kwh),
            schema.M_CARBON_INTENSITY: grid.g_per_kwh,
            **{schema.flops_key(p): float(flops[p]) for p in schema.FLOPS_PHASES if p in flops},
        }
        if pd.notna(row.get("time_per_image_s")):
            metrics[schema.M_TIME_TOTAL] = float(row["time_per_image_s"])
        if pd.notna(row.get("avg_power_w")):
            metrics[schema.M_POWER_AVG] = float(row["avg_power_w"])
        tags = {
            schema.T_KIND: schema.KIND_MEASUREMENT, schema.T_ENERGY_SOURCE: source, schema.T_HARDWARE: hardware,
            schema.T_RUNTIME: runtime, schema.T_DATA_SOURCE: data_source, schema.T_ENERGY_SCOPE: _scope(row),
            schema.T_CONFIG_HASH: key[0], schema.T_VERSION: __version__,
            schema.T_MLENERGY_ROW: str(row.get("source_path", ""))[:500],
            schema.T_RUN_NAME: f"{row['model'].split('/')[-1]}-bs{cfg.batch_size}-{hardware}",
        }
        if pd.notna(row.get("power_limit_w")):
            tags[schema.T_POWER_LIMIT] = str(int(row["power_limit_w"]))
        now = int(time.time() * 1000)
        run = client.create_run(exp_id, tags={schema.T_RUN_NAME: tags[schema.T_RUN_NAME]})
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
        seen.add(key)
        report.logged += 1
        report.run_ids.append(run.info.run_id)
    return report

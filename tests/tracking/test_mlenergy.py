"""The ML.ENERGY leaderboard importer, into a real SQLite tracking store."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_energy import schema
from mlflow_energy.tracking.mlenergy import MODEL_FAMILIES, SOURCE, default_csv, hardware_name, read_rows


def test_packaged_csv_maps_every_model_but_kandinsky():
    rows, skipped = read_rows()
    assert len(rows) + len(skipped) == len(pd.read_csv(default_csv())) == 86
    assert set(skipped["model"].str.split("/").str[0]) == {"kandinsky-community"}
    assert set(rows["family"]) == {"sd2", "sd1.5", "sdxl", "ssd-1b", "sd3-medium"}
    turbo = rows[rows["model"] == "stabilityai/sdxl-turbo"]
    assert set(turbo["family"]) == {"sdxl"} and set(turbo["height"]) == {512}  # its own resolution
    from mlflow_energy.families import family_names

    assert set(MODEL_FAMILIES.values()) <= set(family_names())


def test_hardware_name_drops_the_nvml_note():
    assert hardware_name("H100-SXM5-80GB (NVML name 'H100 80GB HBM3')") == "H100-SXM5-80GB"


def small_csv(tmp_path):
    df = pd.read_csv(default_csv())
    keep = pd.concat([
        df[df["model"] == "stabilityai/sdxl-turbo"].head(2),
        df[df["model"] == "prompthero/openjourney-v4"].head(2),
        df[df["model"].str.startswith("kandinsky")].head(1),
    ])
    path = tmp_path / "subset.csv"
    keep.to_csv(path, index=False)
    return path, keep


def test_import_logs_runs_once_with_total_only_and_flops(tracking_uri, tmp_path):
    from mlflow_energy.cli import main

    path, keep = small_csv(tmp_path)
    result = CliRunner().invoke(main, ["import-mlenergy", str(path), "--experiment", "mle"])
    assert result.exit_code == 0, result.output
    assert "logged 4 run(s)" in result.output and "skipped 1 row(s)" in result.output and "kandinsky" in result.output
    again = CliRunner().invoke(main, ["import-mlenergy", str(path), "--experiment", "mle"])
    assert "logged 0 run(s)" in again.output and "4 already present" in again.output

    exp = mlflow.get_experiment_by_name("mle")
    runs = mlflow.search_runs([exp.experiment_id])
    assert len(runs) == 4
    assert set(runs[f"tags.{schema.T_ENERGY_SOURCE}"]) == {SOURCE}
    assert set(runs[f"tags.{schema.T_KIND}"]) == {schema.KIND_MEASUREMENT}
    assert set(runs[f"tags.{schema.T_HARDWARE}"]) <= {"A100-SXM4-40GB", "H100-SXM5-80GB"}
    assert set(runs["status"]) == {"FINISHED"}
    assert f"metrics.{schema.M_ENERGY_DENOISE}" not in runs.columns  # whole pipeline only
    expected = sorted(keep[~keep["model"].str.startswith("kandinsky")]["energy_j_per_image"])
    assert sorted(runs[f"metrics.{schema.M_ENERGY_TOTAL}"]) == pytest.approx(expected)
    assert (runs[f"metrics.{schema.M_FLOPS_TOTAL}"] > 1e12).all()
    assert (runs[f"metrics.{schema.M_CARBON_INTENSITY}"] == 475.0).all()
    co2 = runs[f"metrics.{schema.M_ENERGY_TOTAL}"] / 3.6e6 * 475.0
    assert runs[f"metrics.{schema.M_CARBON_CO2E}"].to_numpy() == pytest.approx(co2.to_numpy())
    assert set(runs[f"params.{schema.P_MODEL}"]) == {"sdxl", "sd1.5"}


def test_unknown_csv_path_is_one_line(tracking_uri, tmp_path):
    from mlflow_energy.cli import main

    result = CliRunner().invoke(main, ["import-mlenergy", str(tmp_path / "nope.csv"), "--experiment", "x"])
    assert result.exit_code == 2 and "csv=" in result.output


def test_v3_maps_sana_1_5_1_6b_and_skips_what_has_no_family():
    from mlflow_energy.tracking.mlenergy import DATA_DIR, DATA_FILE_V3, source_of

    rows, skipped = read_rows(DATA_DIR / DATA_FILE_V3)
    assert len(rows) + len(skipped) == 51
    assert set(rows["family"]) == {"sana-1.6b", "pixart-sigma", "flux.1-dev", "sd3.5-large", "sd3.5-medium"}
    assert len(skipped) == 20 and all(("4.8B" in m) or ("Hunyuan" in m) for m in skipped["model"])
    assert source_of(rows) == ("external:mlenergy-v3", "mlenergy-v3", "xdit-0.4.5")


def test_v3_runs_record_runtime_source_and_scope(tracking_uri, tmp_path):
    from mlflow_energy.fit import normalise_runs
    from mlflow_energy.tracking import load_runs
    from mlflow_energy.tracking.mlenergy import DATA_DIR, DATA_FILE_V3, import_mlenergy

    df = pd.read_csv(DATA_DIR / DATA_FILE_V3)
    path = tmp_path / "v3.csv"
    b200 = df[df["gpu_variant"].str.startswith("B200")]
    pd.concat([b200[b200["model"].str.contains("SANA1.5_1.6B")].head(5),
               b200[b200["model"].str.contains("SANA1.5_4.8B")].head(2)]).to_csv(path, index=False)
    rep = import_mlenergy(path, experiment="v3")
    assert rep.logged == 5 and rep.skipped_no_family == 2
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("v3").experiment_id])
    assert set(runs[f"tags.{schema.T_RUNTIME}"]) == {"xdit-0.4.5"}
    assert set(runs[f"tags.{schema.T_DATA_SOURCE}"]) == {"mlenergy-v3"}
    assert set(runs[f"tags.{schema.T_ENERGY_SCOPE}"]) == {schema.SCOPE_TOTAL}
    frame = normalise_runs(load_runs("v3"))
    assert set(frame["data_source"]) == {"mlenergy-v3"} and set(frame["model"]) == {"sana-1.6b"}
    assert set(frame["hardware"]) == {"B200 (HGX, 1000 W)"}

"""The predictor's contract, fit runs, calibration, the per-call law and registered model versions."""

from __future__ import annotations

# --- predictor contract -----------------------------------------------------------------
PREDICTOR_INPUTS: tuple[str, ...] = (
    "model", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "hardware",
)
PREDICTOR_OPTIONAL_INPUTS: tuple[str, ...] = ("carbon_intensity_g_per_kwh", "cfg_passes", "setup")
PREDICTOR_OUTPUTS: tuple[str, ...] = (
    "energy_text_encode_j", "energy_denoise_j", "energy_decode_j", "energy_total_j",
    "energy_total_wh", "energy_total_j_low", "energy_total_j_high",
    # GPU energy with idle power x time subtracted; seconds per image (the time law), 90% intervals
    "energy_dynamic_j", "energy_dynamic_j_low", "energy_dynamic_j_high",
    "time_total_s", "time_total_s_low", "time_total_s_high", "co2e_g",
    # the calibration used, which level the interval has, the law-only estimate, the scope, why (extrapolated...)
    "setup", "interval_level", "energy_total_j_law", "energy_scope", "note",
)

# --- fit runs, predictor extras, carbon (fit/, predict/, carbon.py, tracking/mlenergy.py) ----
# Optional predictor inputs for hardware missing from the spec table (all three together).
PREDICTOR_HARDWARE_INPUTS: tuple[str, ...] = ("hardware_tdp_w", "hardware_tflops", "hardware_mem_bw_gb_s")
M_CARBON_INTENSITY = "carbon/intensity_g_per_kwh"  # the grid intensity a carbon/co2e_g value used
P_CARBON_REGION = "carbon_region"  # WORLD, an ISO alpha-3 country code or a cloud region
P_FIT_EXPERIMENT = "fit_experiment"
P_FIT_N_RUNS = "fit_n_runs"
P_FIT_SOURCES = "fit_energy_sources"
P_FIT_PHASES = "fit_phases"
P_FIT_REGISTERED_MODEL = "registered_model"
M_FIT_SUPERSEDED = "fit/runs_superseded"  # measurement runs left out: their claim was taken over (one run per config)
T_MLENERGY_ROW = "mlflow_energy.source_row"  # external rows: the file the value comes from
A_FIT_GROUPS_CSV = "fit/power_law_groups.csv"
A_FIT_CV_CSV = "fit/cv_predictions.csv"
A_FIT_CV_SUMMARY_CSV = "fit/cv_summary.csv"
A_FIT_SOURCE_RUNS = "fit/source_run_ids.txt"
A_FIT_PLOTS_DIR = "plots"
REGISTERED_ALIAS_CHAMPION = "champion"
# --- calibration (predict/calibrate.py) --------------------------------------------------
P_CALIBRATION_SETUP = "calibration_setup"  # the setup name a calibrated version answers to
P_CALIBRATION_PRIOR = "calibration_prior_model_uri"  # the model it adapts
P_CALIBRATION_FAMILIES = "calibration_families"  # families with measurements, comma-separated
P_CALIBRATION_SLOPES = "calibration_slopes"  # slopes kept by the leave-one-out check (size, steps, batch) or none
P_CALIBRATION_SCOPE = "calibration_measured_scope"  # what the measurements counted: total or dynamic
M_CALIBRATION_POINTS = "calibration/points"  # measurements used
M_CALIBRATION_SIGMA = "calibration/log_sigma"  # within-setup sd of log energy after calibration
M_CALIBRATION_SETUP_OFFSET = "calibration/setup_log_offset"  # mean log correction over the families
EXPERIMENT_CALIBRATION = "calibration"  # default experiment of calibration runs
T_SEEN_PREFIX = "mlflow_energy.seen."  # model-version tags: what the training data covers (families, ranges...)
T_CALIBRATED_SETUPS = "mlflow_energy.calibrated_setups"  # model-version tag: its calibrations and their hardware


TIME_LAW_PHASE = "time_total"  # the phase name of the time law's CV metrics: cv/<scheme>/time_total/<stat>


def fit_key(scope: str, phase: str, stat: str) -> str:
    """``fit/<scope>/<phase>/<stat>``: a power-law statistic (``scope``: ``global`` or a hardware slug)."""
    return f"fit/{scope}/{phase}/{stat}"


def cv_key(scheme: str, phase: str, stat: str) -> str:
    """``cv/<scheme>/<phase>/<stat>``: a cross-validation statistic (``scheme``: loco, lofo, loho)."""
    return f"cv/{scheme}/{phase}/{stat}"

# --- per-call law, public v3 data, intervals (fit/, predict/, tracking/mlenergy.py) ----------
# The energy scope tag and its values (total / dynamic) are in the protocol block below.
T_RUNTIME = "mlflow_energy.runtime"  # diffusers, or xdit-<version> (ML.ENERGY v3)
T_DATA_SOURCE = "mlflow_energy.data_source"  # mlenergy-v2, mlenergy-v3, or the local measurement
PREDICTOR_STRING_OUTPUTS: tuple[str, ...] = ("setup", "interval_level", "energy_scope", "note")  # others: doubles
P_FIT_CORRECTOR = "fit_corrector"  # "used" or "law_only" (grouped CV decides)
A_FIT_LAW_FORMS_CSV = "fit/law_forms_cv.csv"  # per scheme and phase: power vs saturating law, held out


def fit_law_param(phase: str) -> str:
    """``fit_law_<phase>``: the form of a phase's law, ``power`` or ``saturating`` (grouped CV decides)."""
    return f"fit_law_{phase}"


M_STEP_SCALING = "fit/step_scaling_50_over_30"  # predicted energy ratio 50 vs 30 steps / FLOPs ratio
A_FIT_COVERAGE_CSV = "fit/interval_coverage.csv"
A_FIT_STEP_SCALING_CSV = "fit/step_scaling.csv"


def interval_key(level: str, stat: str) -> str:
    """``interval/<level>/<stat>``: ``log_halfwidth`` or ``coverage`` of one prediction level's interval."""
    return f"interval/{level}/{stat}"

# --- registered model versions (fit/registry.py) ---------------------------------------------
T_FIT_FINGERPRINT = "mlflow_energy.fit_fingerprint"  # hash of the training runs and fit settings
T_MV_TRAINING_DATA = "mlflow_energy.training_data"  # "<experiment>: <n> runs"
T_MV_FLOPS_RANGE = "mlflow_energy.flops_range"  # fitted FLOPs per image, "<min> to <max>"
T_MV_CV_MAPE = "mlflow_energy.cv_mape_total"  # grouped-CV MAPE of the total, per scheme

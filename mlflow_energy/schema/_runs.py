"""The run schema: params, phases, metrics, tags and artifacts of one measurement run (one config)."""

from __future__ import annotations

# --- params -----------------------------------------------------------------------------
P_MODEL = "model"
P_WEIGHTS = "weights"
P_HEIGHT = "height"
P_WIDTH = "width"
P_STEPS = "steps"
P_GUIDANCE_SCALE = "guidance_scale"
P_CFG = "cfg"
P_CFG_PASSES = "cfg_passes"  # denoiser passes per step, 1 or 2 (default: what pipe(prompt) does)
P_PRECISION = "precision"
P_BATCH_SIZE = "batch_size"
P_DEVICE = "device"
P_SCHEDULER = "scheduler"
P_SEED = "seed"
P_REPEATS = "repeats"
P_WARMUP = "warmup"
P_POWER_LIMIT = "power_limit_w"  # logged only when the config sets the GPU's power limit

RUN_PARAMS: tuple[str, ...] = (
    P_MODEL, P_WEIGHTS, P_HEIGHT, P_WIDTH, P_STEPS, P_GUIDANCE_SCALE, P_CFG, P_PRECISION,
    P_BATCH_SIZE, P_DEVICE, P_SCHEDULER, P_SEED, P_REPEATS, P_WARMUP, P_CFG_PASSES,
)
# Params a run carries only when its config sets them (records and runs without them stay valid).
OPTIONAL_PARAMS: tuple[str, ...] = (P_POWER_LIMIT,)

# --- phases -----------------------------------------------------------------------------
PHASE_TEXT_ENCODE = "text_encode"
PHASE_DENOISE = "denoise"
PHASE_DECODE = "decode"
PHASE_TOTAL = "total"
PHASES: tuple[str, ...] = (PHASE_TEXT_ENCODE, PHASE_DENOISE, PHASE_DECODE)

# --- metrics ----------------------------------------------------------------------------
def energy_key(phase: str) -> str:
    """``energy/<phase>_j``: joules per image."""
    return f"energy/{phase}_j"


def time_key(phase: str) -> str:
    """``time/<phase>_s``: seconds per image."""
    return f"time/{phase}_s"


def flops_key(phase: str) -> str:
    """``flops/<phase>``: FLOP per image (``denoise_per_step`` included)."""
    return f"flops/{phase}"


M_ENERGY_TEXT_ENCODE = energy_key(PHASE_TEXT_ENCODE)
M_ENERGY_DENOISE = energy_key(PHASE_DENOISE)
M_ENERGY_DECODE = energy_key(PHASE_DECODE)
M_ENERGY_TOTAL = energy_key(PHASE_TOTAL)
M_ENERGY_TOTAL_STD = "energy/total_j_std"
M_TIME_TEXT_ENCODE = time_key(PHASE_TEXT_ENCODE)
M_TIME_DENOISE = time_key(PHASE_DENOISE)
M_TIME_DECODE = time_key(PHASE_DECODE)
M_TIME_TOTAL = time_key(PHASE_TOTAL)
M_POWER_AVG = "power/avg_w"
FLOPS_PHASES: tuple[str, ...] = (*PHASES, PHASE_TOTAL, "denoise_per_step")
M_FLOPS_TEXT_ENCODE = flops_key(PHASE_TEXT_ENCODE)
M_FLOPS_DENOISE = flops_key(PHASE_DENOISE)
M_FLOPS_DECODE = flops_key(PHASE_DECODE)
M_FLOPS_TOTAL = flops_key(PHASE_TOTAL)
M_FLOPS_DENOISE_PER_STEP = flops_key("denoise_per_step")
# How far the phase sum is from the whole-inference window: (sum - whole) / whole.
M_PHASE_SUM_GAP = "energy/phase_sum_gap_frac"
M_ENERGY_WHOLE = "energy/whole_window_j"
# Sweep parent runs: configs measured, failed, skipped (already FINISHED) in this invocation.
M_SWEEP_DONE = "sweep/configs_done"
M_SWEEP_FAILED = "sweep/configs_failed"
M_SWEEP_SKIPPED = "sweep/configs_skipped"

M_QUALITY_PSNR = "quality/psnr_db"
M_QUALITY_SSIM = "quality/ssim"
M_QUALITY_CLIP = "quality/clip_score"
M_CARBON_CO2E = "carbon/co2e_g"

RUN_METRICS: tuple[str, ...] = (
    M_ENERGY_TEXT_ENCODE, M_ENERGY_DENOISE, M_ENERGY_DECODE, M_ENERGY_TOTAL, M_ENERGY_TOTAL_STD,
    M_TIME_TEXT_ENCODE, M_TIME_DENOISE, M_TIME_DECODE, M_TIME_TOTAL, M_POWER_AVG,
    M_FLOPS_TEXT_ENCODE, M_FLOPS_DENOISE, M_FLOPS_DECODE, M_FLOPS_TOTAL, M_FLOPS_DENOISE_PER_STEP,
)
OPTIONAL_METRICS: tuple[str, ...] = (M_QUALITY_PSNR, M_QUALITY_SSIM, M_QUALITY_CLIP, M_CARBON_CO2E)

# --- tags -------------------------------------------------------------------------------
TAG_PREFIX = "mlflow_energy."
T_ENERGY_SOURCE = "mlflow_energy.energy_source"
T_HARDWARE = "mlflow_energy.hardware"
T_CONFIG_HASH = "mlflow_energy.config_hash"
T_VERSION = "mlflow_energy.version"
T_KIND = "mlflow_energy.kind"
T_FAILURE = "mlflow_energy.failure"  # one line: why a config failed
T_SWEEP_SPEC = "mlflow_energy.sweep_spec"
T_DRIVER = "mlflow_energy.driver_version"
T_POWER_LIMIT = "mlflow_energy.power_limit_w"
T_ESTIMATE_TDP = "mlflow_energy.estimate_tdp_w"  # the TDP an estimate-meter run assumed
T_SHARD = "mlflow_energy.shard"  # "I/N" of a sharded sweep
T_PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own tag for nested runs
T_PROJECT_RUN_ID = "mlflow_energy.project_run_id"  # the `mlflow run` run, when it is in another experiment
T_RUN_NAME = "mlflow.runName"

RUN_TAGS: tuple[str, ...] = (T_ENERGY_SOURCE, T_HARDWARE, T_CONFIG_HASH, T_VERSION, T_KIND)

KIND_MEASUREMENT = "measurement"
KIND_SWEEP = "sweep"
KIND_FIT = "fit"
KIND_SEARCH = "search"
KIND_TRIAL = "trial"
KINDS: tuple[str, ...] = (KIND_MEASUREMENT, KIND_SWEEP, KIND_FIT, KIND_SEARCH, KIND_TRIAL)

# energy_source values: "zeus:nvml", "zeus:rapl", "estimate:<method>", "external:<dataset>"
SOURCE_ZEUS_NVML = "zeus:nvml"
SOURCE_ZEUS_RAPL = "zeus:rapl"
SOURCE_ESTIMATE_PREFIX = "estimate:"
SOURCE_EXTERNAL_PREFIX = "external:"

# --- artifacts --------------------------------------------------------------------------
A_CONFIG_JSON = "config.json"
A_IMAGE_PNG = "image.png"
A_POWER_TIMELINE_CSV = "power_timeline.csv"
A_MEASUREMENT_JSON = "measurement.json"
A_SWEEP_SPEC = "sweep_spec.yaml"

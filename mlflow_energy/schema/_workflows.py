"""Search, the measurement protocol, autologging, the MLflow UI, resilience and carbon on runs."""

from __future__ import annotations

from ._runs import energy_key, flops_key, time_key

# --- search (search/) -----------------------------------------------------------------------
# Optional predictor output: seconds per image; predict-mode latency constraints need it (or an
# assumed average power).
PREDICTOR_OPTIONAL_OUTPUTS: tuple[str, ...] = ("time_total_s",)
P_SEARCH_MODE = "search_mode"  # predict or measure
P_SEARCH_TRIALS = "search_trials"
P_SEARCH_SEED = "search_seed"
P_SEARCH_SAMPLER = "search_sampler"
P_SEARCH_OBJECTIVES = "search_objectives"  # e.g. "energy_total_j:minimize,quality_psnr_db:maximize"
P_SEARCH_STUDY = "study_name"
P_SEARCH_STORAGE = "study_storage"  # password removed
P_SEARCH_MODEL_URI = "predictor_uri"
P_SEARCH_QUALITY_URI = "quality_model_uri"
P_SEARCH_HARDWARE = "hardware"
P_SEARCH_AVG_POWER = "assumed_avg_power_w"  # predict mode: latency = energy / this power
P_REFERENCE_STEPS = "reference_steps"
T_STUDY_NAME = "mlflow_energy.study_name"
T_TRIAL_NUMBER = "mlflow_energy.trial_number"
SOURCE_PREDICTOR = "estimate:predictor"  # energy_source of predict-mode trial runs
M_SEARCH_FEASIBLE = "search/feasible"  # trial: 1 when every constraint holds
M_SEARCH_N_TRIALS = "search/n_trials"  # parent: complete trials in the study
M_SEARCH_N_FEASIBLE = "search/n_feasible"
M_SEARCH_DEFAULT_ENERGY = "search/default_energy_total_j"  # the baseline config (the user's, or the family default)
M_SEARCH_SAVED_J = "search/energy_saved_j"  # default - best, J per image
M_SEARCH_SAVED_FRAC = "search/energy_saved_frac"  # (default - best) / default
M_SEARCH_SAVED_FRAC_LOW = "search/energy_saved_frac_low"  # its 90% interval (measured repeats or the predictor's)
M_SEARCH_SAVED_FRAC_HIGH = "search/energy_saved_frac_high"
M_SEARCH_BASELINE_PSNR = "search/baseline_psnr_db"  # the baseline's own fidelity to the reference
M_SEARCH_QUALITY_FLOOR = "search/quality_floor_psnr_db"  # the PSNR floor the search applied
M_SEARCH_N_REFUSED = "search/n_refused"  # predict mode: trials the predictor refused (outside what it has seen)
M_SEARCH_SUPERSEDED = "search/runs_superseded"  # measurement runs the quality model left out (claim taken over)
P_SEARCH_QUALITY_SOURCE = "quality_source"  # where trial quality comes from (measured, a model, the stored proxy)
P_SEARCH_SAVING_INTERVAL = "saving_interval"  # how the saving's interval was made


def baseline_param(param: str) -> str:
    """``baseline_<param>``: the baseline config's value of a run param (search parent run)."""
    return f"baseline_{param}"


A_SEARCH_SPACE_JSON = "search/space.json"
A_SEARCH_TRIALS_CSV = "search/trials.csv"
A_PARETO_CSV = "search/pareto_front.csv"
A_PARETO_PNG = "search/pareto_front.png"
A_OPTUNA_PLOTS_DIR = "search/optuna"


def constraint_param(name: str) -> str:
    """``constraint_<name>``: a search constraint's bound (parent-run param)."""
    return f"constraint_{name}"


def constraint_metric(name: str) -> str:
    """``constraint/<name>``: a trial's relative violation (<= 0: the constraint holds)."""
    return f"constraint/{name}"


def best_param(param: str) -> str:
    """``best_<param>``: the best config's value of a run param (parent run)."""
    return f"best_{param}"


def best_metric(metric: str) -> str:
    """``best_<metric with / as _>``: the best config's metric (parent run)."""
    return "best_" + metric.replace("/", "_")

# --- measurement protocol, idle baseline and dynamic energy (measure/protocol.py) --------
M_ENERGY_TOTAL_CI95 = "energy/total_j_ci95"  # 95% half-width of the mean total, J per image
M_ENERGY_CI95_FRAC = "energy/total_ci95_frac"  # that half-width / the mean
M_REPEATS = "protocol/repeats"  # measured runs the protocol made
M_PROTOCOL_TARGET = "protocol/target"  # the protocol's target for the 95% half-width (fraction); absent if fixed
M_WARMUPS = "protocol/warmups"  # warm-up runs it made
M_OUTLIERS = "protocol/outliers"  # measured runs left out of the mean as outliers
M_IDLE_POWER = "power/idle_w"  # the device's idle power subtracted for the dynamic energy
M_SWEEP_WALL = "sweep/wall_s"  # sweep parent: wall seconds of the whole sweep
M_SWEEP_INFERENCE = "sweep/inference_s"  # sweep parent: seconds spent measuring configs
T_NOISY = "mlflow_energy.noisy"  # "true" when the interval missed the protocol's target
T_ENERGY_SCOPE = "mlflow_energy.energy_scope"  # what energy/<phase>_j holds: "total" or "dynamic"
T_ESTIMATE_OMP_WAIT = "mlflow_energy.estimate_omp_wait_policy"  # OpenMP wait policy of an estimate run
SCOPE_TOTAL = "total"  # the meter's whole device (board, package), idle power included
SCOPE_DYNAMIC = "dynamic"  # idle power excluded
ENERGY_SCOPES: tuple[str, ...] = (SCOPE_TOTAL, SCOPE_DYNAMIC)


P_FIT_TARGET = "fit_target"  # fit run: the energy fitted, "total" or "dynamic"
P_FIT_NOISY_EXCLUDED = "fit_noisy_excluded"  # fit run: noisy runs left out
P_FIT_NOISY_DOWNWEIGHTED = "fit_noisy_downweighted"  # fit run: noisy runs fitted with a weight below 1


def family_law_key(family: str, stat: str) -> str:
    """``law/<family>/<stat>``: a family's own law of the total (b, r2, loco_mape, flops_span)."""
    return f"law/{family}/{stat}"


def dynamic_energy_key(phase: str) -> str:
    """``energy/<phase>_dynamic_j``: energy minus idle power x time, J per image."""
    return f"energy/{phase}_dynamic_j"


def median_energy_key(phase: str) -> str:
    """``energy/<phase>_j_median``: median over the measured runs, J per image."""
    return f"energy/{phase}_j_median"


def spread_energy_key(phase: str) -> str:
    """``energy/<phase>_j_spread``: 1.4826 x median absolute deviation over the runs, J per image."""
    return f"energy/{phase}_j_spread"

# --- autologging and MLflow plugins (autologging/, plugins/) ----------------------------------
KIND_AUTOLOG = "autolog"  # one diffusers pipeline call measured by mlflow_energy.autolog()
P_PIPELINE_CLASS = "pipeline_class"
P_DENOISER_CALLS = "denoiser_calls"
M_ENERGY_OTHER = "energy/other_j"  # whole call minus the three phases (scheduler, pre/post-processing)
M_ENERGY_DENOISE_STEP = "energy/denoise_step_j"  # history: one point per scheduler step, step = index
M_TIME_DENOISE_STEP = "time/denoise_step_s"
M_ENERGY_DENOISE_CALL = "energy/denoise_call_j"  # history: one point per denoiser call (CFG passes, ControlNet)
M_TIME_DENOISE_CALL = "time/denoise_call_s"
# Other measured calls that overlapped this one: a process-wide meter (the CPU estimate, RAPL)
# counts their work in this call's windows too, so its energy is an upper bound.
T_OVERLAPPED = "mlflow_energy.overlapped_calls"
T_FLOPS_SOURCE = "mlflow_energy.flops_source"  # "traced": flops/<phase> counted from the calls made (meta device)
T_UNSUPPORTED = "mlflow_energy.unsupported"  # an autologged call autolog could not split into phases: why
FLOPS_TRACED = "traced"
FLOPS_CLOSED_FORM_PLUS_TRACED = "closed_form+traced"  # a family's closed form, plus traced calls of extra components (ControlNet)
T_CALL_ID = "mlflow_energy.call_id"  # an autologged call's id: its journal entry becomes one run, once
P_SCHEDULER_STEPS = "scheduler_steps"  # scheduler steps the call actually ran (img2img strength, Heun, PNDM)
P_NUM_FRAMES = "num_frames"  # frames per video of a video pipeline's call (batch_size counts videos)
# Combined pipelines (Kandinsky 2.2, Stable Cascade) run two stages, each with its own encoders,
# denoiser and scheduler: ``prior`` (the ``prior_*`` components) and ``decoder`` (the others).
STAGE_PRIOR = "prior"
STAGE_DECODER = "decoder"
P_STAGES = "stages"  # the stages of a combined pipeline's call, comma-separated ("prior,decoder")
# The phase where a pipeline encodes an input image with its autoencoder (img2img, inpaint,
# FLUX fill/kontext/control, SVD): autologged calls only, logged when the call ran it.
PHASE_IMAGE_ENCODE = "image_encode"
M_ENERGY_IMAGE_ENCODE = energy_key(PHASE_IMAGE_ENCODE)
M_TIME_IMAGE_ENCODE = time_key(PHASE_IMAGE_ENCODE)
M_FLOPS_IMAGE_ENCODE = flops_key(PHASE_IMAGE_ENCODE)


def component_energy_key(component: str) -> str:
    """``energy/component/<name>_j``: joules per image of one pipeline component (a ControlNet, a prior)."""
    return f"energy/component/{component}_j"


def stage_energy_key(stage: str, phase: str) -> str:
    """``energy/stage/<stage>/<phase>_j``: joules per image of one phase of one stage of a combined pipeline."""
    return f"energy/stage/{stage}/{phase}_j"


def stage_time_key(stage: str, phase: str) -> str:
    """``time/stage/<stage>/<phase>_s``: seconds per image of one phase of one stage."""
    return f"time/stage/{stage}/{phase}_s"


def stage_flops_key(stage: str, phase: str) -> str:
    """``flops/stage/<stage>/<phase>``: FLOPs per image of one phase of one stage (traced)."""
    return f"flops/stage/{stage}/{phase}"


def stage_steps_key(stage: str) -> str:
    """``steps/stage/<stage>``: the scheduler steps one stage ran."""
    return f"steps/stage/{stage}"

# --- the MLflow UI (experiments, sweep and search parents) ---------------------------------
# MLflow 3 opens an experiment on its GenAI "Overview" unless this tag says otherwise
# (mlflow/server/js: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT = "custom_model_development").
T_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_ML = "custom_model_development"
M_SWEEP_ENERGY_MIN = "sweep/energy_min_j"  # over the configs measured so far, J per image
M_SWEEP_ENERGY_MEDIAN = "sweep/energy_median_j"
M_SWEEP_ENERGY_MAX = "sweep/energy_max_j"
M_SEARCH_ENERGY_MIN = "search/energy_min_j"  # over complete trials, J per image
M_SEARCH_ENERGY_MEDIAN = "search/energy_median_j"
# A saved runs-table view (columns, order), stored as an experiment tag; the UI loads it from
# #/experiments/<id>/runs?viewStateShareKey=<key> (mlflow/server/js: "mlflow.sharedViewState.").
T_SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
SHARED_VIEW_ENERGY = "energy"
# Display metrics for the runs table, whose column header is the metric key: short keys, values
# rounded to three significant digits, logged next to the full-precision keys above (never instead).
M_VIEW_ENERGY = "J/img"  # a sweep's config: energy/total_j rounded
M_VIEW_TIME = "s/img"  # a sweep's config: time/total_s rounded
M_VIEW_CONFIGS = "configs"  # sweep parent: configs measured
M_VIEW_ENERGY_MIN = "min J/img"  # sweep parent: sweep/energy_min_j rounded
M_VIEW_ENERGY_MEDIAN = "median J/img"  # sweep parent: sweep/energy_median_j rounded
M_VIEW_BEST_ENERGY = "best J/img"  # search parent: the best feasible config's energy/total_j rounded
M_VIEW_SAVED_PCT = "saved pct"  # search parent: 100 x search/energy_saved_frac rounded (a metric key has no %)
A_SWEEP_SUMMARY_CSV = "sweep/summary.csv"
A_SWEEP_SUMMARY_PNG = "sweep/energy_by_config.png"


# --------------------------------------------------------------- resilience (journal, claims)
T_HEARTBEAT = "mlflow_energy.heartbeat"  # epoch seconds of a live sweep's last heartbeat
T_WORKER = "mlflow_energy.worker"  # host:pid of the process that owns a sweep run
T_CLAIM_TOKEN = "mlflow_energy.claim_token"  # the fencing token of the claim a measurement run was made under
T_SWEEP_RESUMED_BY = "mlflow_energy.resumed_by"  # an interrupted sweep parent: the run that resumed it
T_SWEEP_RESUMES = "mlflow_energy.resumes"  # a sweep parent: the interrupted parents whose configs it summarises
T_SUPERSEDED = "mlflow_energy.superseded"  # "true": its claim was taken over; the taker's run counts instead
M_SWEEP_SUPERSEDED = "sweep/configs_superseded"  # sweep parent: runs of this worker left out (claim taken over)

# --- carbon on measurement runs (tracking/runs.py) --------------------------------------------
T_CARBON_INTENSITY = "mlflow_energy.carbon_intensity_g_per_kwh"  # the intensity carbon/co2e_g used
T_CARBON_SOURCE = "mlflow_energy.carbon_source"  # where it comes from (table row, caller, default)
T_NOTE = "mlflow.note.content"  # MLflow's run description (markdown), shown on the run page

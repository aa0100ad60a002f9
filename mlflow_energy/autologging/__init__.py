"""Energy autologging for diffusers pipelines: ``mlflow_energy.autolog()``.

Owns: patching ``DiffusionPipeline`` subclasses so an unmodified ``pipe(prompt)`` is measured
phase by phase with module hooks on the pipeline's own components, and logging each call to
MLflow (the active run, or a new one). The package is ``autologging`` so that the function
``mlflow_energy.autolog`` is not shadowed by a submodule of the same name.
Modules:
    probe     forward hooks and meter windows around one call (text encoders, denoiser calls, VAE encode/decode)
    roles     each component's phase, by its class first, else its name
    identify  the family a pipeline's components belong to, the call's params, its images
    log       one call as MLflow params, per-image metrics, the per-step history and tags
    journal   every call on disk first; pending entries
    send      one entry to MLflow: the run created or used, logged, marked done
    background  the logger thread and its logger process, off the caller's thread and process; ``flush()``
    logger_process  the child process that logs the entries (``python -m``)
    patch     ``autolog()``: patching, run policy, errors that never break the user's call
    runend    the end of your run waits, bounded, for the calls autolog queued for it
    traced    FLOPs of the calls made, counted on meta-device copies (pipelines with no family)
    callflops the traced FLOPs as a call's rows, counted by the background logger between calls
May import: the shared ground, ``families``, ``config``, ``flops``, ``measure``, ``tracking``.

Example:
    >>> import mlflow_energy
    >>> mlflow_energy.autolog(silent=True)  # doctest: +SKIP
    >>> pipe("a lighthouse at dusk")  # doctest: +SKIP
    >>> mlflow_energy.autolog(disable=True)
"""

from mlflow_energy._imports import lazy_exports

__all__ = ["CallProbe", "CallRecord", "autolog", "flush", "is_enabled", "pipeline_family"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CallProbe": "probe",
        "CallRecord": "probe",
        "autolog": "patch",
        "flush": "background",
        "is_enabled": "patch",
        "pipeline_family": "identify",
    },
)

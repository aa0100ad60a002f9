"""``serve``: the registered energy model over HTTP, strict about its inputs."""

from __future__ import annotations

import click

from mlflow_energy.cli import main
from mlflow_energy.cli._types import Int, Text
from mlflow_energy.errors import ConfigError


def _load_app(model_uri: str) -> object:
    """The app for ``model_uri``; a model that is not there is one line naming what is."""
    from mlflow.exceptions import MlflowException

    from mlflow_energy.predict.serve import create_app

    try:
        return create_app(model_uri)
    except (MlflowException, OSError) as exc:
        from mlflow import MlflowClient

        try:
            names = sorted(m.name for m in MlflowClient().search_registered_models())
        except Exception:  # the store itself is unreachable: say so below
            names = []
        known = ", ".join(names) or "none yet: run `mlflow-energy fit --experiment EXP --registered-model energy`"
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError("model_uri", model_uri,
                          f"a registered model version (models:/NAME@champion or models:/NAME/N); registered "
                          f"models: {known} ({reason})") from None


@main.command("serve")
@click.option("--model-uri", "-m", type=Text(unset_value="models:/mlflow-energy@champion"), default="models:/mlflow-energy@champion",
              show_default=True, help="The registered energy model (the demo registers mlflow-energy).")
@click.option("--host", type=Text(unset_value="127.0.0.1"), default="127.0.0.1", show_default=True,
              help="Address to listen on.")
@click.option("--port", "-p", type=Int("port", minimum=1, maximum=65535, unset_value=5001), default=5001,
              show_default=True, help="Port to listen on.")
def serve_command(model_uri: str, host: str, port: int) -> None:
    """Serve the energy model (MLflow's scoring protocol; any bad payload gets a one-line 4xx)."""
    import uvicorn

    app = _load_app(model_uri)
    click.echo(f"serving {model_uri} on http://{host}:{port}/invocations")
    uvicorn.run(app, host=host, port=port, workers=1, log_level="warning")

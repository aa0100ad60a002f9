"""``serve``: the registered energy model over HTTP, strict about its inputs."""

from __future__ import annotations

import click

from mlflow_energy.cli import main
from mlflow_energy.cli._types import Int, Text


@main.command("serve")
@click.option("--model-uri", "-m", type=Text(unset_value="models:/mlflow-energy@champion"), default="models:/mlflow-energy@champion",
              show_default=True, help="The registered energy model (the demo registers mlflow-energy).")
@click.option("--host", "-h", type=Text(unset_value="127.0.0.1"), default="127.0.0.1", show_default=True,
              help="Address to listen on.")
@click.option("--port", "-p", type=Int("port", minimum=1, maximum=65535, unset_value=5001), default=5001,
              show_default=True, help="Port to listen on.")
def serve_command(model_uri: str, host: str, port: int) -> None:
    """Serve the energy model (MLflow's scoring protocol; any bad payload gets a one-line 4xx)."""
    from mlflow_energy.predict.serve import serve

    click.echo(f"serving {model_uri} on http://{host}:{port}/invocations")
    serve(model_uri, host=host, port=port)

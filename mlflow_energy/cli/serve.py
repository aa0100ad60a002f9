"""``serve``: the registered energy model over HTTP, strict about its inputs."""

from __future__ import annotations

import click

from mlflow_energy.cli import main
from mlflow_energy.cli._types import Float, Int, Text
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
@click.option("--header-timeout", type=Float("header_timeout", minimum=0, strict=True, maximum=3600, unset_value=10.0),
              default=10.0, show_default=True, envvar="MLFLOW_ENERGY_SERVE_HEADER_TIMEOUT", show_envvar=True,
              help="Seconds a client has to send a request's headers (then 408 and closed).")
@click.option("--body-timeout", type=Float("body_timeout", minimum=0, strict=True, maximum=3600, unset_value=10.0),
              default=10.0, show_default=True, envvar="MLFLOW_ENERGY_SERVE_BODY_TIMEOUT", show_envvar=True,
              help="Seconds a client has to send a request's body once its headers are in (then 408 and closed).")
@click.option("--max-connections", type=Int("max_connections", minimum=1, maximum=1_000_000), default=None,
              envvar="MLFLOW_ENERGY_SERVE_MAX_CONNECTIONS", show_envvar=True,
              help="Open connections at most; past it a new one gets 503. [default: 256, fewer under a low ulimit -n]")
def serve_command(model_uri: str, host: str, port: int, header_timeout: float, body_timeout: float,
                  max_connections: int | None) -> None:
    """Serve the energy model (MLflow's scoring protocol; any bad payload gets a one-line 4xx)."""
    from mlflow_energy.predict.connections import FD_HEADROOM, Limits, default_max_connections, file_handle_limit
    from mlflow_energy.predict.serve import bind, run

    sock = bind(host, port)  # a busy port is one line, before anything is loaded or printed
    try:
        app = _load_app(model_uri)
    except BaseException:
        sock.close()
        raise
    handles = file_handle_limit()
    if max_connections is None:
        max_connections = default_max_connections()
    elif handles is not None and max_connections > handles - FD_HEADROOM:
        click.echo(f"warning: --max-connections {max_connections} is more than the file-handle limit (ulimit -n "
                   f"{handles}) leaves for connections ({handles - FD_HEADROOM}): past that, new connections wait "
                   "in the queue until a handle frees", err=True)
    click.echo(f"serving {model_uri} on http://{host}:{port}/invocations (at most {max_connections} connections; "
               f"headers within {header_timeout:g} s, body within {body_timeout:g} s)")
    run(app, sock, Limits(header_timeout, body_timeout, max_connections))

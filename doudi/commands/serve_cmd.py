"""`doudi serve`: the scoring API for the provincial monitoring platform (docs/api.md).

Runs `bentoml serve serving.service:DoudiRisk` from the project root, with the
workspace and tracking store passed as absolute paths (the server's working directory
differs from the caller's), BENTOML_HOME under the workspace and telemetry off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from doudi.settings import Settings

SERVICE = "serving.service:DoudiRisk"


def server_environment(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: `base` plus absolute locations and telemetry off."""
    env = dict(base)
    env.update(
        {
            "DOUDI_HOME": str(settings.home),
            "DOUDI_MLFLOW_TRACKING_URI": settings.tracking_uri(),
            "BENTOML_HOME": str(settings.home / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    if env.get("DOUDI_CONFIG"):
        env["DOUDI_CONFIG"] = str(Path(env["DOUDI_CONFIG"]).resolve())
    return env


def server_command(host: str, port: int) -> list[str]:
    """`bentoml serve ...` with the venv's own bentoml."""
    script = Path(sys.executable).with_name("bentoml")
    exe = [str(script)] if script.is_file() else [sys.executable, "-m", "bentoml"]
    return [*exe, "serve", SERVICE, "--host", host, "--port", str(port)]


def check_model(settings: Settings) -> None:
    """Fail fast, in one line, when the model to serve does not resolve: the server would
    otherwise restart its worker over and over without ever becoming ready."""
    from doudi.errors import UserError

    uri = settings.api_model_uri
    if not uri.startswith("models:/"):
        if not Path(uri).is_dir():
            raise UserError(f"DOUDI_API_MODEL_URI {uri}: no such model folder")
        return
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, _, alias = uri.removeprefix("models:/").partition("@")
    client = MlflowClient(tracking_uri=settings.tracking_uri())
    try:
        if alias:
            client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = name.partition("/")
            client.get_model_version(name, number)
    except MlflowException as err:
        raise UserError(
            f"no model at {uri} in {settings.tracking_uri()}: train one first "
            "(`doudi monthly` or `doudi train`), or set DOUDI_API_MODEL_URI"
        ) from err


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        port: int = typer.Option(3000, "--port", min=1, max=65535, help="TCP port."),
        host: str = typer.Option(
            "127.0.0.1",
            "--host",
            help="Interface to listen on (0.0.0.0: all; put TLS and "
            "authentication in front of it).",
        ),
    ) -> None:
        """Serve risk scores and explanations over HTTP (BentoML) until interrupted."""
        from doudi.settings import PROJECT_ROOT, Settings

        settings = Settings()
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        check_model(settings)
        env = server_environment(settings, os.environ)
        argv = server_command(host, port)
        (settings.home / "bentoml").mkdir(parents=True, exist_ok=True)
        typer.echo(
            f"doudi: serving {settings.api_model_uri} from {settings.tracking_uri()} on "
            f"http://{host}:{port} (workspace {settings.home}); docs/api.md lists the endpoints"
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(PROJECT_ROOT)
        os.execve(argv[0], argv, env)  # the server takes over this process (and signals)

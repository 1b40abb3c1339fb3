"""`doudi serve`: check the model, then hand this process to the API server
(`serving.server`; docs/api.md)."""

from __future__ import annotations

import os
import sys

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        port: int = typer.Option(3000, "--port", min=1, max=65535, help="TCP port."),
        host: str = typer.Option(
            "127.0.0.1",
            "--host",
            help="Interface to listen on (0.0.0.0: all; put TLS in front of it; callers "
            "need an API key: doudi keys create).",
        ),
    ) -> None:
        """Serve risk scores and explanations over HTTP (BentoML) until interrupted."""
        from doudi.registry import disable_telemetry, served_uri
        from doudi.settings import PROJECT_ROOT, Settings
        from serving.server import check_model, server_command, server_environment

        settings = Settings()
        disable_telemetry()
        check_model(settings)
        env = server_environment(settings, os.environ)
        argv = server_command(host, port)
        (settings.home / "bentoml").mkdir(parents=True, exist_ok=True)
        typer.echo(
            f"doudi: serving {served_uri(settings)} from {settings.tracking_uri()} on "
            f"http://{host}:{port} (workspace {settings.home}); docs/api.md lists the endpoints"
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(PROJECT_ROOT)
        os.execve(argv[0], argv, env)  # the server takes over this process (and signals)

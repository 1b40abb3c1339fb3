"""`doudi --version` comes from the package metadata; shell completion is offered."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from tests.jobs.cli import doudi


def test_version_is_the_installed_packages(tmp_path: Path) -> None:
    done = doudi(tmp_path, "--version")
    assert done.code == 0 and done.out == f"doudi {version('doudi')}\n"
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # prints, touches nothing


def test_shell_completion_is_offered(tmp_path: Path) -> None:
    helped = doudi(tmp_path, "--help")
    assert "--install-completion" in helped.out and "--show-completion" in helped.out
    # the installed script: the completion names the program as the shell calls it
    exe = Path(sys.executable).with_name("doudi")
    script = subprocess.run([str(exe), "--show-completion", "bash"], capture_output=True,
                            text=True, check=True, timeout=60).stdout
    assert "_DOUDI_COMPLETE=complete_bash" in script
    assert "complete -o default -F _doudi_completion doudi" in script

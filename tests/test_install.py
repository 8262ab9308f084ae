"""The README's first command: a fresh venv, ``pip install .``, then ``homeport``."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_pip_install_dot_then_twist_homeport_serves(tmp_path: Path) -> None:
    """A plain (non-editable) install from the checkout gives a working `twist homeport`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-v", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    # -v shows the build backend's output: the package data is declared, not guessed.
    assert "absent from the `packages` configuration" not in install.stdout + install.stderr
    workdir = tmp_path / "run"
    workdir.mkdir()
    with open(workdir / "out.log", "wb") as out:
        daemon = subprocess.Popen(
            [
                str(venv / "bin" / "homeport"),  # the README's command (twist homeport too)
                "--http",
                "tcp:0:interface=127.0.0.1",
                "--dns",
                "none",
            ],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"HOMEPORT_PRINT_PORTS": "1", "PATH": "/usr/bin:/bin"},
        )
    try:
        deadline = time.monotonic() + 30
        port = 0
        while not port and time.monotonic() < deadline:
            for line in (workdir / "out.log").read_text(errors="replace").splitlines():
                if "homeport-port http " in line:
                    port = int(line.rsplit(" ", 1)[1])
            assert daemon.poll() is None, (workdir / "out.log").read_text()
            time.sleep(0.1)
        assert port, (workdir / "out.log").read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/catalog/services") as r:
            assert r.read() == b'{"consul":[]}'
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/") as r:
            assert b"homeport" in r.read()
        # The embedded default: SQLite files in ./homeport-data.
        assert (workdir / "homeport-data" / "catalog.sqlite3").exists()
        # The console command of its own, with the same options.
        command = subprocess.run(
            [str(venv / "bin" / "homeport"), "--help"], capture_output=True, text=True, check=False
        )
        assert command.returncode == 0, command.stderr
        assert command.stdout.startswith("Usage: homeport [--log-format=text|json] [options]")
        assert "--data-dir=" in command.stdout
    finally:
        daemon.terminate()
        daemon.wait(20)

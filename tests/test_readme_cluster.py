"""The README's "Several machines" blocks, run as written: three etcd members and three
homeport agents in podman containers on the host's network.

No registry is reachable here, so nothing is pulled.  The homeport image is the one
``./build`` makes (test_packaging's ``image`` fixture).  The etcd image the README names
(etcd's own, ``gcr.io/etcd-development/etcd:v3.4.23``) is used if it is here; if not, a
stand-in of that exact name and tag is built from the same Debian base as homeport's
image plus Debian's ``etcd-server`` package, with etcd at the official image's
``/usr/local/bin/etcd``; it stays in podman's store for the next run.  Changed from the
README's text only: the image tag (the one built here) and the ports (free ones, chosen
here: the README's are fixed); ``podman`` runs with the runtime this host has.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import random
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_packaging import BUILD, PODMAN, ULIMITS, image, readme_example, require

__all__ = ["image"]  # the fixture, imported so that pytest finds it here

#: The containers and volumes the README's blocks make (same names for both).
NAMES = ("etcd-1", "etcd-2", "etcd-3", "homeport-1", "homeport-2", "homeport-3")
#: The README's fixed ports are these prefixes followed by the member's number 1-3
#: (``2379$i`` in the loops, ``23791`` elsewhere): etcd clients, etcd peers, HTTP, DNS.
PORT_PREFIXES = ("2379", "2380", "850", "860")
PORT = re.compile(r"(?<!\d)(" + "|".join(PORT_PREFIXES) + r")(\$i|[123])(?!\d)")
#: Podman as this host needs it, wherever a block says ``podman``.
PODMAN_HERE = f'podman() {{ command {shlex.join(PODMAN)} "$@"; }}\n'

STAND_IN = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY etcd-server.deb /tmp/etcd-server.deb
RUN dpkg -i /tmp/etcd-server.deb && rm /tmp/etcd-server.deb \\
    && ln -s /usr/bin/etcd /usr/local/bin/etcd && mkdir -p /var/lib/etcd
LABEL org.opencontainers.image.description="A local stand-in: Debian's etcd-server"
WORKDIR /var/lib/etcd
EXPOSE 2379 2380
CMD ["/usr/local/bin/etcd"]
"""


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def run_block(script: str, timeout: float = 120) -> str:
    """*script* run by bash -e (podman as this host needs it); its output."""
    result = subprocess.run(
        ["bash", "-ec", PODMAN_HERE + script],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"exit {result.returncode}:\n{script}\n{output}"
    return result.stdout


def lines(block: str) -> list[str]:
    """The block's commands: continued lines joined, blank lines dropped."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


# -- the etcd image ------------------------------------------------------------------------


def readme_etcd_image() -> str:
    """The etcd image the README's block names."""
    [name] = re.findall(r"\s(\S+/etcd:v3\.[45]\.\d+)\s", readme_example("cluster-etcd"))
    return str(name)


def default_base_image() -> str:
    """./build's base image (Debian with Python), which its build has just made."""
    loader = importlib.machinery.SourceFileLoader("homeport_build_script", str(BUILD))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return str(module.DEFAULT_BASE_IMAGE)


def etcd_server_deb(directory: Path) -> Path:
    """Debian's etcd-server package: apt's cached copy, else ``apt-get download``."""
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "etcd-server"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    cached = sorted(Path("/var/cache/apt/archives").glob("etcd-server_*.deb"))
    wanted = [p for p in cached if p.name.startswith(f"etcd-server_{version}_")] or cached
    if wanted:
        return wanted[-1]
    result = subprocess.run(
        ["apt-get", "download", "etcd-server"],
        cwd=directory, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    found = sorted(directory.glob("etcd-server_*.deb"))
    if result.returncode != 0 or not found:
        pytest.skip(f"no etcd image and no etcd-server package to make one: {result.stderr}")
    return found[-1]


@pytest.fixture(scope="module")
def etcd_image(image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The README's etcd image: the real one if it is here, else the local stand-in."""
    name = readme_etcd_image()
    if podman("image", "exists", name).returncode == 0:
        return name
    context = tmp_path_factory.mktemp("etcd-image")
    (context / "Containerfile").write_text(STAND_IN)
    (context / "etcd-server.deb").write_bytes(etcd_server_deb(context).read_bytes())
    built = podman(
        "build", "--format", "docker", *ULIMITS, "--network", "none",
        "--build-arg", f"BASE_IMAGE={default_base_image()}", "--tag", name, str(context),
        timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return name


# -- ports -----------------------------------------------------------------------------------


def free(port: int) -> bool:
    """Nobody listens on 127.0.0.1:*port*, TCP or UDP."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_prefixes() -> dict[str, str]:
    """For each of the README's port prefixes, one whose ports 1-3 are free here (below
    the ephemeral range, so no outgoing connection takes them meanwhile)."""
    chosen: dict[str, str] = {}
    candidates = list(range(2000, 3200))
    random.shuffle(candidates)
    for candidate in candidates:
        if all(free(candidate * 10 + i) for i in (1, 2, 3)):
            chosen[PORT_PREFIXES[len(chosen)]] = str(candidate)
            if len(chosen) == len(PORT_PREFIXES):
                return chosen
    raise RuntimeError("no free ports")


def block(name: str, image: str, prefixes: dict[str, str]) -> str:
    """The README's block *name* with the image built here and free ports."""
    text = readme_example(name).replace("homeport:0.1.0", image)
    return PORT.sub(lambda m: prefixes[m.group(1)] + m.group(2), text)


# -- the test --------------------------------------------------------------------------------


def left_over() -> list[str]:
    """Which of the README's containers exist."""
    listed = podman("ps", "--all", "--format", "{{.Names}}").stdout.split()
    return sorted(set(NAMES) & set(listed))


@pytest.fixture
def cluster_names() -> Iterator[None]:
    """No container of those names before the test; none after it (the README's own
    "remove it all" block, then podman's rm for whatever a failure left)."""
    require("podman", "curl", "dig")
    there = left_over()
    assert not there, f"remove these first (the README's cluster-remove block): {there}"
    try:
        yield
    finally:
        for name in left_over():  # shown by pytest if the test failed
            logs = podman("logs", name)
            print(f"-- podman logs {name}", (logs.stdout + logs.stderr)[-3000:], sep="\n")
        run_block(readme_example("cluster-remove").replace("\n", " || true\n"))
        assert left_over() == []


def until(command: str, wanted: str, timeout: float = 30) -> str:
    """Run *command* until its output has *wanted*; that output."""
    deadline = time.monotonic() + timeout
    while True:
        output = run_block(command)
        if wanted in output or time.monotonic() > deadline:
            return output
        time.sleep(0.5)


def wait_ready(urls: list[str], timeout: float = 60) -> None:
    """Each agent lists all three nodes."""
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            result = subprocess.run(
                ["curl", "-sf", "--max-time", "2", f"{url}/v1/catalog/nodes"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode == 0 and len(json.loads(result.stdout)) == 3:
                break
            assert time.monotonic() < deadline, f"{url}: {result.stdout}"
            time.sleep(0.2)


@pytest.mark.slow
def test_the_readme_cluster_blocks_work_as_written(
    image: str, etcd_image: str, cluster_names: None
) -> None:
    """Three etcd members and three agents from the README's loops; a service registered
    on agent 1 (its curl line) is answered by agent 3's DNS (its dig line) and listed on
    agent 2 with machine-1 as its node; agent 1 killed, agent 3 marks machine-1 critical
    and drops web from DNS; started again, it is back."""
    started = time.monotonic()
    prefixes = free_prefixes()
    run_block(block("cluster-etcd", image, prefixes))
    run_block(block("cluster-agents", image, prefixes))
    http = [f"http://127.0.0.1:{prefixes['850']}{i}" for i in (1, 2, 3)]
    wait_ready(http)

    register, dig_srv, catalog, members = lines(block("cluster-try", image, prefixes))
    assert run_block(register) == ""
    srv = "1 1 80 machine-1.node.dc1.consul."
    assert srv in until(dig_srv, srv)  # agent 3's copy follows etcd's watch
    [instance] = json.loads(run_block(catalog))
    assert (instance["Node"], instance["ServicePort"]) == ("machine-1", 80)
    listed = {m["Name"] for m in json.loads(run_block(members))}
    assert listed == {"machine-1", "machine-2", "machine-3"}

    kill, status, dig_again, start = lines(block("cluster-kill", image, prefixes))
    run_block(kill)
    # The line sleeps TTL + 2 s once; on a loaded machine give it a little longer.
    assert "critical" in until(status, "critical", timeout=20)
    assert srv not in run_block(dig_again)
    run_block(start)
    assert srv in until(dig_again, srv, timeout=60)
    print(f"the README's cluster blocks: {time.monotonic() - started:.0f}s")

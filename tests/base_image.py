"""A local Debian bookworm base image with python3, for building the image with no pulls.

No registry can be reached here, so the image tests cannot start ``FROM
python:3.11-slim-bookworm``.  This makes the nearest thing from Debian's own packages:
``debootstrap --variant=minbase --include=python3,python3-venv bookworm`` (Python 3.11,
as the wheels need), packed as a tarball under the build folder and ``podman import``-ed.
Each step is skipped when its result is already there: the image in podman's store, else
the tarball, else a fresh debootstrap (~1 minute).

    python -m tests.base_image            # prints the image name
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
PACKAGES = ["python3", "python3-venv"]
IMAGE = f"localhost/homeport-base:{SUITE}-python3"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PODMAN = ["podman", "--runtime", "runc"] if shutil.which("runc") else ["podman"]


def build_dir() -> Path:
    return Path(os.environ.get("HOMEPORT_BUILD_DIR", ROOT / ".build"))


def mirror() -> str:
    """The Debian mirror this host's apt uses (so it is one we can reach), else the default."""
    if os.environ.get("HOMEPORT_DEBIAN_MIRROR"):
        return os.environ["HOMEPORT_DEBIAN_MIRROR"]
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for stanza in sources.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
    return DEFAULT_MIRROR


def say(message: str) -> None:
    print(f"==> base image: {message}", file=sys.stderr, flush=True)


def image_exists(name: str = IMAGE) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", name], check=False).returncode == 0


def make_tarball(tarball: Path) -> None:
    """debootstrap into a scratch folder, trim it, and pack it as *tarball*."""
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap needs root")
    rootfs = tarball.parent / f"rootfs-{SUITE}"
    shutil.rmtree(rootfs, ignore_errors=True)
    started = time.monotonic()
    say(f"debootstrap {SUITE} with {', '.join(PACKAGES)} from {mirror()}")
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror(),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / junk).glob("*"):
            if path.is_file():
                path.unlink()
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
    partial.rename(tarball)
    shutil.rmtree(rootfs)
    say(f"{tarball} ({tarball.stat().st_size >> 20} MiB) in {time.monotonic() - started:.0f}s")


def ensure(name: str = IMAGE) -> str:
    """The base image's name, building whatever is not cached yet."""
    if image_exists(name):
        return name
    folder = build_dir() / "base"
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / f"{SUITE}-python3.tar"
    if not tarball.exists():
        make_tarball(tarball)
    say(f"podman import {tarball} {name}")
    subprocess.run(
        [*PODMAN, "import", "--quiet", "--change", 'CMD ["/bin/bash"]', str(tarball), name],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return name


if __name__ == "__main__":
    print(ensure())

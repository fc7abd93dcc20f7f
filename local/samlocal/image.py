"""The python3.13 Lambda image ``sam local`` runs functions in: the real one, or a stand-in.

SAM builds each function's image ``FROM public.ecr.aws/lambda/python:3.13-x86_64``, adding
the RIE and the layers. Where that image cannot be pulled (no registry reachable), a
stand-in is built from Debian packages and tagged with its name: ``debootstrap`` bookworm,
this machine's Python 3.13 in ``/var/lang``, ``awslambdaric`` and the SDK at the pinned
versions in ``/var/runtime``, a ``/var/runtime/bootstrap`` that starts the runtime client,
and the runtime's environment. The root filesystem is cached as a tarball under
``.local/samlocal/``, keyed by everything it is made of.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from local.samlocal.daemon import Docker

BASE_IMAGE = "public.ecr.aws/lambda/python:3.13-x86_64"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".local" / "samlocal"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The shared libraries Python's extension modules link (ssl, sqlite3, ctypes, lzma, ...).
DEBIAN_PACKAGES = "ca-certificates,libssl3,libsqlite3-0,libexpat1,libffi8,liblzma5,libbz2-1.0,zlib1g,libuuid1"
RUNTIME_PACKAGES = ("awslambdaric", "boto3", "botocore", "urllib3")
# Never needed to run a function; dropped to keep vfs copies (one per image step) small.
PYTHON_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "__phello__", "pydoc_data"}
DEBIAN_SKIP = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt", "var/lib/apt")
BOOTSTRAP = """#!/bin/sh
# Stand-in for the python3.13 image's bootstrap: the runtime interface client runs the handler.
exec /var/lang/bin/python3.13 -m awslambdaric "$_HANDLER"
"""
RUNTIME_ENV = {
    "LANG": "en_US.UTF-8",
    "TZ": ":/etc/localtime",
    "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "LAMBDA_TASK_ROOT": "/var/task",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
    # Lambda's python3.13 path order: the function, the layers, then the runtime's own packages.
    "PYTHONPATH": "/var/task:/opt/python/lib/python3.13/site-packages:/opt/python:/var/runtime",
}


def runtime_pins() -> list[str]:
    """``name==version`` of the runtime's packages, as requirements-dev.txt pins them."""
    text = (REPO_ROOT / "requirements-dev.txt").read_text()
    pins = []
    for name in RUNTIME_PACKAGES:
        found = re.search(rf"^{name}==(\S+)", text, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"requirements-dev.txt pins no {name}")
        pins.append(f"{name}=={found.group(1)}")
    return pins


def python_home() -> Path:
    """The Python 3.13 installation to copy: the one this interpreter (or its venv) comes from."""
    home = Path(sys.base_prefix)
    if sys.version_info[:2] != (3, 13) or home == Path("/usr"):
        raise RuntimeError("the stand-in image copies a self-contained Python 3.13 (pyenv's), not the system's")
    return home


def cache_key() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(" ".join([*runtime_pins(), str(python_home()), sys.version, MIRROR]).encode())
    return digest.hexdigest()[:16]


def ensure_base_image(docker: Docker, log: Path) -> str:
    """Make ``BASE_IMAGE`` present: already there, pulled, or the stand-in. Says which."""
    if docker.run("images", "-q", BASE_IMAGE).strip():
        return "present"
    try:
        docker.run("pull", BASE_IMAGE, timeout=300)
        return "pulled"
    except RuntimeError:
        pass  # no registry: build the stand-in
    tarball = CACHE_DIR / f"python3.13-standin-{cache_key()}.tar"
    if not tarball.exists():
        build_rootfs(tarball, log)
    changes = [f"ENV {name}={value}" for name, value in RUNTIME_ENV.items()]
    changes += ["WORKDIR /var/task", 'ENTRYPOINT ["/var/runtime/bootstrap"]']
    docker.run("import", *(arg for change in changes for arg in ("--change", change)), str(tarball), BASE_IMAGE)
    return "stand-in"


def build_rootfs(tarball: Path, log: Path) -> None:
    """debootstrap + Python + runtime packages, trimmed, into ``tarball``."""
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        raise RuntimeError(f"{BASE_IMAGE} cannot be pulled, and the stand-in needs root and debootstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tarball.parent))
    rootfs = work / "rootfs"
    try:
        with log.open("ab") as out:

            def step(*argv: str) -> None:
                subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True)

            step("debootstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}", "bookworm", str(rootfs), MIRROR)
            shutil.copytree(python_home(), rootfs / "var/lang", symlinks=True, ignore=_python_ignore)
            (rootfs / "etc/ld.so.conf.d/var-lang.conf").write_text("/var/lang/lib\n")
            step("chroot", str(rootfs), "/sbin/ldconfig")
            step(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "--target", str(rootfs / "var/runtime"), *runtime_pins())  # fmt: skip
            bootstrap = rootfs / "var/runtime/bootstrap"
            bootstrap.write_text(BOOTSTRAP)
            bootstrap.chmod(0o755)
            (rootfs / "var/task").mkdir(exist_ok=True)
            for skipped in DEBIAN_SKIP:
                shutil.rmtree(rootfs / skipped, ignore_errors=True)
            # Fails the build, not a later invoke, when a linked library is missing.
            step("chroot", str(rootfs), "/var/lang/bin/python3.13", "-c",
                 "import ssl, sqlite3, ctypes, lzma, bz2, zlib, decimal, hashlib, uuid")  # fmt: skip
        partial = tarball.with_suffix(".partial")
        with tarfile.open(partial, "w") as archive:
            archive.add(rootfs, arcname=".")
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _python_ignore(directory: str, names: list[str]) -> set[str]:
    if directory.endswith("lib/python3.13"):
        return {name for name in names if name in PYTHON_SKIP or name == "site-packages" or name.startswith("config-")}
    return {name for name in names if name in ("include", "share") or name.startswith("_tkinter")}


def build_invoke_image(docker: Docker, tag: str, ca_pem: bytes, environment: dict[str, str]) -> None:
    """``FROM BASE_IMAGE``, trusting ``ca_pem``, with ``environment`` (endpoints the template does not declare).

    ``sam local`` passes a function only the variables its template declares; an image's
    own ``ENV`` reaches it all the same. SAM runs it through ``--invoke-image``.
    """
    with tempfile.TemporaryDirectory(prefix="invoke-image-") as context:
        (Path(context) / "ca.pem").write_bytes(ca_pem)
        lines = [f"FROM {BASE_IMAGE}", "COPY ca.pem /etc/ssl/token-broker-local-ca.pem"]
        env = {"SSL_CERT_FILE": "/etc/ssl/token-broker-local-ca.pem", **environment}
        lines += [f"ENV {name}={value}" for name, value in env.items()]
        (Path(context) / "Dockerfile").write_text("\n".join(lines) + "\n")
        docker.run("build", "--quiet", "--tag", tag, context)

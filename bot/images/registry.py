"""An auth-less docker registry on 127.0.0.1: is one there, start one (Debian's docker-registry),
read a manifest back from it, put one under another tag. The console's builds push there, builds
with UAT_REGISTRY move their tags there; the tests' services use it too.

Everything here talks to the loopback only, without proxies.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
BINARIES = ("docker-registry", "registry")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT_S = 30.0
MANIFEST_MEDIA_TYPES: tuple[str, ...] = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET `url` with no proxy: status, headers, body (an HTTP error status is an answer too)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def config(address: str, storage: Path, service: str = "uat-bot-registry") -> str:
    """The registry's config: no auth, filesystem storage under `storage`, on `address`."""
    return f"""\
version: 0.1
log:
  level: info
  fields:
    service: {service}
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {address}
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
"""


def problem(address: str) -> str | None:
    """None when an auth-less registry answers at `address` (host:port); otherwise why not."""
    try:
        status, headers, _ = http_get(f"http://{address}/v2/")
    except OSError as exc:
        return f"unreachable: {exc}"
    api = headers.get("Docker-Distribution-Api-Version", "")
    if status == 200 and api.startswith("registry/2"):
        return None
    return f"occupied: GET /v2/ answered {status} (Docker-Distribution-Api-Version={api!r})"


def binary(path: str = "") -> str | None:
    """The registry program, looked for on `path` and the system directories."""
    for name in BINARIES:
        found = shutil.which(name, path=f"{path}:{SYSTEM_PATH}" if path else SYSTEM_PATH)
        if found:
            return found
    return None


def fetch_manifest(address: str, repository: str, reference: str) -> tuple[str, str, bytes]:
    """GET a manifest: (digest, media type, body). The digest is the sha256 of the body, and a
    registry that says otherwise is an error; LookupError when the registry does not have it."""
    status, headers, body = http_get(
        f"http://{address}/v2/{repository}/manifests/{reference}",
        {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
    )
    if status != 200:
        raise LookupError(f"{address}/{repository}:{reference}: HTTP {status}: {body[:200]!r}")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    said = headers.get("Docker-Content-Digest", digest)
    if said != digest:
        raise LookupError(f"{address} says {said} for a manifest whose sha256 is {digest}")
    return digest, headers.get("Content-Type", ""), body


def put_manifest(address: str, repository: str, tag: str, media_type: str, body: bytes) -> None:
    """PUT `body` as the manifest of `repository:tag` (the registry's own re-tag: no layers move).
    A refusal raises LookupError with the registry's answer."""
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{tag}",
        data=body,
        headers={"Content-Type": media_type},
        method="PUT",
    )
    try:
        with _NO_PROXY.open(request, timeout=10):
            return
    except urllib.error.HTTPError as exc:
        answer = exc.read()[:200]
        raise LookupError(f"{address}/{repository}:{tag}: HTTP {exc.code}: {answer!r}") from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class LocalRegistry:
    """A registry started for this process, on a free port, storing in `directory`; stopped
    with it. `start` returns its address."""

    def __init__(self, program: str, directory: Path) -> None:
        self.program = program
        self.directory = directory
        self.address = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start it and wait until it answers (blocking: call it in a thread)."""
        address = f"{HOST}:{free_port()}"
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        settings = self.directory / "config.yml"
        settings.write_text(config(address, self.directory / "data"))
        log = (self.directory / "registry.log").open("ab")
        try:
            self._process = subprocess.Popen(
                [self.program, "serve", str(settings)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={"PATH": SYSTEM_PATH},  # REGISTRY_* variables would override the config
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        why = problem(address)
        while why is not None:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the registry did not start at {address} ({why})")
            time.sleep(0.1)
            why = problem(address)
        self.address = address
        return address

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

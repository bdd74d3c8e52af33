"""Real local services for the test suite and the benchmarks: a docker engine and a registry.

Everything here is idempotent and talks to loopback only:

* :func:`ensure_dockerd` returns the base_url of a docker engine that answers ``ping``.  It reuses
  whatever already answers (``DOCKER_HOST`` is honoured) and otherwise starts Debian's
  ``dockerd`` detached, in its own session, so it outlives the test process and later runs reuse
  it.
* :func:`ensure_registry` returns ``"127.0.0.1:<port>"`` of a distribution registry
  (Debian's ``docker-registry``) without auth, storing blobs on the filesystem in the state dir
  and listening on 127.0.0.1 only.  dockerd treats 127.0.0.0/8 as an insecure registry by
  default, so pushes there go over plain http.
* :func:`require` turns an unavailable service into ``pytest.skip`` locally, and into a loud
  failure under ``CI=true`` (CI must never silently skip these tests).

State (config, logs, registry storage) lives in ``$UAT_BOT_SERVICES_DIR``, default
``<tmp>/uat-bot-services``.  The registry port is ``$UAT_BOT_REGISTRY_PORT`` (default 5055).
``.ci/services.sh`` calls ``ensure_dockerd()`` and ``ensure_registry()`` on CI runners.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import docker
import pytest

from bot.images import registry

T = TypeVar("T")

STATE_DIR = Path(
    os.environ.get("UAT_BOT_SERVICES_DIR") or Path(tempfile.gettempdir()) / "uat-bot-services"
)
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DOCKER_DATA_ROOT = os.environ.get("UAT_BOT_DOCKER_DATA_ROOT", "/var/lib/docker")
REGISTRY_HOST = "127.0.0.1"
REGISTRY_PORT = int(os.environ.get("UAT_BOT_REGISTRY_PORT", "5055"))
START_TIMEOUT = 30.0

# Flags for a dockerd that only ever serves builds and pushes to 127.0.0.1 inside a sandbox or CI
# VM.  No bridge network means no iptables/ip6tables rules are needed (the sandbox has neither
# NAT nor outbound access); 127.0.0.0/8 is an insecure registry by default, so no
# --insecure-registry flag is needed for the registry on REGISTRY_PORT.
DOCKERD_FLAGS: tuple[str, ...] = (
    "--bridge=none",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--ip-masq=false",
)

MANIFEST_MEDIA_TYPES = registry.MANIFEST_MEDIA_TYPES

_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A launcher shell puts the daemon in the background and exits at once, so the daemon is
# re-parented to init and outlives us: "$0" is the log file, "$@" the daemon's argv.
_LAUNCHER = '"$@" </dev/null >>"$0" 2>&1 & echo $!'
# Failures are remembered per process, so a suite of many docker tests skips quickly.
_failures: dict[str, str] = {}


# --------------------------------------------------------------------------------- helpers


def _state_dir() -> Path:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    return STATE_DIR


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise service start-up across processes (pytest-xdist workers, parallel CI steps)."""
    with (_state_dir() / f"{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _which(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:{_SYSTEM_PATH}")


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie (the daemons are not our children)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _spawn_detached(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in a new session, detached from this process; return the daemon's pid."""
    with log.open("a") as fh:
        fh.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n")
    out = subprocess.run(
        ["/bin/sh", "-c", _LAUNCHER, str(log), *argv],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        start_new_session=True,
        timeout=10,
    )
    return int(out.stdout.strip())


def _check_loopback_url(url: str) -> None:
    """Refuse a DOCKER_HOST that would send traffic beyond loopback."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("unix", "http+unix", "npipe"):
        return
    host = parsed.hostname or ""
    if parsed.scheme in ("tcp", "http", "https") and host:
        if host == "localhost":
            return
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
    raise RuntimeError(f"DOCKER_HOST={url!r} is not a loopback endpoint; refusing to use it")


def _ping(base_url: str | None) -> str | None:
    """Ping a docker engine; ``None`` means ``docker.from_env()``.  Return an error or None."""
    try:
        client = (
            docker.from_env(timeout=5)
            if base_url is None
            else docker.DockerClient(base_url=base_url, timeout=5)
        )
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure just means "not answering"
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------------- dockerd


def ensure_dockerd() -> str:
    """Return the base_url of a docker engine on this host, starting dockerd if none answers.

    ``DOCKER_HOST`` is honoured (it must be loopback or a unix socket, and must answer unless it
    is the default socket).  When nothing answers on the default socket, ``dockerd`` is started
    detached with :data:`DOCKERD_FLAGS` on the unix socket, its data under
    ``$UAT_BOT_DOCKER_DATA_ROOT`` (default /var/lib/docker) and its log in the state dir.  The
    storage driver is dockerd's own choice (overlay2 where the kernel allows); if that daemon
    dies during start-up it is retried once with ``--storage-driver=vfs``.
    """
    if "dockerd" in _failures:
        raise RuntimeError(_failures["dockerd"])
    try:
        return _ensure_dockerd()
    except RuntimeError as exc:
        _failures["dockerd"] = str(exc)
        raise


def _ensure_dockerd() -> str:
    env_host = os.environ.get("DOCKER_HOST") or None
    base_url = env_host or DEFAULT_DOCKER_HOST
    _check_loopback_url(base_url)
    error = _ping(env_host)
    if error is None:
        return base_url
    if base_url != DEFAULT_DOCKER_HOST:
        # Only the standard socket is ours to start a daemon on (pidfile, exec-root, data-root
        # would clash with a second dockerd); an explicit DOCKER_HOST must already answer.
        raise RuntimeError(f"no docker engine answers at DOCKER_HOST={base_url} ({error})")
    if os.geteuid() != 0:
        raise RuntimeError(f"no docker engine answers at {base_url} and only root can start one")
    dockerd = _which("dockerd")
    if dockerd is None:
        raise RuntimeError(f"no docker engine answers at {base_url} and dockerd is not installed")

    log = _state_dir() / "dockerd.log"
    with _locked("dockerd"):
        if _ping(base_url) is None:  # somebody else started it while we waited for the lock
            return base_url
        pidfile = Path("/var/run/docker.pid")
        existing = _read_pid(pidfile)
        if existing is not None and _pid_alive(existing):
            # A dockerd is still starting up (or is wedged): wait for it, never start a second.
            return _wait_for_dockerd(base_url, existing, log)
        last_error = ""
        for storage_driver in (None, "vfs"):
            argv = [
                dockerd,
                f"--host={base_url}",
                f"--data-root={DOCKER_DATA_ROOT}",
                f"--pidfile={pidfile}",
                *DOCKERD_FLAGS,
            ]
            if storage_driver:
                argv.append(f"--storage-driver={storage_driver}")
            env = dict(os.environ, PATH=f"{os.environ.get('PATH', '')}:{_SYSTEM_PATH}")
            env.pop("DOCKER_HOST", None)
            pid = _spawn_detached(argv, log, env)
            try:
                return _wait_for_dockerd(base_url, pid, log)
            except _DaemonExited as exc:
                last_error = str(exc)
        raise RuntimeError(last_error)


class _DaemonExited(RuntimeError):
    pass


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _wait_for_dockerd(base_url: str, pid: int, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    error: str | None = "not tried"
    while time.monotonic() < deadline:
        error = _ping(base_url)
        if error is None:
            return base_url
        if not _pid_alive(pid):
            raise _DaemonExited(
                f"dockerd (pid {pid}) exited during start-up; tail of {log}:\n{_log_tail(log)}"
            )
        time.sleep(0.25)
    raise RuntimeError(
        f"dockerd (pid {pid}) did not answer at {base_url} within {START_TIMEOUT:.0f}s "
        f"({error}); tail of {log}:\n{_log_tail(log)}"
    )


# --------------------------------------------------------------------------------- registry


def registry_config(port: int = REGISTRY_PORT) -> str:
    """The registry's config: no auth, filesystem storage in the state dir, 127.0.0.1 only."""
    storage = _state_dir() / "registry" / "data"
    return registry.config(f"{REGISTRY_HOST}:{port}", storage, service="uat-bot-test-registry")


def _registry_state(port: int) -> str | None:
    """None when an auth-less registry answers on ``port``; otherwise why not."""
    return registry.problem(f"{REGISTRY_HOST}:{port}")


def ensure_registry() -> str:
    """Return ``"127.0.0.1:<port>"`` of an auth-less docker registry, starting one if needed."""
    if "registry" in _failures:
        raise RuntimeError(_failures["registry"])
    try:
        return _ensure_registry(REGISTRY_PORT)
    except RuntimeError as exc:
        _failures["registry"] = str(exc)
        raise


def _ensure_registry(port: int) -> str:
    address = f"{REGISTRY_HOST}:{port}"
    state = _registry_state(port)
    if state is None:
        return address
    if state.startswith("occupied"):
        raise RuntimeError(f"port {port} is taken by something else than an open registry: {state}")
    binary = registry.binary(os.environ.get("PATH", ""))
    if binary is None:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")

    with _locked("registry"):
        state = _registry_state(port)
        if state is None:
            return address
        directory = _state_dir() / "registry"
        (directory / "data").mkdir(parents=True, exist_ok=True)
        config = directory / "config.yml"
        config.write_text(registry_config(port))
        log = directory / "registry.log"
        # REGISTRY_* variables would override the config file; keep ours authoritative.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        pid = _spawn_detached([binary, "serve", str(config)], log, env)
        (directory / "registry.pid").write_text(f"{pid}\n")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            state = _registry_state(port)
            if state is None:
                return address
            if not _pid_alive(pid):
                break
            time.sleep(0.1)
        raise RuntimeError(
            f"registry (pid {pid}) did not answer at http://{address}/v2/ ({state}); "
            f"tail of {log}:\n{_log_tail(log)}"
        )


fetch_manifest = registry.fetch_manifest


# --------------------------------------------------------------------------------- pytest glue


def docker_client(timeout: int = 120) -> docker.DockerClient:
    """A client for the engine from :func:`ensure_dockerd` (keeps DOCKER_HOST's TLS settings)."""
    base_url = ensure_dockerd()
    if os.environ.get("DOCKER_HOST"):
        return docker.from_env(timeout=timeout)
    return docker.DockerClient(base_url=base_url, timeout=timeout)


def docker_unavailable_reason() -> str | None:
    """None when a docker engine and the registry are usable; otherwise a skip reason."""
    try:
        ensure_dockerd()
        ensure_registry()
    except Exception as exc:
        return f"docker engine/registry unavailable: {exc}"
    return None


def docker_available() -> bool:
    """True when both a docker engine and the registry are (or could be made) available."""
    return docker_unavailable_reason() is None


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require(service_fn: Callable[[], T]) -> T:
    """Call ``service_fn``; if it fails, skip the test — or, under ``CI=true``, fail loudly."""
    try:
        return service_fn()
    except Exception as exc:
        name = getattr(service_fn, "__name__", repr(service_fn))
        if in_ci():
            raise RuntimeError(f"CI=true: required service {name} is unavailable: {exc}") from exc
        pytest.skip(f"{name} unavailable (set CI=true to fail instead): {exc}")

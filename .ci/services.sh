#!/usr/bin/env bash
# Start the real services the test suite and benchmarks need: a docker engine (dockerd) and an
# auth-less registry on 127.0.0.1 (see tests/harness/services.py). Installs Debian's packages first if
# any of the tools is missing. Usage: .ci/services.sh [venv-python]   (default .venv/bin/python)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-.venv/bin/python}"

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

missing=()
for tool in dockerd docker-registry shellcheck; do
    # dockerd lives in /usr/sbin, which is not on every user's PATH.
    if ! PATH="${PATH}:/usr/sbin:/sbin" command -v "${tool}" >/dev/null 2>&1; then
        missing+=("${tool}")
    fi
done

if ((${#missing[@]} > 0)); then
    echo "services.sh: missing ${missing[*]}; installing docker.io docker-registry shellcheck" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends docker.io docker-registry shellcheck
fi

cd "${repo_root}"
if [[ ! -x "${python}" ]]; then
    echo "services.sh: python interpreter ${python} not found (pass the venv python as \$1)" >&2
    exit 2
fi

# Debian's docker-registry package ships a service on :5000 with htpasswd auth; we do not use
# it (tests/harness/services.py runs its own auth-less registry on 127.0.0.1), so it may stay as it is.
"${python}" -c '
import tests.harness.services as s
print("docker engine:", s.ensure_dockerd())
print("registry:     ", s.ensure_registry())
'

#!/usr/bin/env bash
# `make images`: build both images for real on a Debian bookworm base made from Debian's own
# packages, for machines that reach Debian's apt repositories, PyPI and npm but not Docker Hub.
#
#   1. BASE_TAG [uat-base:bookworm]: debootstrap --variant=minbase into a temporary folder, then
#      `docker import`. Skipped when an image with that tag exists (delete it to rebuild).
#   2. BOT_TAG [uat-bot:local] from ./Dockerfile and CONTAINER_TAG [uat-container:local] from
#      container/Dockerfile, both with --build-arg BASE=BASE_TAG and --network host (the engine may
#      have no bridge network, and apt, pip and npm must reach their registries).
#
# The base has what the two public bases give the Dockerfiles (python:3.11-slim-bookworm and
# node:20-bookworm-slim): Python 3.11 with venv, git, ca-certificates, Node.js and npm. It also
# trusts the CAs this machine added in /usr/local/share/ca-certificates (a TLS-inspecting proxy's,
# say), so that pip and npm inside the builds reach their registries as this machine does.
#
# Environment: MIRROR and SECURITY_MIRROR [the Debian archive and its security archive, as this
# machine's apt sources name them], DOCKER [docker]. Needs root for debootstrap (installs
# Debian's debootstrap package when it is missing).
set -euo pipefail

BASE_TAG="${BASE_TAG:-uat-base:bookworm}"
BOT_TAG="${BOT_TAG:-uat-bot:local}"
CONTAINER_TAG="${CONTAINER_TAG:-uat-container:local}"

# The archives this machine's apt already uses (deb822 `URIs:` or one-line `deb URI suite`).
apt_uris() {
    { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null || true; } | awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
                           $1 == "deb" { print ($2 ~ /^\[/ ? $3 : $2) }'
}
MIRROR="${MIRROR:-$(apt_uris | grep -v -- '-security' | head -n 1 || true)}"
SECURITY_MIRROR="${SECURITY_MIRROR:-$(apt_uris | grep -- '-security' | head -n 1 || true)}"
if [[ -z "${MIRROR}" || -z "${SECURITY_MIRROR}" ]]; then
    echo "images.sh: no Debian archive in this machine's apt sources: set MIRROR and SECURITY_MIRROR" >&2
    exit 2
fi
DOCKER="${DOCKER:-docker}"
SUITE=bookworm
# Only what the Dockerfiles expect of their public bases; they apt-get the rest themselves.
BASE_PACKAGES=(ca-certificates python3 python3-venv git nodejs npm)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() {
    printf 'images: %s\n' "$*" >&2
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

if ! "${DOCKER}" info >/dev/null 2>&1; then
    say "no docker engine answers; start one with: make services"
    exit 1
fi

build_base() {
    local rootfs log start=${SECONDS}
    if ! PATH="${PATH}:/usr/sbin:/sbin" command -v debootstrap >/dev/null 2>&1; then
        say "installing Debian's debootstrap"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -q
        as_root apt-get install -y -q --no-install-recommends debootstrap
    fi
    rootfs="$(mktemp -d "${TMPDIR:-/tmp}/uat-base.XXXXXX")"
    log="${rootfs}.log"
    # The folder is root's after debootstrap; remove it whatever happens.
    # shellcheck disable=SC2064
    trap "as_root rm -rf '${rootfs}'" EXIT
    # debootstrap's own resolver trips over npm's virtual dependencies, so it lays down minbase
    # only, and apt (from bookworm, its updates and security) installs the rest.
    say "debootstrap ${SUITE} (minbase) into ${rootfs}"
    as_root env PATH="${PATH}:/usr/sbin:/sbin" debootstrap --variant=minbase \
        "${SUITE}" "${rootfs}" "${MIRROR}" >"${log}" 2>&1 || {
        tail -n 20 "${log}" >&2
        say "debootstrap failed (full log: ${log})"
        exit 1
    }
    say "debootstrap took $((SECONDS - start))s"
    as_root tee "${rootfs}/etc/apt/sources.list" >/dev/null <<EOF
deb ${MIRROR} ${SUITE} main
deb ${MIRROR} ${SUITE}-updates main
deb ${SECURITY_MIRROR} ${SUITE}-security main
EOF
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        as_root mkdir -p "${rootfs}/usr/local/share/ca-certificates"
        as_root cp /usr/local/share/ca-certificates/*.crt "${rootfs}/usr/local/share/ca-certificates/"
    fi
    start=${SECONDS}
    say "apt-get install ${BASE_PACKAGES[*]}"
    # shellcheck disable=SC2016  # $@ is expanded by the chroot's sh
    as_root chroot "${rootfs}" env DEBIAN_FRONTEND=noninteractive \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends "$@" &&
            update-ca-certificates && apt-get clean' apt "${BASE_PACKAGES[@]}" >>"${log}" 2>&1 || {
        tail -n 20 "${log}" >&2
        say "apt-get install in the base failed (full log: ${log})"
        exit 1
    }
    rm -f "${log}"
    say "apt-get took $((SECONDS - start))s"
    as_root rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin
    say "importing it as ${BASE_TAG}"
    # pip (in venvs) and Node.js take the system's CA bundle, like curl and apt.
    as_root tar -C "${rootfs}" --numeric-owner -c . | "${DOCKER}" import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["bash"]' \
        - "${BASE_TAG}" >/dev/null
    as_root rm -rf "${rootfs}"
    trap - EXIT
}

build() {
    local tag=$1 context=$2 start=${SECONDS}
    say "building ${tag} from ${context}/Dockerfile on ${BASE_TAG}"
    "${DOCKER}" build --network host --build-arg "BASE=${BASE_TAG}" -t "${tag}" "${context}"
    say "${tag} took $((SECONDS - start))s"
}

if "${DOCKER}" image inspect "${BASE_TAG}" >/dev/null 2>&1; then
    say "${BASE_TAG} exists (docker rmi ${BASE_TAG} to rebuild it)"
else
    build_base
fi
build "${BOT_TAG}" "${repo_root}"
build "${CONTAINER_TAG}" "${repo_root}/container"

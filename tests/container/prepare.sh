#!/usr/bin/env bash
# Make this machine able to run the container tests, where it can: podman and friends from Debian's
# packages (as root, with apt), and the Containerfile's base image made locally with mmdebstrap when
# no registry gives it. Where it cannot, it says why and the tests skip.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"

if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "container-test: installing podman, buildah, mmdebstrap, runc, uidmap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            podman buildah mmdebstrap runc uidmap >/dev/null \
            || echo "container-test: apt-get could not install podman; the container tests will skip"
    else
        echo "container-test: podman is missing and this is not root with apt-get; the container tests will skip"
        exit 0
    fi
fi
command -v podman >/dev/null || exit 0

base="$(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' "$here/../../Containerfile" | head -n1)"
if ! podman image exists "$base"; then
    if ! timeout 120 podman pull -q "$base" >/dev/null 2>&1; then
        echo "container-test: no registry gave $base; making it locally with mmdebstrap"
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        if mmdebstrap --quiet --variant=minbase bookworm "$tmp/rootfs.tar" \
            && podman import --quiet --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                   "$tmp/rootfs.tar" "$base" >/dev/null; then
            echo "container-test: made $base"
        else
            echo "container-test: could not make $base; the container tests will skip"
        fi
    fi
fi
exit 0

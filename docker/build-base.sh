#!/usr/bin/env bash
# Make a Debian bookworm base image without any registry: debootstrap into a temporary directory,
# then `docker import`. The image carries the OS packages the Dockerfile needs, so building
# watch_pipeline on it needs no network at all (docker/build.sh --base TAG).
#
#   docker/build-base.sh [--tag TAG] [--mirror URL] [--extra "pkg pkg"]
#
# --extra adds packages (the stack test adds postgresql, to run Debian's PostgreSQL in place of
# the postgres image). Needs root and debootstrap.
set -euo pipefail
tag=watch-pipeline-base:bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
extra=""
while (($#)); do
  case $1 in
    --tag) tag=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --extra) extra=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build-base.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "build-base.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build-base.sh: apt-get install debootstrap" >&2; exit 1; }

packages="python3 python3-venv ffmpeg espeak-ng ca-certificates $extra"
rootfs=$(mktemp -d /var/tmp/watch-base.XXXXXX)
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
trap 'exit 143' INT TERM
echo "[base] debootstrap bookworm ($packages) from $mirror"
debootstrap --variant=minbase --include="$(echo $packages | tr ' ' ',')" \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# Trim what a container never needs: package lists, caches, docs.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
  "$rootfs"/var/cache/* "$rootfs"/tmp/*
echo "[base] docker import -> $tag"
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "[base] done: $tag"

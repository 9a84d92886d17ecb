#!/usr/bin/env bash
# Build the local Debian bookworm test images (DESIGN.md §7); Docker Hub is not reachable,
# so the root filesystem comes from debootstrap and the Debian mirror apt already uses.
#
# Images (ARCH = amd64 | arm64):
#   localhost/iotfleet-debian:bookworm-ARCH-base      debootstrap minbase, imported
#   localhost/iotfleet-debian:bookworm-ARCH           + python3 only ("stock device")
#   localhost/iotfleet-debian:bookworm-ARCH-prepared  + python3-cryptography python3-tomlkit openssl
#   localhost/iotfleet-debian:bookworm-ARCH-init      + systemd (run /sbin/init with --systemd=always)
#
# Environment:
#   ARCHES="amd64 arm64"        architectures to build (arm64 is emulated by qemu-user-static)
#   VARIANTS="stock prepared"   variants to build on top of -base (add "init" for systemd)
#   FORCE=1                     rebuild images that already exist, without podman's layer cache
#                               (reuses the cached rootfs tarball)
#   REFRESH_ROOTFS=1            also re-run debootstrap instead of using build/debootstrap/*.tar
#   DEBIAN_MIRROR=URL           mirror for debootstrap (default: the one in /etc/apt/sources*)
#   BUILD_NETWORK=host          network for `podman build` RUN steps
# Idempotent: an existing image is skipped unless FORCE=1. Needs root (debootstrap).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

SUITE=bookworm
REPO=localhost/iotfleet-debian
ARCHES=${ARCHES:-amd64 arm64}
VARIANTS=${VARIANTS:-stock prepared}
FORCE=${FORCE:-0}
REFRESH_ROOTFS=${REFRESH_ROOTFS:-0}
BUILD_NETWORK=${BUILD_NETWORK:-host}
CACHE=${CACHE:-$ROOT/build/debootstrap}

log() { printf '%s build-images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

# The main Debian archive URI apt uses for $SUITE, from deb822 .sources or one-line .list files.
detect_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    awk -v suite="$SUITE" '
      function flush() { if (uris != "" && (" " suites " ") ~ (" " suite " ")) { split(uris, u, " "); print u[1]; exit } uris = ""; suites = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/   { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      END { flush() }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -nE "s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+$SUITE[[:space:]].*/\2/p"
}

# Image ids replaced by FORCE=1, removed at the end (children first) so no dangling images pile up.
REPLACED=()
exists() {
  podman image exists "$1" || return 1
  [[ $FORCE == 1 ]] || return 0
  REPLACED=("$1=$(podman image inspect --format '{{.Id}}' "$1")" "${REPLACED[@]}")
  return 1
}

build_rootfs_tar() {
  local arch=$1 tar=$CACHE/$SUITE-$arch-minbase.tar
  if [[ -s $tar && $REFRESH_ROOTFS != 1 ]]; then
    echo "$tar"
    return
  fi
  local mirror=${DEBIAN_MIRROR:-$(detect_mirror | head -n1)}
  [[ -n $mirror ]] || die "no Debian mirror for $SUITE in /etc/apt/sources*; set DEBIAN_MIRROR=URL"
  local dir=$CACHE/rootfs-$arch
  rm -rf "$dir" && mkdir -p "$dir"
  log "debootstrap $SUITE $arch from $mirror (amd64 ~1 min, arm64 emulated ~2-3 min)"
  local t0=$SECONDS
  debootstrap --variant=minbase --arch="$arch" "$SUITE" "$dir" "$mirror" >"$CACHE/debootstrap-$arch.log" 2>&1 ||
    die "debootstrap $arch failed, see $CACHE/debootstrap-$arch.log"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  rm -rf "$dir"
  log "debootstrap $arch: $((SECONDS - t0)) s -> $tar"
  echo "$tar"
}

build_arch() {
  local arch=$1 base=$REPO:$SUITE-$arch-base
  if exists "$base"; then
    log "$base exists (FORCE=1 to rebuild)"
  else
    local tar t0
    tar=$(build_rootfs_tar "$arch")
    t0=$SECONDS
    podman import -q --arch "$arch" --change 'CMD ["sleep", "infinity"]' "$tar" "$base" >/dev/null
    log "$base imported in $((SECONDS - t0)) s"
  fi
  # stock builds on -base; prepared and init build on stock.
  local variant from tag t0
  for variant in stock ${VARIANTS//stock/}; do
    case $variant in
      stock) from=$base tag=$REPO:$SUITE-$arch ;;
      prepared | init) from=$REPO:$SUITE-$arch tag=$REPO:$SUITE-$arch-$variant ;;
      *) die "unknown variant '$variant' (use stock, prepared, init)" ;;
    esac
    if exists "$tag"; then
      log "$tag exists (FORCE=1 to rebuild)"
      continue
    fi
    t0=$SECONDS
    podman build -q $([[ $FORCE == 1 ]] && echo --no-cache) --arch "$arch" --network "$BUILD_NETWORK" --build-arg "BASE=$from" \
      -f "$HERE/Containerfile.$variant" -t "$tag" "$HERE" >"$CACHE/build-$arch-$variant.log" 2>&1 ||
      die "building $tag failed, see $CACHE/build-$arch-$variant.log"
    log "$tag built in $((SECONDS - t0)) s"
  done
}

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap and rootful podman); see tests/containers/README.md"
command -v podman >/dev/null && command -v debootstrap >/dev/null ||
  die "podman/debootstrap missing: run tests/containers/install-host-deps.sh"
mkdir -p "$CACHE"
for arch in $ARCHES; do
  build_arch "$arch"
done
for entry in "${REPLACED[@]}"; do
  tag=${entry%=*} id=${entry##*=}
  if [[ $(podman image inspect --format '{{.Id}}' "$tag") != "$id" ]]; then
    podman rmi "$id" >/dev/null 2>&1 || true
  fi
done

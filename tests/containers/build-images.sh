#!/usr/bin/env bash
# Build the local Debian test device images (DESIGN.md §7); Docker Hub is not reachable, so the root filesystem
# comes from debootstrap and the Debian mirror apt already uses on the host.
#
# Images (SUITE = bookworm | trixie, ARCH = amd64 | arm64):
#   localhost/iotfleet-debian:SUITE-ARCH           "stock device": python3, sudo, openssh-server, user pi with
#                                                  passwordless sudo (what Raspberry Pi OS Lite gives you)
#   localhost/iotfleet-debian:SUITE-ARCH-prepared  + python3-cryptography python3-tomlkit openssl tpm2-tools, and
#                                                  swtpm as the TPM module (device-init: DEVICE_TPM=swtpm)
#   ...-base                                       the imported root filesystem each is built on
# The packages come in with debootstrap (--include): it resolves them on the host, so an emulated arm64 image runs
# no apt under qemu, only the packages' configuration (about 3 min instead of about 8).
#
# Environment:
#   IMAGES="bookworm-amd64 ..."  which images to build (default: every image a test, the demo or a scenario uses;
#                                a -prepared image brings its stock image with it)
#   FORCE=1                      rebuild images that already exist, without podman's layer cache
#                                (reuses the cached rootfs tarball)
#   REFRESH_ROOTFS=1             also re-run debootstrap instead of using build/debootstrap/*.tar
#   DEBIAN_MIRROR=URL            mirror for debootstrap (default: the host's main Debian archive in /etc/apt/sources*)
#   BUILD_NETWORK=host           network for `podman build` RUN steps
# Idempotent: an existing image built from the same recipe (its packages, Containerfile.device and device-init: the
# label iotfleet.recipe; the packages of a cached rootfs tarball in NAME.tar.packages) is skipped unless FORCE=1; one
# built from another recipe is rebuilt. Needs root (debootstrap).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

REPO=localhost/iotfleet-debian
# bookworm amd64: demo, molecule, tests; trixie amd64 + arm64 (today's Raspberry Pi OS 64-bit): the fleet scenario.
IMAGES=${IMAGES:-bookworm-amd64 bookworm-amd64-prepared trixie-amd64 trixie-amd64-prepared trixie-arm64-prepared}
STOCK_PACKAGES=python3,sudo,openssh-server
# debootstrap does not resolve virtual packages: python3-cryptography needs python3-cffi-backend-api-* from
# python3-cffi-backend, named here.
# tpm2-tools is what a Pi with a TPM module needs (iotfleet.aziot.tpm_keys); swtpm stands in for the TPM chip
# (device-init starts it with DEVICE_TPM=swtpm).
PREPARED_PACKAGES=$STOCK_PACKAGES,python3-cryptography,python3-cffi-backend,python3-tomlkit,openssl,tpm2-tools,swtpm
FORCE=${FORCE:-0}
REFRESH_ROOTFS=${REFRESH_ROOTFS:-0}
BUILD_NETWORK=${BUILD_NETWORK:-host}
CACHE=${CACHE:-$ROOT/build/debootstrap}

log() { printf '%s build-images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

# The host's main Debian archive URI (from deb822 .sources or one-line .list files), used for every suite:
# the same mirror serves bookworm and trixie.
detect_mirror() {
  local host_suite f
  host_suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    awk -v suite="$host_suite" '
      function flush() { if (uris != "" && (" " suites " ") ~ (" " suite " ")) { split(uris, u, " "); print u[1]; exit } uris = ""; suites = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/   { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      END { flush() }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -nE "s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+$host_suite[[:space:]].*/\2/p"
}

# Image ids replaced by FORCE=1, removed at the end (children first) so no dangling images pile up.
REPLACED=()
BUILT=()
# exists TAG RECIPE: TAG was built from this recipe (its label iotfleet.recipe); an image built from another recipe
# (other packages, another Containerfile.device or device-init) is replaced as FORCE=1 would.
exists() {
  local tag
  for tag in "${BUILT[@]}"; do [[ $tag == "$1" ]] && return 0; done
  podman image exists "$1" || return 1
  if [[ $FORCE != 1 && $(podman image inspect --format '{{index .Labels "iotfleet.recipe"}}' "$1") == "$2" ]]; then
    return 0
  fi
  REPLACED=("$1=$(podman image inspect --format '{{.Id}}' "$1")" "${REPLACED[@]}")
  return 1
}

recipe() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# build_rootfs_tar NAME SUITE ARCH PACKAGES: debootstrap into build/debootstrap/NAME.tar (cached).
build_rootfs_tar() {
  local name=$1 suite=$2 arch=$3 packages=$4 tar=$CACHE/$1.tar
  if [[ -s $tar && $REFRESH_ROOTFS != 1 && $(cat "$tar.packages" 2>/dev/null) == "$packages" ]]; then
    echo "$tar"
    return
  fi
  local mirror=${DEBIAN_MIRROR:-$(detect_mirror | head -n1)}
  [[ -n $mirror ]] || die "no Debian mirror in /etc/apt/sources*; set DEBIAN_MIRROR=URL"
  local dir=$CACHE/rootfs-$name
  rm -rf "$dir" && mkdir -p "$dir"
  log "debootstrap $suite $arch + $packages from $mirror (amd64 ~30 s, arm64 emulated ~3 min)"
  local t0=$SECONDS
  debootstrap --variant=minbase --arch="$arch" --include="$packages" "$suite" "$dir" "$mirror" \
    >"$CACHE/debootstrap-$name.log" 2>&1 || die "debootstrap $name failed, see $CACHE/debootstrap-$name.log"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  printf '%s' "$packages" >"$tar.packages"
  rm -rf "$dir"
  log "debootstrap $name: $((SECONDS - t0)) s -> $tar"
  echo "$tar"
}

# build_image SUITE ARCH VARIANT: debootstrap (cached) -> SUITE-ARCH[-prepared]-base -> + Containerfile.device.
build_image() {
  local suite=$1 arch=$2 variant=$3 name packages tag base tar t0
  case $variant in
    stock) name=$suite-$arch packages=$STOCK_PACKAGES ;;
    prepared) name=$suite-$arch-prepared packages=$PREPARED_PACKAGES ;;
    *) die "unknown variant '$variant' (use SUITE-ARCH or SUITE-ARCH-prepared)" ;;
  esac
  tag=$REPO:$name base=$REPO:$name-base
  local base_recipe device_recipe
  base_recipe=$(recipe "$suite" "$arch" "$packages")
  device_recipe=$(recipe "$base_recipe" "$(cat "$HERE/Containerfile.device" "$HERE/device-init")")
  if exists "$tag" "$device_recipe"; then
    return
  fi
  if ! exists "$base" "$base_recipe"; then
    tar=$(build_rootfs_tar "$name" "$suite" "$arch" "$packages")
    t0=$SECONDS
    podman import -q --arch "$arch" --change 'CMD ["sleep", "infinity"]' \
      --change "LABEL iotfleet.recipe=$base_recipe" "$tar" "$base" >/dev/null
    log "$base imported in $((SECONDS - t0)) s"
    BUILT+=("$base")
  fi
  t0=$SECONDS
  # shellcheck disable=SC2046
  podman build -q $([[ $FORCE == 1 ]] && echo --no-cache) --arch "$arch" --network "$BUILD_NETWORK" --build-arg "BASE=$base" \
    --label "iotfleet.recipe=$device_recipe" \
    -f "$HERE/Containerfile.device" -t "$tag" "$HERE" >"$CACHE/build-$name.log" 2>&1 ||
    die "building $tag failed, see $CACHE/build-$name.log"
  log "$tag built in $((SECONDS - t0)) s"
  BUILT+=("$tag")
}

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap and rootful podman); see tests/containers/README.md"
command -v podman >/dev/null && command -v debootstrap >/dev/null ||
  die "podman/debootstrap missing: run tests/containers/install-host-deps.sh"
mkdir -p "$CACHE"
for image in $IMAGES; do
  [[ $image =~ ^(bookworm|trixie)-(amd64|arm64)(-prepared)?$ ]] ||
    die "unknown image '$image' (SUITE-ARCH[-prepared], SUITE bookworm|trixie, ARCH amd64|arm64)"
  variant=${BASH_REMATCH[3]#-}
  build_image "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${variant:-stock}"
done
for entry in "${REPLACED[@]}"; do
  tag=${entry%=*} id=${entry##*=}
  if [[ $(podman image inspect --format '{{.Id}}' "$tag") != "$id" ]]; then
    podman rmi "$id" >/dev/null 2>&1 || true
  fi
done

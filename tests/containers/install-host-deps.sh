#!/usr/bin/env bash
# Install what the host needs to build and run the test containers (DESIGN.md §7):
# podman + runc (crun fails on our machines), debootstrap, and qemu-user-static +
# binfmt-support for the emulated arm64 (Raspberry-Pi-like) target, chromium for the fleet report page's
# browser test (tests/report, headless), and swtpm + tpm2-tools for the software TPMs of the TPM attestation tests
# (tests/support/swtpm.py).
# Idempotent and quiet: only calls apt when something is missing. Needs root on Debian 12.
set -euo pipefail

PACKAGES=(podman runc containernetworking-plugins iptables debootstrap qemu-user-static binfmt-support uidmap fuse-overlayfs slirp4netns chromium swtpm tpm2-tools)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

# Nothing to do (every package, the arm64 handler enabled with its C flag): no root needed, so that `make
# integration` or `make sdk` (which run this first) work as any user on a prepared machine.
handler=/proc/sys/fs/binfmt_misc/qemu-aarch64
if ((${#missing[@]} == 0)) && [[ -e $handler ]] && grep -qx enabled "$handler" \
  && [[ $(sed -n 's/^flags: //p' "$handler") == *C* ]]; then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-host-deps.sh: must run as root (apt-get, binfmt_misc) to install ${missing[*]:-the arm64 handler}; try: sudo $0" >&2
  exit 1
fi

if ((${#missing[@]})); then
  echo "install-host-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# arm64 emulation: binfmt_misc must be mounted and qemu-aarch64 registered.
if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  update-binfmts --enable qemu-aarch64
fi
if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; then
  echo "install-host-deps.sh: qemu-aarch64 binfmt handler is not enabled" >&2
  exit 1
fi
# The arm64 devices are reached as real Pis (SSH as pi, then sudo): a setuid binary under emulation only gets its
# owner's rights when the handler has the C (credentials) flag, which Debian's registration lacks. Re-register the
# same handler with it; otherwise sudo says "effective uid is not 0".
flags=$(sed -n 's/^flags: //p' "$handler")
if [[ $flags != *C* ]]; then
  interpreter=$(sed -n 's/^interpreter //p' "$handler")
  magic=$(sed -n 's/^magic //p' "$handler" | sed 's/../\\x&/g')
  mask=$(sed -n 's/^mask //p' "$handler" | sed 's/../\\x&/g')
  offset=$(sed -n 's/^offset //p' "$handler")
  echo -1 > "$handler"
  printf ':qemu-aarch64:M:%s:%s:%s:%s:%sOC\n' "$offset" "$magic" "$mask" "$interpreter" "$flags" \
    > /proc/sys/fs/binfmt_misc/register
  echo "install-host-deps.sh: qemu-aarch64 re-registered with flags $(sed -n 's/^flags: //p' "$handler")"
fi

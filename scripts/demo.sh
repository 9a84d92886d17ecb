#!/usr/bin/env bash
# `make demo`: provision a small container fleet against the local DPS emulator, end to end.
#
#   scripts/demo.sh          build what is missing, start one container per line of inventory/demo/hosts.yml
#                            (Debian 12 and 13 devices that Ansible reaches as real Pis: SSH as `pi` on a loopback
#                            port, sudo to root), start the emulator, run playbooks/provision.yml, print the fleet
#                            table, run provision.yml again to show changed=0, then clean up
#   DEMO_KEEP=1 scripts/demo.sh   keep the fleet and the emulator running afterwards (try fleet_status.yml,
#                            reissue.yml -l pi-demo-02, or add pi-demo-04 to inventory/demo/hosts.yml and run again)
#   scripts/demo.sh clean    stop the emulator and remove the containers (the lab CA in build/demo/pki stays)
#
# Needs root (podman, image builds) and the repo's .venv (`make venv`). Safe to re-run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/tests/containers/containers.conf}
export ANSIBLE_CONFIG=$ROOT/ansible.cfg
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-0}
export IOTFLEET_DEMO_DIR=${IOTFLEET_DEMO_DIR:-$ROOT/build/demo}
DEMO_DIR=$IOTFLEET_DEMO_DIR
BIN=$ROOT/.venv/bin
INVENTORY=$ROOT/inventory/demo
HOSTS=$INVENTORY/hosts.yml
DEVICES=(--hosts "$HOSTS")
EMULATOR=("$BIN/dps-emulator")
ID_SCOPE=0ne0000demo   # must match inventory/demo/group_vars/pis.yml
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

stop_emulator() {
  local pid
  pid=$(cat "$DEMO_DIR/emulator.pid" 2>/dev/null || true)
  # Only our own emulator: the recorded pid, if it still is a dps_emulator process.
  if [[ -n $pid ]] && grep -qE 'dps[-_]emulator' "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$DEMO_DIR/emulator.pid"
}

clean() {
  say "Cleaning up: the emulator and the device containers of $HOSTS"
  stop_emulator
  "$BIN/python" -m tools.device_containers down "${DEVICES[@]}" || true
  # The emulator's device list and the devices' host keys go with the devices; the lab CA is kept for the next run.
  rm -rf "$DEMO_DIR/dps" "$DEMO_DIR/ssh/known_hosts"
}

# Sum of changed= over the PLAY RECAP lines of an ansible-playbook log; fails when a host failed.
recap_changed() {
  awk '/^PLAY RECAP/ {r=1; next} r && /changed=/ {
         for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "changed") c += kv[2];
                                     if (kv[1] == "failed" || kv[1] == "unreachable") f += kv[2] } }
       END { if (f > 0) exit 1; print c + 0 }' "$1"
}

[[ ${1:-run} == clean ]] && { clean; exit 0; }
[[ ${1:-run} == run ]] || die "usage: $0 [run|clean]"
[[ $(id -u) -eq 0 ]] || die "needs root (podman, debootstrap): sudo $0"
[[ -x $BIN/ansible-playbook ]] || die "no $BIN/ansible-playbook: run 'make venv' first"

if [[ ${DEMO_KEEP:-0} != 1 ]]; then
  trap 'clean; echo "(DEMO_KEEP=1 keeps the fleet running)"' EXIT
fi
mkdir -p "$DEMO_DIR"
START=$(date +%s)

say "Host packages and the device images the inventory names (skipped when present)"
tests/containers/install-host-deps.sh
IMAGES=$("$BIN/python" -m tools.device_containers images "${DEVICES[@]}") tests/containers/build-images.sh

say "Lab CA on the controller (playbooks/ca.yml)"
"$BIN/ansible-playbook" -i "$INVENTORY" playbooks/ca.yml | sed -n '/Show what to upload/,/^$/p'

# The devices first: podman's bridge has no address on the host until a container runs on it, and the emulator
# listens there (on the bridge, not on all interfaces) so that only the containers reach it.
say "Device containers: SSH as pi on 127.0.0.1, sudo to root (tools/device_containers.py)"
"$BIN/python" -m tools.device_containers up "${DEVICES[@]}" --ssh-dir "$DEMO_DIR/ssh"

say "Local DPS emulator on the podman bridge: no enrollment yet, the verified lab root, two linked hubs"
stop_emulator
# What Azure keeps in Resource Manager, not in the DPS service API: the uploaded and verified root CA, the linked
# hubs, the shared access policy (a key made for this run). The enrollment groups come from provision.yml.
( umask 077 && head -c 32 /dev/urandom | base64 > "$DEMO_DIR/dps-service-policy.key" )
cat > "$DEMO_DIR/enrollments.yml" <<YAML
---
id_scope: $ID_SCOPE
linked_hubs: [demo-hub-east.azure-devices.net, demo-hub-west.azure-devices.net]
defaults: {assignment_delay: 1.0, retry_after: 1}
shared_access_policies:
  - name: provisioningserviceowner
    primary_key: $(cat "$DEMO_DIR/dps-service-policy.key")
    rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite]
certificates:
  - {name: demo-root, certificate: $DEMO_DIR/pki/root-ca.cert.pem, verified: true}
YAML
chmod 0600 "$DEMO_DIR/enrollments.yml"
GATEWAY=$(podman network inspect podman | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)[0]["subnets"][0]["gateway"])')
setsid "${EMULATOR[@]}" serve --config "$DEMO_DIR/enrollments.yml" --state-dir "$DEMO_DIR/dps" \
  --host "$GATEWAY" --quiet > "$DEMO_DIR/emulator.log" 2>&1 < /dev/null &
echo $! > "$DEMO_DIR/emulator.pid"
"${EMULATOR[@]}" wait --state-dir "$DEMO_DIR/dps" --timeout 30 --url \
  || { cat "$DEMO_DIR/emulator.log" >&2; die "the emulator did not start"; }

say "Provisioning: ansible-playbook -i inventory/demo playbooks/provision.yml (enrollment groups, then the devices)"
T0=$(date +%s)
"$BIN/ansible-playbook" -i "$INVENTORY" playbooks/provision.yml | tee "$DEMO_DIR/provision-1.log" | grep -E '^(PLAY RECAP|pi-demo)' || true
CHANGED=$(recap_changed "$DEMO_DIR/provision-1.log") || die "provisioning failed: see $DEMO_DIR/provision-1.log"
echo "first run: $(($(date +%s) - T0)) s, $CHANGED changes"

say "Fleet status from DPS (playbooks/fleet_status.yml)"
"$BIN/ansible-playbook" -i "$INVENTORY" playbooks/fleet_status.yml -e fleet_status_file="$DEMO_DIR/fleet-status.txt" \
  > "$DEMO_DIR/fleet-status.log" || die "fleet_status.yml failed: see $DEMO_DIR/fleet-status.log"
cat "$DEMO_DIR/fleet-status.txt"

say "Running provision.yml again: nothing to do"
T0=$(date +%s)
"$BIN/ansible-playbook" -i "$INVENTORY" playbooks/provision.yml | tee "$DEMO_DIR/provision-2.log" | grep -E '^(PLAY RECAP|pi-demo)' || true
CHANGED=$(recap_changed "$DEMO_DIR/provision-2.log") || die "second run failed: see $DEMO_DIR/provision-2.log"
[[ $CHANGED -eq 0 ]] || die "second run changed $CHANGED things, expected changed=0: see $DEMO_DIR/provision-2.log"
echo "second run: $(($(date +%s) - T0)) s, changed=0 on every device"

say "The emulator's IoT Hub device list, with the twin tags each enrollment group gave: dps-emulator devices"
device_list() {
  "${EMULATOR[@]}" devices --state-dir "$DEMO_DIR/dps" | "$BIN/python" -c 'import json, sys
for d in json.load(sys.stdin):
    tags = ",".join(f"{k}={v}" for k, v in sorted((d.get("tags") or {}).items()))
    print("%-12s %-33s %-28s %-30s registrations: %s" % (d["deviceId"], d["assignedHub"], d["enrollment"], tags, d["registrationCount"]))'
}
device_list

# Block one device the documented way (a disabled individual enrollment + its registration record deleted), show
# DPS refusing it, and undo it.
say "Revoking pi-demo-02: ansible-playbook -i inventory/demo playbooks/revoke.yml -l pi-demo-02"
"$BIN/ansible-playbook" -i "$INVENTORY" playbooks/revoke.yml -l pi-demo-02 > "$DEMO_DIR/revoke.log" \
  || die "revoke.yml failed: see $DEMO_DIR/revoke.log"
recap_changed "$DEMO_DIR/revoke.log" > /dev/null
"$BIN/ansible-playbook" -i "$INVENTORY" playbooks/provision.yml -l pi-demo-02 > "$DEMO_DIR/revoked-attempt.log" \
  && die "pi-demo-02 registered although it is revoked: see $DEMO_DIR/revoked-attempt.log"
grep -o 'pi-demo-02: enrollment is disabled in DPS[^"]*' "$DEMO_DIR/revoked-attempt.log" | head -n1 \
  || die "pi-demo-02's registration failed for another reason: see $DEMO_DIR/revoked-attempt.log"

say "Reinstating pi-demo-02: ansible-playbook -i inventory/demo playbooks/reinstate.yml -l pi-demo-02"
"$BIN/ansible-playbook" -i "$INVENTORY" playbooks/reinstate.yml -l pi-demo-02 > "$DEMO_DIR/reinstate.log" \
  || die "reinstate.yml failed: see $DEMO_DIR/reinstate.log"
device_list

say "Demo done in $(($(date +%s) - START)) s"
if [[ ${DEMO_KEEP:-0} == 1 ]]; then
  echo "The fleet and the emulator keep running. Try:"
  echo "  IOTFLEET_DEMO_DIR=$DEMO_DIR $BIN/ansible-playbook -i inventory/demo playbooks/reissue.yml -l pi-demo-02"
  echo "Clean up with: $0 clean"
fi

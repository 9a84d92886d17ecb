#!/usr/bin/env bash
# `make demo`: provision a small container fleet against the local DPS and IoT Hub emulator, end to end.
#
#   scripts/demo.sh          build what is missing, start one container per line of inventory/demo/hosts.yml
#                            (Debian 12 and 13 devices that Ansible reaches as real Pis: SSH as `pi` on a loopback
#                            port, sudo to root), start the emulator, run playbooks/provision.yml (enrollment groups,
#                            devices, the hub's configurations per cohort and ring), print which configuration each
#                            device gets and the fleet table, move a device to the other cohort in a copy of the
#                            inventory and run again (its tags and configuration follow), revoke it (disabled in DPS
#                            and in the hub) and reinstate it, run provision.yml again to show changed=0, clean up
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
HUB=hub-demo.azure-devices.net   # must match inventory/demo/group_vars/all.yml (iothub_deployment_connection_string)
MOVED=pi-demo-02       # the device moved from plant-3 to lab, then revoked and reinstated
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
  rm -rf "$DEMO_DIR/dps" "$DEMO_DIR/ssh/known_hosts" "$DEMO_DIR/inventory-moved"
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

say "Local DPS and IoT Hub emulator on the podman bridge: no enrollment yet, the verified lab root, one linked hub"
stop_emulator
# What Azure keeps in Resource Manager, not in the service APIs: the uploaded and verified root CA, the linked hub,
# the DPS and IoT Hub shared access policies (keys made for this run). The enrollment groups and the hub's
# configurations come from provision.yml.
( umask 077 && head -c 32 /dev/urandom | base64 > "$DEMO_DIR/dps-service-policy.key" \
  && head -c 32 /dev/urandom | base64 > "$DEMO_DIR/iothub-policy.key" )
cat > "$DEMO_DIR/enrollments.yml" <<YAML
---
id_scope: $ID_SCOPE
linked_hubs: [$HUB]
defaults: {assignment_delay: 1.0, retry_after: 1}
shared_access_policies:
  - name: provisioningserviceowner
    primary_key: $(cat "$DEMO_DIR/dps-service-policy.key")
    rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite]
certificates:
  - {name: demo-root, certificate: $DEMO_DIR/pki/root-ca.cert.pem, verified: true}
iot_hub:
  shared_access_policies:
    - name: registryReadWrite
      primary_key: $(cat "$DEMO_DIR/iothub-policy.key")
      rights: [RegistryRead, RegistryWrite]
YAML
chmod 0600 "$DEMO_DIR/enrollments.yml"
GATEWAY=$(podman network inspect podman | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)[0]["subnets"][0]["gateway"])')
setsid "${EMULATOR[@]}" serve --config "$DEMO_DIR/enrollments.yml" --state-dir "$DEMO_DIR/dps" \
  --host "$GATEWAY" --quiet > "$DEMO_DIR/emulator.log" 2>&1 < /dev/null &
echo $! > "$DEMO_DIR/emulator.pid"
"${EMULATOR[@]}" wait --state-dir "$DEMO_DIR/dps" --timeout 30 --url \
  || { cat "$DEMO_DIR/emulator.log" >&2; die "the emulator did not start"; }

# Which configurations IoT Hub applies to each device, as the emulator evaluates them now (IoT Hub: within 5
# minutes), next to the twin tags and hub status each device has: the admin endpoint and the device list.
hub_view() {
  local endpoint
  endpoint=$("${EMULATOR[@]}" wait --state-dir "$DEMO_DIR/dps" --timeout 5)
  "${EMULATOR[@]}" devices --state-dir "$DEMO_DIR/dps" | "$BIN/python" -c '
import json, ssl, sys, urllib.request
endpoint, hub, devices = json.loads(sys.argv[1]), sys.argv[2], json.load(sys.stdin)
context = ssl.create_default_context(cafile=endpoint["ca_cert"])
url = "https://%s:%s/_emulator/hubs/%s/configurations-applied" % (endpoint["host"], endpoint["port"], hub)
with urllib.request.urlopen(url, context=context, timeout=10) as answer:
    applied = json.load(answer)
print("%-12s %-9s %-28s %s" % ("DEVICE", "HUB", "TWIN TAGS", "CONFIGURATIONS APPLIED"))
for device in sorted(devices, key=lambda d: d["deviceId"]):
    tags = ",".join(f"{k}={v}" for k, v in sorted((device.get("tags") or {}).items()))
    print("%-12s %-9s %-28s %s" % (device["deviceId"], device.get("status", "?"), tags,
                                   ", ".join(applied.get(device["deviceId"], [])) or "-"))' "$endpoint" "$HUB"
}

# ansible-playbook on an inventory, its log kept; fails the demo when a host failed. Prints the run's changes.
play() {
  local name=$1 inventory=$2 log=$DEMO_DIR/$3.log; shift 3
  "$BIN/ansible-playbook" -i "$inventory" "playbooks/$name" "$@" > "$log" || die "$name failed: see $log"
  recap_changed "$log" || die "$name failed: see $log"
}

say "Provisioning: ansible-playbook -i inventory/demo playbooks/provision.yml (enrollment groups, devices, hub configurations)"
T0=$(date +%s)
"$BIN/ansible-playbook" -i "$INVENTORY" playbooks/provision.yml | tee "$DEMO_DIR/provision-1.log" | grep -E '^(PLAY RECAP|pi-demo)' || true
CHANGED=$(recap_changed "$DEMO_DIR/provision-1.log") || die "provisioning failed: see $DEMO_DIR/provision-1.log"
echo "first run: $(($(date +%s) - T0)) s, $CHANGED changes"

say "Which configuration each device gets in $HUB (plant-3: telemetry-plant-3; lab, ring canary: telemetry-canary wins at priority 20)"
hub_view

say "Fleet status from DPS and IoT Hub (playbooks/fleet_status.yml)"
"$BIN/ansible-playbook" -i "$INVENTORY" playbooks/fleet_status.yml -e fleet_status_file="$DEMO_DIR/fleet-status.txt" \
  > "$DEMO_DIR/fleet-status.log" || die "fleet_status.yml failed: see $DEMO_DIR/fleet-status.log"
cat "$DEMO_DIR/fleet-status.txt"

# The inventory is the truth: move a device to the other cohort in a copy of it, run provision.yml on the copy. The
# device gets a certificate from its new cohort's CA (DPS picks the enrollment group by it) and registers through the
# lab group; IoT Hub keeps a twin's tags after the first registration, so the iothub_deployment role sets them.
say "Moving $MOVED from plant-3 to lab in a copy of the inventory ($DEMO_DIR/inventory-moved) and running provision.yml"
rm -rf "$DEMO_DIR/inventory-moved" && cp -r "$INVENTORY" "$DEMO_DIR/inventory-moved"
MOVED_INVENTORY=$DEMO_DIR/inventory-moved
"$BIN/python" - "$MOVED_INVENTORY/hosts.yml" "$MOVED" <<'PY'
import sys, yaml
path, host = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as handle:
    inventory = yaml.safe_load(handle)
cohorts = inventory["pis"]["children"]
cohorts["lab"]["hosts"][host] = cohorts["plant3"]["hosts"].pop(host)
with open(path, "w", encoding="utf-8") as handle:
    yaml.safe_dump(inventory, handle, sort_keys=False)
PY
T0=$(date +%s)
CHANGED=$(play provision.yml "$MOVED_INVENTORY" provision-moved)
echo "moved: $(($(date +%s) - T0)) s, $CHANGED changes"
hub_view
hub_view | grep -E "^$MOVED .*ring=canary,site=lab .*telemetry-canary" > /dev/null \
  || die "$MOVED did not get the lab cohort's tags and the canary configuration: see $DEMO_DIR/provision-moved.log"

# Block the device the documented way: disabled in its IoT hub (its connection ends now), a disabled individual
# enrollment and its registration record deleted in DPS (its next registration is refused); then undo it.
say "Revoking $MOVED: ansible-playbook -i inventory-moved playbooks/revoke.yml -l $MOVED"
play revoke.yml "$MOVED_INVENTORY" revoke -l "$MOVED" > /dev/null
hub_view
hub_view | grep -E "^$MOVED +disabled " > /dev/null || die "$MOVED is not disabled in $HUB: see $DEMO_DIR/revoke.log"
"$BIN/ansible-playbook" -i "$MOVED_INVENTORY" playbooks/provision.yml -l "$MOVED" > "$DEMO_DIR/revoked-attempt.log" \
  && die "$MOVED registered although it is revoked: see $DEMO_DIR/revoked-attempt.log"
grep -o "$MOVED: enrollment is disabled in DPS[^\"]*" "$DEMO_DIR/revoked-attempt.log" | head -n1 \
  || die "$MOVED's registration failed for another reason: see $DEMO_DIR/revoked-attempt.log"

say "Reinstating $MOVED: ansible-playbook -i inventory-moved playbooks/reinstate.yml -l $MOVED"
play reinstate.yml "$MOVED_INVENTORY" reinstate -l "$MOVED" > /dev/null
hub_view

say "Running provision.yml again: nothing to do"
T0=$(date +%s)
CHANGED=$(play provision.yml "$MOVED_INVENTORY" provision-again)
grep -E '^(PLAY RECAP|pi-demo|localhost)' "$DEMO_DIR/provision-again.log" || true
[[ $CHANGED -eq 0 ]] || die "the re-run changed $CHANGED things, expected changed=0: see $DEMO_DIR/provision-again.log"
echo "re-run: $(($(date +%s) - T0)) s, changed=0 on every device and in the hub"

say "Demo done in $(($(date +%s) - START)) s"
if [[ ${DEMO_KEEP:-0} == 1 ]]; then
  echo "The fleet and the emulator keep running. Try:"
  echo "  IOTFLEET_DEMO_DIR=$DEMO_DIR $BIN/ansible-playbook -i $MOVED_INVENTORY playbooks/fleet_status.yml"
  echo "  IOTFLEET_DEMO_DIR=$DEMO_DIR $BIN/ansible-playbook -i inventory/demo playbooks/reissue.yml -l pi-demo-01"
  echo "Clean up with: $0 clean"
fi

#!/usr/bin/env bash
# Method A of the benchmark against container devices: the manual guides' per-device openssl steps, scripted
# as a serial shell loop, with the key made on the device as the guides say.
#   method_a_remote.sh <ec-p256|rsa-4096> <ca-dir> <podman|ssh:SSH_CONFIG> <work-dir> <device-root> <device>...
# `podman`: commands run with `podman exec` (container name = registration id). `ssh:SSH_CONFIG`: they run over
# ssh as pi with sudo, as a user's script reaches a Pi (SSH_CONFIG names each device; ControlPersist keeps one
# connection per device).
# Per device: one remote command makes the key (umask 077, 0700 directory) and prints the CSR with CN =
# registration id; the controller signs it with the intermediate CA (openssl x509 -req); a second one writes the
# full chain (leaf, intermediate, root) and the leaf. A device whose full chain already exists is skipped (one
# remote `test -s`), as a careful script would. The CA key stays on the controller; the device key stays on the
# device. Prints "changed=<devices done>" last.
set -euo pipefail
key_type=$1 ca_dir=$2 transport=$3 work_dir=$4 device_root=$5
shift 5
case "$key_type" in
  ec-p256) genpkey_args="-algorithm EC -pkeyopt ec_paramgen_curve:P-256" ;;
  rsa-4096) genpkey_args="-algorithm RSA -pkeyopt rsa_keygen_bits:4096" ;;
  *) echo "method_a_remote.sh: unsupported key type $key_type (use ec-p256 or rsa-4096)" >&2; exit 2 ;;
esac
# on DEVICE COMMAND...: run COMMAND as root on the device, stdin passed through.
case "$transport" in
  podman) on() { local id=$1; shift; podman exec -i "$id" "$@"; } ;;
  ssh:*) ssh_config=${transport#ssh:}; on() { local id=$1; shift; ssh -F "$ssh_config" "$id" sudo "${@@Q}"; } ;;
  *) echo "method_a_remote.sh: transport must be podman or ssh:SSH_CONFIG, got $transport" >&2; exit 2 ;;
esac
ca_cert=$ca_dir/intermediate-ca.cert.pem ca_key=$ca_dir/intermediate-ca.key.pem root_cert=$ca_dir/root-ca.cert.pem
certs=$device_root/var/aziot/certs secrets=$device_root/var/aziot/secrets
mkdir -p "$work_dir"
changed=0
for id in "$@"; do
  on "$id" test -s "$certs/device-id.full-chain.cert.pem" </dev/null && continue
  # shellcheck disable=SC2086  # genpkey_args is a fixed word list
  on "$id" sh -c "set -e; mkdir -p $certs; mkdir -p -m 0700 $secrets
    (umask 077 && openssl genpkey $genpkey_args -out $secrets/device-id.key.pem)
    openssl req -new -key $secrets/device-id.key.pem -subj /CN=$id" </dev/null > "$work_dir/$id.csr.pem"
  openssl x509 -req -in "$work_dir/$id.csr.pem" -CA "$ca_cert" -CAkey "$ca_key" -CAcreateserial \
    -CAserial "$work_dir/ca.srl" -days 365 -sha256 -out "$work_dir/$id.cert.pem" 2>/dev/null
  cat "$work_dir/$id.cert.pem" "$ca_cert" "$root_cert" | on "$id" sh -c \
    "set -e; cat > $certs/device-id.full-chain.cert.pem; openssl x509 -in $certs/device-id.full-chain.cert.pem \
      -out $certs/device-id.cert.pem"
  changed=$((changed + 1))
done
echo "changed=$changed"

#!/usr/bin/env bash
# Method A of the benchmark: the manual guides' per-device openssl steps, scripted as a serial shell loop.
#   method_a_openssl.sh <ec-p256|rsa-4096> <ca-dir> <devices-dir> <registration-id>...
# Per device: private key (openssl genpkey), CSR with CN = registration id (openssl req -subj),
# signing by the intermediate CA (openssl x509 -req), full chain = cat leaf intermediate root.
# A device whose full chain already exists is skipped (what a careful script would do on a re-run).
# Prints "changed=<devices done>" last.
set -euo pipefail
key_type=$1 ca_dir=$2 devices_dir=$3
shift 3
case "$key_type" in
  ec-p256) genpkey_args=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa-4096) genpkey_args=(-algorithm RSA -pkeyopt rsa_keygen_bits:4096) ;;
  *) echo "method_a_openssl.sh: unsupported key type $key_type (use ec-p256 or rsa-4096)" >&2; exit 2 ;;
esac
ca_cert=$ca_dir/intermediate-ca.cert.pem ca_key=$ca_dir/intermediate-ca.key.pem root_cert=$ca_dir/root-ca.cert.pem
changed=0
for id in "$@"; do
  certs=$devices_dir/$id/var/aziot/certs secrets=$devices_dir/$id/var/aziot/secrets
  [ -s "$certs/device-id.full-chain.cert.pem" ] && continue
  mkdir -p "$certs" && mkdir -p -m 0700 "$secrets"
  (umask 077 && openssl genpkey "${genpkey_args[@]}" -out "$secrets/device-id.key.pem")
  openssl req -new -key "$secrets/device-id.key.pem" -subj "/CN=$id" -out "$certs/device-id.csr.pem"
  openssl x509 -req -in "$certs/device-id.csr.pem" -CA "$ca_cert" -CAkey "$ca_key" -CAcreateserial \
    -CAserial "$devices_dir/ca.srl" -days 365 -sha256 -out "$certs/device-id.cert.pem" 2>/dev/null
  cat "$certs/device-id.cert.pem" "$ca_cert" "$root_cert" > "$certs/device-id.full-chain.cert.pem"
  changed=$((changed + 1))
done
echo "changed=$changed"

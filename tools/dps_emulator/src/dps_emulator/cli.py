"""Command line: `dps-emulator serve|wait|devices ...` or `python -m dps_emulator ...` (see docs/dps_emulator.md)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from OpenSSL import SSL

from .app import Emulator
from .config import ConfigError, load_config
from .files import write_json_atomic
from .pki import ensure_server_identity
from .state import StateError, device_list, load_state
from .transport import Server, make_context

ENDPOINT_FILE = "endpoint.json"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    endpoint_path = state_dir / ENDPOINT_FILE
    endpoint_path.unlink(missing_ok=True)
    if bool(args.cert) != bool(args.key):
        raise ConfigError("--cert and --key must be given together")
    if args.cert:
        cert_file, key_file = Path(args.cert).resolve(), Path(args.key).resolve()
        ca_file = Path(args.ca_cert).resolve() if args.ca_cert else cert_file
    else:
        hosts = ["localhost", "127.0.0.1"]
        if args.host not in ("0.0.0.0", "::", ""):
            hosts.append(args.host)
        hosts += args.san
        # clients that dial a linked hub's name (the Node SDK dials the connection string's HostName) verify it
        hosts += [hub for hub in config.linked_hubs if hub not in hosts]
        cert_file, key_file, ca_file = ensure_server_identity(state_dir, hosts)
    try:
        context = make_context(str(cert_file), str(key_file))
    except SSL.Error as exc:
        raise ConfigError(f"cannot load server certificate {cert_file} / key {key_file}: {exc}") from None
    emulator = Emulator(config, state_dir)
    try:
        server = Server(emulator, context, args.host, args.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None

    def _stop(_signum: int, _frame: object) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    url = f"https://{_url_host(args.host)}:{server.port}"
    write_json_atomic(
        endpoint_path,
        {"host": args.host, "port": server.port, "url": url, "ca_cert": str(ca_file), "pid": os.getpid()},
    )
    logging.getLogger("dps_emulator").info(
        "DPS emulator for id scope %s listening on %s (CA %s)", config.id_scope, url, ca_file
    )
    try:
        server.serve_forever()
    finally:
        endpoint_path.unlink(missing_ok=True)
    return 0


def devices(args: argparse.Namespace) -> int:
    records, hub_devices = load_state(Path(args.state_dir))
    print(json.dumps(device_list(hub_devices) if not args.all else records, indent=2))
    return 0


def wait(args: argparse.Namespace) -> int:
    """Wait until a (live) emulator wrote endpoint.json; print it (for shell scripts)."""
    path = Path(args.state_dir) / ENDPOINT_FILE
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            endpoint = json.loads(path.read_text(encoding="utf-8"))
            os.kill(int(endpoint["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
            continue
        print(endpoint["url"] if args.url else json.dumps(endpoint, indent=2))
        return 0
    print(f"dps_emulator: error: no running emulator wrote {path} within {args.timeout} s", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dps-emulator", description="Local Azure DPS emulator.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the emulator")
    run.add_argument("--config", required=True, help="enrollment file (YAML)")
    run.add_argument("--state-dir", required=True, help="where registrations, certificates and endpoint.json live")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=0, help="port (default 0: pick a free one)")
    run.add_argument("--cert", help="server certificate chain PEM (default: generate one)")
    run.add_argument("--key", help="server private key PEM")
    run.add_argument("--ca-cert", help="CA PEM to advertise in endpoint.json when --cert is given")
    run.add_argument("--san", action="append", default=[], help="extra DNS name or IP for the generated server cert")
    run.add_argument("--quiet", action="store_true", help="log only warnings")
    run.set_defaults(func=serve)
    listing = commands.add_parser("devices", help="print the registered devices (the IoT Hub device list) as JSON")
    listing.add_argument("--state-dir", required=True)
    listing.add_argument("--all", action="store_true", help="print every registration record instead")
    listing.set_defaults(func=devices)
    waiting = commands.add_parser("wait", help="wait for a starting emulator's endpoint.json and print it")
    waiting.add_argument("--state-dir", required=True)
    waiting.add_argument("--timeout", type=float, default=20.0, help="seconds (default 20)")
    waiting.add_argument("--url", action="store_true", help="print only the URL")
    waiting.set_defaults(func=wait)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    threading.excepthook = lambda hook_args: logging.getLogger("dps_emulator").error(
        "thread %s failed: %s", hook_args.thread.name if hook_args.thread else "?", hook_args.exc_value
    )
    try:
        return args.func(args)
    except (ConfigError, StateError) as exc:
        print(f"dps_emulator: error: {exc}", file=sys.stderr)
        return 2

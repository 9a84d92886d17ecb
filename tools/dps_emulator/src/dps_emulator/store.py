"""The enrollment store both API surfaces share: records by kind and case-insensitive id, under one lock,
persisted atomically in the state dir, seeded from the config.

Config seeds and API-written records combine like this at every start: a seed whose id the state dir does not
hold is created; a stored record that was seeded from the very same config entry is left alone (so API edits of
it survive restarts); a stored record whose config entry is new or changed since it was seeded is replaced by the
config's version. Records created through the API and absent from the config are never touched by the config.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from .config import Config
from .enrollments import (
    GROUP,
    ID_FIELD,
    INDIVIDUAL,
    KINDS,
    Context,
    Enrollment,
    ValidationError,
    compile_record,
    normalize,
)
from .files import write_json_atomic
from .pki import iso_utc, utcnow
from .state import StateError
from .wire import (
    ERROR_CONFLICT,
    ERROR_ENROLLMENT_GROUP_NOT_FOUND,
    ERROR_ENROLLMENT_NOT_FOUND,
    ERROR_PRECONDITION_FAILED,
    ApiError,
    bad_request,
)

LOG = logging.getLogger("dps_emulator")
ENROLLMENTS_FILE = "enrollments.json"
BULK_MODES = ("create", "update", "updateIfMatchETag", "delete")
BULK_MAX_ITEMS = 10
NOUN = {INDIVIDUAL: "individual enrollment", GROUP: "enrollment group"}
NOT_FOUND = {INDIVIDUAL: ERROR_ENROLLMENT_NOT_FOUND, GROUP: ERROR_ENROLLMENT_GROUP_NOT_FOUND}


def new_etag() -> str:
    """Opaque, shaped like DPS's (base64 of a quoted storage tag); never reused."""
    return base64.b64encode(f'"{uuid.uuid4()}"'.encode("ascii")).decode("ascii")


def _unquote_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def etag_matches(if_match: str, etag: str | None) -> bool:
    """If-Match against a stored etag: `*`, or the etag, quoted or not (clients differ: the C# SDK quotes the etag,
    the Node IoT Hub SDK quotes `*` too)."""
    if _unquote_etag(if_match) == "*":
        return True
    if etag is None:
        return False
    wanted = _unquote_etag(etag)
    return any(_unquote_etag(candidate) == wanted for candidate in if_match.split(","))


def not_found(kind: str, identifier: str) -> ApiError:
    """The 404 DPS answers for a missing record: errorCode 404201 for an individual enrollment, 404204 for a group."""
    return ApiError(404, NOT_FOUND[kind], f"{NOUN[kind].capitalize()} '{identifier}' not found.")


def check_if_match(if_match: str | None, etag: str | None, what: str) -> None:
    if if_match is not None and not etag_matches(if_match, etag):
        raise ApiError(
            412,
            ERROR_PRECONDITION_FAILED,
            f"Precondition failed: If-Match {if_match!r} does not match the current etag of {what}; GET it again.",
        )


@dataclass
class _Compiled:
    """The records in matching form, indexed the way devices look them up."""

    groups: list[Enrollment] = field(default_factory=list)
    individuals: dict[str, Enrollment] = field(default_factory=dict)  # lower-case registration id
    by_thumbprint: dict[str, Enrollment] = field(default_factory=dict)  # X.509 client certificate thumbprints


class EnrollmentStore:
    def __init__(self, state_dir: Path, config: Config) -> None:
        self.path = state_dir / ENROLLMENTS_FILE
        self.context: Context = config.context()
        self.verified: list[x509.Certificate] = config.verified_cas()
        self.lock = threading.RLock()
        self.records: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self._compiled: _Compiled | None = None
        self._load()
        changed = False
        for seed in config.seeds:
            identifier = seed.record[ID_FIELD[seed.kind]]
            digest = seed.digest
            stored = self.records[seed.kind].get(identifier.lower())
            if stored is not None and stored.get("seed") == digest:
                continue
            if stored is not None:
                LOG.warning(
                    "%s '%s': the config entry is new or changed; it replaces the stored record",
                    NOUN[seed.kind],
                    identifier,
                )
            else:
                LOG.info("seeded %s '%s' from the config", NOUN[seed.kind], identifier)
            self._write(seed.kind, copy.deepcopy(seed.record), stored, digest)
            changed = True
        if changed or not self.path.exists():
            self._save()

    # --- persistence ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}; move it away to start afresh") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(kind), dict) for kind in KINDS):
            raise StateError(f"state file {self.path} lacks enrollments/enrollmentGroups; move it away to start afresh")
        for kind in KINDS:
            self.records[kind] = {key.lower(): entry for key, entry in data[kind].items()}

    def _save(self) -> None:
        write_json_atomic(self.path, {"version": 1, **self.records})  # 0600: the records hold keys

    def _write(self, kind: str, record: dict[str, Any], stored: dict[str, Any] | None, seed: str | None) -> None:
        now = iso_utc(utcnow())
        if stored is not None:
            record[ID_FIELD[kind]] = stored["record"][ID_FIELD[kind]]  # the id keeps the spelling it was created with
            record["createdDateTimeUtc"] = stored["record"].get("createdDateTimeUtc", now)
        else:
            record["createdDateTimeUtc"] = now
        record["lastUpdatedDateTimeUtc"] = now
        record["etag"] = new_etag()
        self.records[kind][record[ID_FIELD[kind]].lower()] = {"record": record, "seed": seed}
        self._compiled = None

    # --- reads ---------------------------------------------------------------------------------------------
    def get(self, kind: str, identifier: str) -> dict[str, Any] | None:
        with self.lock:
            stored = self.records[kind].get(identifier.lower())
            return copy.deepcopy(stored["record"]) if stored else None

    def require(self, kind: str, identifier: str) -> dict[str, Any]:
        record = self.get(kind, identifier)
        if record is None:
            raise not_found(kind, identifier)
        return record

    def list(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(self.records[kind][key]["record"]) for key in sorted(self.records[kind])]

    def _compile(self) -> _Compiled:
        with self.lock:
            if self._compiled is None:
                compiled = _Compiled()
                for kind in KINDS:
                    for key in sorted(self.records[kind]):
                        record = self.records[kind][key]["record"]
                        try:
                            enrollment = compile_record(kind, record, self.context)
                        except ValidationError as exc:
                            LOG.warning("%s '%s' cannot be used with this config: %s", NOUN[kind], key, exc)
                            continue
                        if kind == GROUP:
                            compiled.groups.append(enrollment)
                            continue
                        compiled.individuals[key] = enrollment
                        for thumbprint in enrollment.thumbprints:
                            compiled.by_thumbprint.setdefault(thumbprint, enrollment)
                self._compiled = compiled
            return self._compiled

    def groups(self) -> list[Enrollment]:
        return list(self._compile().groups)

    def individual(self, registration_id: str) -> Enrollment | None:
        """The individual enrollment for a registration id (case-insensitive)."""
        return self._compile().individuals.get(registration_id.lower())

    def individual_by_certificate(self, thumbprints: tuple[str, ...]) -> Enrollment | None:
        """The X.509 individual enrollment whose client certificates include one of these thumbprints."""
        index = self._compile().by_thumbprint
        return next((index[thumbprint] for thumbprint in thumbprints if thumbprint in index), None)

    # --- writes --------------------------------------------------------------------------------------------
    def _validated(self, kind: str, body: Any, identifier: str | None) -> dict[str, Any]:
        try:
            record = normalize(kind, body, identifier, self.context)
            compile_record(kind, record, self.context)
        except ValidationError as exc:
            raise bad_request(str(exc)) from None
        return record

    def _put_locked(self, kind: str, identifier: str, body: Any, if_match: str | None) -> dict[str, Any]:
        record = self._validated(kind, body, identifier)
        stored = self.records[kind].get(identifier.lower())
        what = f"{NOUN[kind]} '{identifier}'"
        if stored is None:
            if if_match is not None:
                raise ApiError(
                    412, ERROR_PRECONDITION_FAILED, f"Precondition failed: {what} does not exist (If-Match given)."
                )
        else:
            if if_match is None:
                raise ApiError(
                    409,
                    ERROR_CONFLICT,
                    f"{what.capitalize()} already exists; to replace it send If-Match with its etag (or *).",
                )
            check_if_match(if_match, stored["record"].get("etag"), what)
        # an API write keeps the seed fingerprint: the config entry it came from has not changed
        self._write(kind, record, stored, stored.get("seed") if stored else None)
        return copy.deepcopy(self.records[kind][identifier.lower()]["record"])

    def put(self, kind: str, identifier: str, body: Any, if_match: str | None) -> dict[str, Any]:
        with self.lock:
            record = self._put_locked(kind, identifier, body, if_match)
            self._save()
        LOG.info("%s '%s' written through the service API", NOUN[kind], identifier)
        return record

    def _delete_locked(self, kind: str, identifier: str, if_match: str | None) -> None:
        stored = self.records[kind].get(identifier.lower())
        if stored is None:
            raise not_found(kind, identifier)
        check_if_match(if_match, stored["record"].get("etag"), f"{NOUN[kind]} '{identifier}'")
        del self.records[kind][identifier.lower()]
        self._compiled = None

    def delete(self, kind: str, identifier: str, if_match: str | None) -> None:
        with self.lock:
            self._delete_locked(kind, identifier, if_match)
            self._save()
        LOG.info("%s '%s' deleted through the service API", NOUN[kind], identifier)

    def bulk(self, kind: str, body: Any) -> dict[str, Any]:
        """BulkEnrollmentOperation / BulkEnrollmentGroupOperation -> {isSuccessful, errors: [...]}."""
        items_field = "enrollments" if kind == INDIVIDUAL else "enrollmentGroups"
        if not isinstance(body, dict):
            raise bad_request("The bulk operation must be a JSON object {mode, " + items_field + "}.")
        mode = body.get("mode")
        if mode not in BULK_MODES:
            raise bad_request(f"mode must be one of {', '.join(BULK_MODES)}, got {mode!r}.")
        items = body.get(items_field)
        if items is None and kind == GROUP and "enrollments" in body:
            raise bad_request(
                "A bulk enrollment group operation lists its groups in enrollmentGroups, not enrollments."
            )
        if not isinstance(items, list) or not items:
            raise bad_request(f"{items_field} must be a non-empty list.")
        if len(items) > BULK_MAX_ITEMS:
            raise bad_request(f"A bulk operation takes at most {BULK_MAX_ITEMS} items, got {len(items)}.")
        id_field = ID_FIELD[kind]
        errors: list[dict[str, Any]] = []
        with self.lock:
            for item in items:
                identifier = item.get(id_field) if isinstance(item, dict) else None
                try:
                    if not isinstance(identifier, str) or not identifier:
                        raise bad_request(f"every item needs {id_field}")
                    exists = identifier.lower() in self.records[kind]
                    if mode == "create":
                        if exists:
                            raise ApiError(409, ERROR_CONFLICT, f"{NOUN[kind]} '{identifier}' already exists")
                        self._put_locked(kind, identifier, item, None)
                    elif mode == "update":
                        self._put_locked(kind, identifier, item, "*" if exists else None)
                    elif mode == "updateIfMatchETag":
                        if not exists:
                            raise not_found(kind, identifier)
                        etag = item.get("etag")
                        if not isinstance(etag, str) or not etag:
                            raise bad_request("mode updateIfMatchETag needs the item's etag")
                        self._put_locked(kind, identifier, item, etag)
                    else:
                        etag = item.get("etag")
                        self._delete_locked(kind, identifier, etag if isinstance(etag, str) and etag else None)
                except ApiError as exc:
                    errors.append(
                        {
                            id_field: identifier if isinstance(identifier, str) else "",
                            "errorCode": exc.code,
                            "errorStatus": exc.message,
                        }
                    )
            self._save()
        LOG.info("bulk %s of %d %s item(s): %d error(s)", mode, len(items), kind, len(errors))
        return {"isSuccessful": not errors, "errors": errors}

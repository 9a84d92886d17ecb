"""Property tests (hypothesis): no input makes the config.toml validator or the PEM/chain loaders crash.

They may refuse an input, but only with their own error types, which the modules turn into one-line messages:
ConfigError (_aziot_validation) / TomlSyntaxError (_aziot_toml), PkiError (_pki), ValueError from
_x509_der.pem_certificates (dps_register catches it); _x509_der.certificate_common_name / certificate_validity return
None for what they cannot parse, and what they return for a certificate is what cryptography reads.
Example counts are modest so that the whole file runs in seconds.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import string

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.iotfleet.aziot.plugins.module_utils import _aziot_toml, _aziot_validation, _pki, _x509_der
from tests.support.pki import DAY, Pki, issue

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- config.toml -----------------------------------------------------------------------------------------------------

KEYS = [
    "hostname",
    "provisioning",
    "source",
    "global_endpoint",
    "id_scope",
    "attestation",
    "method",
    "registration_id",
    "symmetric_key",
    "identity_cert",
    "identity_pk",
    "value",
    "uri",
    "agent",
    "config",
    "image",
    "edge_ca",
    "cert",
    "pk",
    "moby_runtime",
    "connection_string",
    "iothub_hostname",
    "device_id",
    "authentication",
    "cloud_timeout_sec",
    "auto_reprovisioning_mode",
    "x",
]
SCALARS = st.one_of(
    st.sampled_from(["dps", "manual", "none", "x509", "symmetric_key", "file:///k", "https://h", "sas", ""]),
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(datetime.timezone.utc)),
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
    ),
    max_leaves=12,
)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS), TOML_VALUES, max_size=5)
TOML_ALPHABET = string.ascii_letters + string.digits + " \n\t=[]{}\".,#'-_:/"


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.text(alphabet=TOML_ALPHABET, max_size=200)))
def test_parse_toml_only_raises_toml_syntax_error(text: str) -> None:
    try:
        _aziot_validation.unwrap(_aziot_toml.parse_toml(text))
    except _aziot_toml.TomlSyntaxError as exc:
        assert exc.line >= 0 and str(exc)


@SETTINGS
@given(DOCUMENTS, st.sampled_from(["edge", "identity_service"]))
def test_validate_config_only_raises_config_error(document: dict, product: str) -> None:
    try:
        _aziot_validation.validate_config(document, product)
    except _aziot_validation.ConfigError as exc:
        assert "\n" not in exc.format("/etc/aziot/config.toml")


@SETTINGS
@given(st.one_of(st.just(""), st.text(alphabet=TOML_ALPHABET, max_size=120)), DOCUMENTS)
def test_merge_config_only_raises_its_errors(before: str, desired: dict) -> None:
    try:
        result = _aziot_toml.merge_config(before, desired)
    except (_aziot_toml.TomlSyntaxError, _aziot_validation.ConfigError):
        return
    # What it accepted, it accepts again unchanged (a re-run converges).
    again = _aziot_toml.merge_config(result.after, desired)
    assert again.after == result.after


# --- PEM and chains --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict:
    pki = Pki(tmp_path_factory.mktemp("prop-pki"), label="Prop")
    other = Pki(tmp_path_factory.mktemp("prop-other"), label="PropOther")
    leaf = issue("prop-leaf", pki.intermediate)
    # same name as the real intermediate, expired, another key
    expired = issue("Prop Intermediate CA", pki.root, ca=True, not_before=-10 * DAY, not_after=-DAY)
    return {
        "pki": pki,
        "leaf": leaf.cert,
        "pool": [pki.intermediate.cert, pki.root.cert, other.intermediate.cert, other.root.cert, expired.cert],
        "pems": [pki.intermediate_path.read_bytes(), pki.root_path.read_bytes()],
        "key": leaf.key_pem,
    }


def _mutate(data: bytes, position: int, replacement: bytes) -> bytes:
    position %= max(len(data), 1)
    return data[:position] + replacement + data[position + len(replacement) :]


PEM_LIKE = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda label, body: b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, body, label),
        st.sampled_from([b"CERTIFICATE", b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"]),
        st.one_of(st.binary(max_size=200).map(base64.encodebytes), st.binary(max_size=200)),
    ),
)


@SETTINGS
@given(data=st.data())
def test_pem_loaders_only_raise_pki_error(certs: dict, data) -> None:
    source = data.draw(st.sampled_from([*certs["pems"], certs["key"]]))
    mutated = data.draw(
        st.one_of(
            PEM_LIKE,
            st.builds(_mutate, st.just(source), st.integers(min_value=0), st.binary(min_size=1, max_size=8)),
            st.builds(lambda n: source[:n], st.integers(min_value=0, max_value=len(source))),
        )
    )
    as_text = data.draw(st.booleans())
    for loader in (
        lambda: _pki.load_certificates(mutated.decode("latin-1") if as_text else mutated, "fuzzed"),
        lambda: _pki.load_private_key(mutated, "fuzzed", data.draw(st.sampled_from([None, "pass"]))),
    ):
        try:
            loader()
        except _pki.PkiError as exc:
            assert "\n" not in str(exc)
    # the device-side DER readers of dps_register: ValueError (caught by the module) or None, never a crash; and
    # what they read from a certificate cryptography can parse is what cryptography reads (the unmutated source's
    # certificates are always among them, so that every example checks the agreement at least once)
    try:
        ders = _x509_der.pem_certificates(mutated.decode("latin-1"))
    except ValueError:
        ders = []
    for der in [*ders, mutated, *_x509_der.pem_certificates(source.decode("latin-1"))]:
        assert_reads_like_cryptography(der)


def assert_reads_like_cryptography(der: bytes) -> None:
    common_name = _x509_der.certificate_common_name(der)
    validity = _x509_der.certificate_validity(der)
    assert common_name is None or type(common_name) is str
    assert validity is None or (len(validity) == 2 and all(type(value) is float for value in validity))
    try:
        cert = x509.load_der_x509_certificate(der)
        expected_cn = _pki.common_name(cert.subject)
        expected_validity = (cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
    except ValueError:
        return  # not a certificate cryptography reads: None (or anything) from the readers above is fine
    assert common_name in (None, expected_cn), (common_name, expected_cn)
    assert validity in (None, expected_validity), (validity, expected_validity)


@SETTINGS
@given(data=st.data())
def test_order_chain_only_raises_pki_error(certs: dict, data) -> None:
    pool = data.draw(st.lists(st.sampled_from(certs["pool"]), max_size=6))
    leaf = data.draw(st.sampled_from([certs["leaf"], *certs["pool"]]))
    root = data.draw(st.sampled_from(certs["pool"]))
    try:
        chain, unused = _pki.order_chain(leaf, pool, root)
    except _pki.PkiError as exc:
        assert "\n" not in str(exc)
        return
    assert chain[0] is leaf and chain[-1] is root
    assert all(_pki.issued_by(child, parent) for child, parent in itertools.pairwise(chain))
    assert not set(map(id, unused)) & set(map(id, chain[1:-1]))


def test_certificate_validity_agrees_with_cryptography(certs: dict) -> None:
    """The device-side DER reader dps_register uses to refuse an expired certificate reads what cryptography reads."""
    for cert in [certs["leaf"], *certs["pool"]]:
        der = cert.public_bytes(serialization.Encoding.DER)
        expected = (cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
        assert _x509_der.certificate_validity(der) == expected

"""BECKN-006 signing: the official test vector byte for byte, and refusals that must happen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beckn import signing
from beckn.keys import KeyError_, KeyPair, private_key_from_b64, public_key_b64, public_key_from_b64


@pytest.fixture(scope="module")
def vector(shared_dir: Path) -> dict:
    path = shared_dir / "reference/beckn/test-vectors/beckn-006-signing-vector.json"
    return json.loads(path.read_text())


def test_blake2b_example(vector: dict) -> None:
    ex = vector["blake2b_512_example"]
    assert signing.blake2b_512_b64(ex["input"].encode()) == ex["base64"]


def test_digest_and_signing_string_reproduce_vector(vector: dict) -> None:
    body = vector["request_body_utf8_exact_bytes"].encode("utf-8")
    assert signing.blake2b_512_b64(body) == vector["digest_base64"]
    assert signing.signing_string(1641287875, 1641291475, body) == vector["bap_signing_string"]
    assert not signing.signing_string(1641287875, 1641291475, body).endswith("\n")


@pytest.mark.parametrize("key_field", ["signing_private_key_64byte_libsodium", "seed"])
def test_bap_signature_reproduces_vector(vector: dict, key_field: str) -> None:
    body = vector["request_body_utf8_exact_bytes"].encode("utf-8")
    raw = (
        vector["computed_bap_private_seed_32byte"]
        if key_field == "seed"
        else vector["bap_keys"]["signing_private_key_64byte_libsodium"]
    )
    key = private_key_from_b64(raw)
    assert public_key_b64(key) == vector["bap_keys"]["signing_public_key"]
    assert signing.sign(body, key, 1641287875, 1641291475) == vector["bap_signature"]


def test_gateway_signature_reproduces_vector(vector: dict) -> None:
    body = vector["request_body_utf8_exact_bytes"].encode("utf-8")
    key = private_key_from_b64(vector["bg_keys"]["signing_private_key_64byte_libsodium"])
    assert signing.signing_string(1641287885, 1641291485, body) == vector["bg_signing_string"]
    assert signing.sign(body, key, 1641287885, 1641291485) == vector["computed_bg_signature"]


def test_header_round_trip_matches_source_format(vector: dict) -> None:
    body = vector["request_body_utf8_exact_bytes"].encode("utf-8")
    key = private_key_from_b64(vector["bap_keys"]["signing_private_key_64byte_libsodium"])
    header = signing.authorization_header(
        body, key, "example-bap.com", "ae3ea24b-cfec-495e-81f8-044aaef164ac", created=1641287875, expires=1641291475
    )
    assert header == vector["bap_authorization_header_from_source"]
    params = signing.parse_authorization(header)
    pub = public_key_from_b64(vector["bap_keys"]["signing_public_key"])
    signing.verify(params, body, pub, now=1641287880)


def test_mismatched_libsodium_halves_refused(vector: dict) -> None:
    import base64

    raw = base64.b64decode(vector["bap_keys"]["signing_private_key_64byte_libsodium"])
    forged = base64.b64encode(raw[:32] + bytes(32)).decode()
    with pytest.raises(KeyError_):
        private_key_from_b64(forged)


def _signed(body: bytes, created: int, validity: int = 60) -> tuple[signing.SignatureParams, KeyPair]:
    pair = KeyPair.generate()
    header = signing.authorization_header(
        body, pair.signing_private_key, "bap.test", pair.unique_key_id, created=created, validity_s=validity
    )
    return signing.parse_authorization(header), pair


def test_clock_skew_and_expiry() -> None:
    body = b'{"a":1}'
    params, pair = _signed(body, created=1_000_000)
    pub = pair.signing_private_key.public_key()
    signing.verify(params, body, pub, now=1_000_000 - 5)  # 5 s early: accepted (skew)
    with pytest.raises(signing.SignatureError) as e:
        signing.verify(params, body, pub, now=1_000_000 - 6)
    assert e.value.reason == "not_yet_valid"
    signing.verify(params, body, pub, now=1_000_060 + 5)
    with pytest.raises(signing.SignatureError) as e:
        signing.verify(params, body, pub, now=1_000_060 + 6)
    assert e.value.reason == "expired"


@given(body=st.binary(min_size=1, max_size=300), flip=st.integers(min_value=0))
def test_any_body_change_breaks_signature(body: bytes, flip: int) -> None:
    params, pair = _signed(body, created=1_000_000)
    pub = pair.signing_private_key.public_key()
    signing.verify(params, body, pub, now=1_000_001)
    i = flip % len(body)
    tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
    with pytest.raises(signing.SignatureError) as e:
        signing.verify(params, tampered, pub, now=1_000_001)
    assert e.value.reason == "invalid"


def test_wrong_key_refused() -> None:
    body = b"{}"
    params, _ = _signed(body, created=1_000_000)
    other = KeyPair.generate().signing_private_key.public_key()
    with pytest.raises(signing.SignatureError):
        signing.verify(params, body, other, now=1_000_001)


_HS = 'headers="(created) (expires) digest",signature="x"'


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer abc",
        'Signature keyId="a|b|ed25519",algorithm="ed25519"',
        'Signature keyId="a|b",algorithm="ed25519",created="1",expires="2",' + _HS,
        'Signature keyId="a|b|rsa",algorithm="rsa",created="1",expires="2",' + _HS,
        'Signature keyId="a|b|ed25519",algorithm="ed25519",created="x",expires="2",' + _HS,
    ],
)
def test_malformed_headers_refused(header: str | None) -> None:
    with pytest.raises(signing.SignatureError):
        signing.parse_authorization(header)

"""The pure rules of bap/permissions.py: the table, key tokens, and the README's copy of the table."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bap.audit import Outcome, _printable
from bap.permissions import (
    KEY_PREFIX,
    PERMISSIONS,
    READ_METHODS,
    Refusal,
    Role,
    check,
    format_token,
    markdown_table,
    parse_token,
    presented_token,
)
from tests.conftest import ROOT

key_ids = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)
secrets_ = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60)
endpoints = st.sampled_from(sorted(PERMISSIONS))
roles = st.sampled_from(list(Role))


@given(endpoints, roles)
def test_a_role_may_call_an_endpoint_exactly_when_the_table_lists_it(endpoint: tuple[str, str], role: Role) -> None:
    refusal = check(*endpoint, role)
    assert (refusal is None) == (role in PERMISSIONS[endpoint].roles)
    assert refusal in (None, Refusal.ROLE_FORBIDDEN)


@given(st.sampled_from(["GET", "POST", "PUT", "DELETE"]), st.text(max_size=40), roles)
def test_an_endpoint_missing_from_the_table_is_refused_to_every_role(method: str, path: str, role: Role) -> None:
    if (method, path) not in PERMISSIONS:
        assert check(method, path, role) is Refusal.NO_PERMISSION_ENTRY


def test_the_role_rules_the_brief_sets() -> None:
    """Operators may do everything, viewers only read; the audit log is the operators'; aggregators trade."""
    for (method, path), p in PERMISSIONS.items():
        assert Role.OPERATOR in p.roles, path
        assert Role.VIEWER not in p.roles or method in READ_METHODS, path
    assert PERMISSIONS[("GET", "/api/v1/audit")].roles == {Role.OPERATOR}
    for action in ("search", "select", "init", "confirm", "status", "cancel", "update", "plan"):
        assert Role.AGGREGATOR in PERMISSIONS[("POST", f"/api/v1/{action}")].roles, action
    assert len({p.action for p in PERMISSIONS.values()}) == len(PERMISSIONS)  # audit actions are unambiguous


@given(key_ids, secrets_)
def test_a_token_parses_back_to_its_key_id_and_secret(key_id: str, secret: str) -> None:
    parts = parse_token(format_token(key_id, secret))
    assert parts is not None and (parts.key_id, parts.secret) == (key_id, secret)


@given(st.text(max_size=80))
def test_only_well_formed_tokens_parse(token: str) -> None:
    parts = parse_token(token)
    if parts is not None:
        assert token == f"{KEY_PREFIX}_{parts.key_id}_{parts.secret}"
        assert re.fullmatch("[0-9a-f]{16}", parts.key_id) and parts.secret


def test_ledger_keys_and_near_misses_are_not_bap_keys() -> None:
    for token in ("flk_0123456789abcdef_s3cret", "fmb_0123456789ABCDEF_s", "fmb_0123_s", "fmb_0123456789abcdef_", ""):
        assert parse_token(token) is None, token


@given(st.text(max_size=30), st.text(max_size=30))
def test_a_bearer_header_wins_over_x_api_key(bearer: str, other: str) -> None:
    got = presented_token(f"Bearer {bearer}", other)
    assert got == (bearer.strip() or other.strip() or None)
    assert presented_token(None, f"  {other} ") == (other.strip() or None)
    assert presented_token(f"Basic {bearer}", None) is None


@given(st.text())
def test_what_the_audit_log_records_of_any_text_is_printable_and_leaves_printable_text_alone(text: str) -> None:
    shown = _printable(text)
    assert shown.isprintable()
    assert (shown == text) == text.isprintable()


@given(st.integers(min_value=100, max_value=599))
def test_each_status_has_one_audit_outcome(status: int) -> None:
    outcome = Outcome.of(status)
    assert (outcome is Outcome.OK) == (status < 400)
    assert (outcome is Outcome.FAILED) == (status >= 500)
    assert (outcome in (Outcome.UNAUTHENTICATED, Outcome.FORBIDDEN)) == (status in (401, 403))


def test_refusals_are_401_without_a_valid_key_and_403_otherwise() -> None:
    assert {r: r.status for r in Refusal} == {
        Refusal.MISSING_KEY: 401,
        Refusal.INVALID_KEY: 401,
        Refusal.ROLE_FORBIDDEN: 403,
        Refusal.NO_PERMISSION_ENTRY: 403,
    }


def test_the_readme_shows_the_permission_table_of_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README.md's BAP role table differs from bap/permissions.py markdown_table()"

"""Every message the system emitted during the end-to-end flow validates against the official Beckn
core 1.1.1 transaction API (read in place from ../shared; never copied into the project)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.e2e.helpers import rows

pytestmark = pytest.mark.e2e
SPEC_URI = "urn:beckn:core-1.1.1:transaction"


@pytest.fixture(scope="module")
def spec(shared_dir: Path) -> dict[str, Any]:
    path = shared_dir / "reference/beckn/core-v1.1.1/api/transaction/build/transaction.yaml"
    return yaml.safe_load(path.read_text())


def validator_for(spec: dict[str, Any], action: str) -> Draft202012Validator:
    registry = Registry().with_resource(SPEC_URI, Resource(contents=spec, specification=DRAFT202012))
    pointer = f"{SPEC_URI}#/paths/~1{action}/post/requestBody/content/application~1json/schema"
    return Draft202012Validator({"$ref": pointer}, registry=registry, format_checker=FormatChecker())


def test_every_emitted_message_conforms(spec: dict[str, Any], flow: dict, db_url: str) -> None:
    checked: dict[str, int] = {}
    for schema in ("bap", "bpp", "gateway"):
        for action, body in rows(db_url, f"select action, body from {schema}.outbox order by id"):
            doc = json.loads(bytes(body))
            errors = sorted(validator_for(spec, action).iter_errors(doc), key=lambda e: list(e.absolute_path))
            assert not errors, f"{schema} {action}: " + "; ".join(
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
            )
            checked[action] = checked.get(action, 0) + 1
    for action in (
        "search",
        "on_search",
        "select",
        "on_select",
        "init",
        "on_init",
        "confirm",
        "on_confirm",
        "status",
        "on_status",
    ):
        assert checked.get(action, 0) >= 1, f"the flow emitted no {action} to check ({checked})"


def test_validator_catches_a_nonconforming_message(spec: dict[str, Any], flow: dict, db_url: str) -> None:
    """The check above could fail: corrupt one emitted message in two spec-visible ways."""
    body = rows(
        db_url, "select body from bap.outbox where action = 'confirm' and transaction_id = %s limit 1", flow["tx"]
    )[0][0]
    doc = json.loads(bytes(body))
    doc["message"]["order"]["items"][0]["quantity"]["selected"]["measure"]["value"] = "lots"
    doc["message"]["order"]["payments"][0]["type"] = "WHENEVER"
    errors = list(validator_for(spec, "confirm").iter_errors(doc))
    assert len(errors) >= 2

"""Governance of the orchestrator: versioned policies (active and shadow) and the kill switch.

Both are append-only histories (bap/models.py `Policy`, `PolicyActivation`, `Halt`): the latest activation
is the one in force, and who changed what and why stays on record. A fresh deployment runs the built-in
policy (bap/policy.py `PolicyBody()`), stored as version 1 the first time anyone asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bap.models import Halt, Policy, PolicyActivation
from bap.policy import PolicyBody
from kernel import clock


class GovernanceError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Versioned:
    version: int
    body: PolicyBody


def _builtin(session: Session) -> Policy:
    first = session.get(Policy, 1)
    if first is not None:
        return first
    p = Policy(body=PolicyBody().model_dump(mode="json"), note="built-in default", created_at=clock.now())
    session.add(p)
    session.flush()
    session.add(PolicyActivation(mode="active", version=p.version, reason="built-in default", at=clock.now()))
    session.flush()
    return p


def _latest(session: Session, mode: str) -> PolicyActivation | None:
    q = select(PolicyActivation).where(PolicyActivation.mode == mode).order_by(PolicyActivation.id.desc()).limit(1)
    return session.scalars(q).first()


def active(session: Session) -> Versioned:
    _builtin(session)
    a = _latest(session, "active")
    assert a is not None and a.version is not None  # _builtin activates version 1
    return version(session, a.version)


def shadow(session: Session) -> Versioned | None:
    a = _latest(session, "shadow")
    return version(session, a.version) if a is not None and a.version is not None else None


def version(session: Session, number: int) -> Versioned:
    p = session.get(Policy, number)
    if p is None:
        raise GovernanceError(f"no policy version {number}", 404)
    return Versioned(p.version, PolicyBody.model_validate(p.body))


def create(session: Session, body: PolicyBody, *, note: str, key_id: str | None) -> Versioned:
    _builtin(session)
    p = Policy(body=body.model_dump(mode="json"), note=note, created_by=key_id, created_at=clock.now())
    session.add(p)
    session.flush()
    return Versioned(p.version, body)


def activate(session: Session, number: int, *, mode: str, key_id: str | None, reason: str) -> None:
    """Make `number` the active (or the shadow) version; `number` None with mode shadow ends shadow mode."""
    if mode not in ("active", "shadow"):
        raise GovernanceError("mode must be active or shadow")
    version(session, number)  # 404 for an unknown version
    session.add(PolicyActivation(mode=mode, version=number, by_key_id=key_id, reason=reason, at=clock.now()))


def end_shadow(session: Session, *, key_id: str | None, reason: str) -> None:
    session.add(PolicyActivation(mode="shadow", version=None, by_key_id=key_id, reason=reason, at=clock.now()))


def listing(session: Session) -> dict[str, Any]:
    act = active(session)
    sh = shadow(session)
    rows = session.scalars(select(Policy).order_by(Policy.version)).all()
    return {
        "active_version": act.version,
        "shadow_version": sh.version if sh else None,
        "policies": [
            {
                "version": p.version,
                "note": p.note,
                "created_by": p.created_by,
                "created_at": p.created_at.isoformat(),
                "body": p.body,
            }
            for p in rows
        ],
    }


# -- the kill switch ------------------------------------------------------------------------------------
def halt_state(session: Session) -> dict[str, Any]:
    h = session.scalars(select(Halt).order_by(Halt.id.desc()).limit(1)).first()
    if h is None:
        return {"halted": False, "since": None, "by_key_id": None, "reason": None}
    return {"halted": h.halted, "since": h.at.isoformat(), "by_key_id": h.by_key_id, "reason": h.reason}


def is_halted(session: Session) -> bool:
    return bool(halt_state(session)["halted"])


def set_halt(session: Session, *, halted: bool, key_id: str | None, reason: str) -> dict[str, Any]:
    session.add(Halt(halted=halted, by_key_id=key_id, reason=reason, at=clock.now()))
    session.flush()
    return halt_state(session)

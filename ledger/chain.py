"""The hash chain over plain data: link hashing and full re-verification (no database here).

A chain link commits one batch of entries (../shared/reference/ledger-design.md "Hash chain"):

    hashed_bytes = prev_hash (32 bytes) ‖ height (8 bytes, unsigned big-endian) ‖ merkle_root (32 bytes)
    link_hash    = SHA-256(hashed_bytes)

merkle_root is the RFC 6962 root of the batch's canonical entry bytes (ledger/canonical.py) in leaf
order; the first link (height 1) has prev_hash = 32 zero bytes. Heights are contiguous from 1.

`verify_chain` trusts nothing it is given: it re-encodes every entry from its columns and compares with
the stored hashed bytes, re-hashes every leaf, recomputes every Merkle root, every link's hashed bytes
and hash and the prev-hash continuity, and recomputes the RFC 6962 root over link hashes at every
checkpoint height. It stops at the first problem and names it (link height, entry id, leaf index).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from ledger.canonical import encode_entry, encode_entry_row
from ledger.merkle import LEAF_PREFIX, CompactRange, root_from_leaf_hashes

GENESIS_PREV_HASH = bytes(32)
HASH_LEN = 32

# Row shapes streamed by the database adapter (ledger/verify.py) and used by the tests.
# entry: (height, idx, id, ledger, debit, credit, amount, kind, pending_id, timeout_us, time_us, memo, canonical)
# link:  (height, prev_hash, merkle_root, entry_count, hashed_bytes, link_hash)
EntryTuple = tuple[int, int, str, str, str, str, int, str, "str | None", "int | None", int, str, bytes]
LinkTuple = tuple[int, bytes, bytes, int, bytes, bytes]


def link_preimage(prev_hash: bytes, height: int, merkle_root: bytes) -> bytes:
    if len(prev_hash) != HASH_LEN or len(merkle_root) != HASH_LEN:
        raise ValueError("prev_hash and merkle_root must be 32 bytes")
    if height < 1:
        raise ValueError("heights start at 1")
    return prev_hash + height.to_bytes(8, "big") + merkle_root


def link_hash(prev_hash: bytes, height: int, merkle_root: bytes) -> bytes:
    return sha256(link_preimage(prev_hash, height, merkle_root)).digest()


def encode_entry_tuple(row: EntryTuple) -> bytes:
    return encode_entry(
        id=row[2],
        ledger=row[3],
        debit=row[4],
        credit=row[5],
        amount=row[6],
        kind=row[7],
        pending_id=row[8],
        timeout_us=row[9],
        time_us=row[10],
        memo=row[11],
    )


@dataclass(frozen=True)
class Problem:
    """The first thing found wrong, named so an operator can find it."""

    kind: str  # entry_content | entry_missing | orphan_entries | entry_count | merkle_root |
    #            link_missing | hashed_bytes | link_hash | prev_hash | checkpoint
    height: int | None
    message: str
    entry_id: str | None = None
    idx: int | None = None


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entry_count: int
    link_count: int
    head_height: int
    head_hash: bytes
    checkpoints_checked: int
    problem: Problem | None = None

    @property
    def head_hash_hex(self) -> str:
        return self.head_hash.hex()

    def summary(self) -> str:
        if self.ok:
            return (
                f"OK: {self.entry_count} entries in {self.link_count} links, head height {self.head_height}, "
                f"head hash {self.head_hash.hex()}, {self.checkpoints_checked} checkpoint(s) matched"
            )
        assert self.problem is not None
        return f"TAMPERED: {self.problem.message}"


@dataclass(frozen=True)
class CheckpointRef:
    """What a stored checkpoint claims about the chain (its signature is checked elsewhere)."""

    height: int
    head_hash: bytes
    links_root: bytes
    entry_count: int


def _diff_fields(row: EntryTuple) -> str:
    """Human-readable difference between an entry's columns and its hashed bytes."""
    try:
        hashed = json.loads(row[12].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "the hashed bytes are not valid JSON"
    names = ("id", "ledger", "debit", "credit", "amount", "kind", "pending_id", "timeout_us", "time_us", "memo")
    diffs = [
        f"{name}: column={row[i]!r} hashed={hashed.get(name)!r}"
        for i, name in enumerate(names, start=2)
        if hashed.get(name) != row[i]
    ]
    return "; ".join(diffs) or "the hashed bytes differ in encoding"


class _Stop(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def verify_chain(
    links: Iterable[LinkTuple],
    entries: Iterable[EntryTuple],
    checkpoints: Mapping[int, CheckpointRef] | None = None,
) -> VerifyResult:
    """Re-verify the whole chain in one pass. `links` ordered by height, `entries` by (height, idx)."""
    roots = entry_roots(entries)
    return verify_links(links, [roots], checkpoints)


@dataclass
class EntryRoots:
    """What the entry pass found for a range of heights: per height (entry count, recomputed Merkle
    root), and the first entry-level problem (after which the range was not examined further)."""

    roots: dict[int, tuple[int, bytes]]
    problem: Problem | None = None


def entry_roots(entries: Iterable[tuple[Any, ...]], *, sql_checked: bool = False) -> EntryRoots:
    """Entry-level checks and Merkle roots: each entry's columns compared with its stored hashed bytes,
    leaf indexes contiguous from 0, the stored bytes hashed into leaves, one root per height. Ranges of
    heights can be processed independently (ledger/verify.py runs them in parallel processes).

    Rows are EntryTuple (the columns are re-encoded here), or with sql_checked=True the compact form
    (height, idx, id, canonical, columns_match) where the verifier's own SQL expression re-encoded the
    columns next to the data (ledger/verify.py SQL_CANONICAL). Either way every leaf, root and link is
    re-hashed here from the stored bytes."""
    roots: dict[int, tuple[int, bytes]] = {}
    height = None
    leaves: list[bytes] = []
    append = leaves.append
    for row in entries:
        if row[0] != height:
            if height is not None:
                roots[height] = (len(leaves), root_from_leaf_hashes(leaves))
            height = row[0]
            leaves = []
            append = leaves.append
        idx = row[1]
        if idx != len(leaves):
            return EntryRoots(
                roots,
                Problem(
                    "entry_missing",
                    height,
                    f"link {height}: leaf index {len(leaves)} is missing "
                    f"(next stored entry {row[2]} has leaf index {idx})",
                    row[2],
                    idx,
                ),
            )
        if sql_checked:
            canonical, matches = row[3], row[4]
        else:
            canonical = row[12]
            matches = encode_entry_row(row) == canonical
        if not matches:
            detail = "" if sql_checked else f" ({_diff_fields(row)})"
            return EntryRoots(
                roots,
                Problem(
                    "entry_content",
                    height,
                    f"entry {row[2]} (link {height}, leaf {idx}): stored columns do not match its hashed bytes"
                    + detail,
                    row[2],
                    idx,
                ),
            )
        append(sha256(LEAF_PREFIX + canonical).digest())
    if height is not None:
        roots[height] = (len(leaves), root_from_leaf_hashes(leaves))
    return EntryRoots(roots)


def describe_mismatch(row: EntryTuple) -> str:
    """Which columns differ from the hashed bytes (for the report, after a mismatch was found)."""
    return _diff_fields(row)


def verify_links(
    links: Iterable[LinkTuple],
    parts: Iterable[EntryRoots],
    checkpoints: Mapping[int, CheckpointRef] | None = None,
) -> VerifyResult:
    """Link-level checks over the roots the entry pass recomputed: contiguous heights, entry counts,
    Merkle roots, hashed bytes, link hashes, prev-hash continuity, and every checkpoint's head hash,
    links root and entry count. Reports the lowest-height problem of either pass."""
    roots: dict[int, tuple[int, bytes]] = {}
    entry_problems: list[Problem] = []
    for part in parts:
        roots.update(part.roots)
        if part.problem is not None:
            entry_problems.append(part.problem)
    first_entry_problem = min(entry_problems, key=lambda p: p.height or 0, default=None)
    cps = dict(checkpoints or {})
    state = _Walked()
    problem = None
    try:
        _walk_links(iter(links), roots, cps, state)
    except _Stop as stop:
        problem = stop.problem
    if first_entry_problem is not None and (
        problem is None or (first_entry_problem.height or 0) <= (problem.height or 0)
    ):
        problem = first_entry_problem
    return VerifyResult(problem is None, state.entries, state.links, state.height, state.head, state.cps, problem)


@dataclass(slots=True)
class _Walked:
    """How far the link walk got: the totals up to the last good link, and the checkpoints it matched."""

    entries: int = 0
    links: int = 0
    height: int = 0
    head: bytes = GENESIS_PREV_HASH
    cps: int = 0


def _walk_links(
    links: Iterator[LinkTuple],
    roots: dict[int, tuple[int, bytes]],
    checkpoints: dict[int, CheckpointRef],
    state: _Walked,
) -> None:
    prev = GENESIS_PREV_HASH
    expected_height = 1
    total_entries = 0
    tree = CompactRange()
    for link in links:
        height, prev_hash, merkle_root, entry_count, hashed_bytes, stored_hash = link
        if height != expected_height:
            raise _Stop(
                Problem(
                    "link_missing", expected_height, f"link {expected_height} is missing (next stored link is {height})"
                )
            )
        count, root = roots.pop(height, (0, None))
        if count != entry_count:
            raise _Stop(
                Problem(
                    "entry_count",
                    height,
                    f"link {height}: {entry_count} entries were committed but {count} are stored "
                    f"(entries after leaf {count - 1} deleted?)",
                )
            )
        if root != merkle_root:
            raise _Stop(
                Problem(
                    "merkle_root",
                    height,
                    f"link {height}: the Merkle root recomputed from its {count} entries does not match "
                    "the stored root (an entry was altered, deleted or reordered)",
                )
            )
        if prev_hash != prev:
            raise _Stop(
                Problem(
                    "prev_hash",
                    height,
                    f"link {height}: prev_hash {bytes(prev_hash).hex()[:16]}… does not match link "
                    f"{height - 1}'s hash {prev.hex()[:16]}…",
                )
            )
        preimage = prev + height.to_bytes(8, "big") + merkle_root
        if hashed_bytes != preimage:
            raise _Stop(
                Problem(
                    "hashed_bytes", height, f"link {height}: stored hashed bytes differ from prev_hash ‖ height ‖ root"
                )
            )
        recomputed = sha256(preimage).digest()
        if stored_hash != recomputed:
            raise _Stop(
                Problem(
                    "link_hash",
                    height,
                    f"link {height}: stored link hash {bytes(stored_hash).hex()[:16]}… is not "
                    f"SHA-256 of its hashed bytes ({recomputed.hex()[:16]}…) — forged link hash",
                )
            )
        prev = recomputed
        tree.append(sha256(LEAF_PREFIX + recomputed).digest())
        total_entries += count
        state.entries, state.links, state.height, state.head = total_entries, height, height, recomputed
        cp = checkpoints.pop(height, None)
        if cp is not None:
            if cp.head_hash != recomputed or cp.links_root != tree.root() or cp.entry_count != total_entries:
                raise _Stop(
                    Problem(
                        "checkpoint",
                        height,
                        f"signed checkpoint at height {height} does not match the chain "
                        "(head hash, links root or entry count differ)",
                    )
                )
            state.cps += 1
        expected_height += 1
    if roots:
        h = min(roots)
        raise _Stop(Problem("orphan_entries", h, f"{roots[h][0]} entries at height {h} have no link"))
    if checkpoints:
        h = min(checkpoints)
        raise _Stop(
            Problem(
                "checkpoint",
                h,
                f"signed checkpoint at height {h} but the chain ends at height {expected_height - 1} (links removed?)",
            )
        )

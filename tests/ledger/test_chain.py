"""Chain verification over plain data: every single tamper is caught and named."""

from __future__ import annotations

from hashlib import sha256

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.chain import GENESIS_PREV_HASH, CheckpointRef, link_hash, link_preimage, verify_chain
from ledger.merkle import CompactRange, leaf_hash, root
from ledger.transfers import Entry


def build(batches: list[int]) -> tuple[list[tuple], list[tuple], dict[int, CheckpointRef]]:
    links, entries = [], []
    prev = GENESIS_PREV_HASH
    cr = CompactRange()
    n = 0
    cps = {}
    for h, size in enumerate(batches, start=1):
        canon = []
        for i in range(size):
            e = Entry(
                f"t{h}-{i}",
                "GBP",
                "bap:b:cash",
                "provider:p:revenue",
                100 + n,
                "single",
                None,
                None,
                1_700_000_000_000_000 + n,
                f"memo {n}",
            )
            c = e.canonical()
            canon.append(c)
            entries.append(
                (
                    h,
                    i,
                    e.id,
                    e.ledger,
                    e.debit_account,
                    e.credit_account,
                    e.amount,
                    e.kind,
                    e.pending_id,
                    e.timeout_us,
                    e.time_us,
                    e.memo,
                    c,
                )
            )
            n += 1
        r = root(canon)
        pre = link_preimage(prev, h, r)
        lh = sha256(pre).digest()
        links.append((h, prev, r, size, pre, lh))
        prev = lh
        cr.append(leaf_hash(lh))
        if h % 2 == 0:
            cps[h] = CheckpointRef(h, lh, cr.root(), n)
    return links, entries, cps


def test_intact_chain_verifies() -> None:
    links, entries, cps = build([1, 3, 2, 5])
    res = verify_chain(links, entries, cps)
    assert res.ok, res.problem
    assert (res.entry_count, res.link_count, res.head_hash) == (11, 4, links[-1][5])
    assert res.checkpoints_checked == 2
    assert "11 entries" in res.summary()


def test_link_hash_definition() -> None:
    r = bytes(range(32))
    assert link_preimage(bytes(32), 7, r) == bytes(32) + (7).to_bytes(8, "big") + r
    assert link_hash(bytes(32), 7, r) == sha256(bytes(32) + (7).to_bytes(8, "big") + r).digest()


def _tamper(links: list, entries: list, kind: str, target: int) -> None:
    if kind == "amount_column":
        r = list(entries[target])
        r[6] += 1
        entries[target] = tuple(r)
    elif kind == "amount_everywhere":  # edit the column AND the hashed bytes consistently
        r = list(entries[target])
        r[6] += 1
        r[12] = r[12].replace(f'"amount":{r[6] - 1}'.encode(), f'"amount":{r[6]}'.encode())
        entries[target] = tuple(r)
    elif kind == "delete_entry":
        del entries[target]
    elif kind == "reorder":  # swap the leaf positions of two neighbours in one link
        j = target + 1 if target + 1 < len(entries) and entries[target + 1][0] == entries[target][0] else target - 1
        a, b = list(entries[target]), list(entries[j])
        a[1], b[1] = b[1], a[1]
        entries[target], entries[j] = tuple(b), tuple(a)
    elif kind == "forge_link_hash":
        r = list(links[target % len(links)])
        r[5] = sha256(b"forged").digest()
        links[target % len(links)] = tuple(r)
    elif kind == "delete_link":
        del links[target % len(links)]
    elif kind == "edit_root":
        r = list(links[target % len(links)])
        r[2] = sha256(b"x").digest()
        links[target % len(links)] = tuple(r)


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("amount_column", "entry_content"),
        ("amount_everywhere", "merkle_root"),
        ("delete_entry", "entry_missing"),
        ("forge_link_hash", "link_hash"),
        ("delete_link", "link_missing"),
        ("edit_root", "merkle_root"),
    ],
)
def test_each_tamper_is_named(kind: str, problem: str) -> None:
    links, entries, cps = build([2, 3, 4])
    _tamper(links, entries, kind, 3)  # entry 3 is in link 2; link index 3 % 3 = 0 → link 1
    res = verify_chain(links, entries, cps)
    assert not res.ok and res.problem is not None
    assert res.problem.kind == problem, res.problem
    if problem == "entry_content":
        assert res.problem.entry_id == "t2-1" and "amount" in res.problem.message


def test_reordered_entries_are_caught() -> None:
    links, entries, cps = build([4])
    _tamper(links, entries, "reorder", 1)
    entries.sort(key=lambda r: (r[0], r[1]))
    res = verify_chain(links, entries, cps)
    assert not res.ok and res.problem.kind == "merkle_root" and res.problem.height == 1


def test_truncated_chain_is_caught_by_checkpoint() -> None:
    links, entries, cps = build([1, 1, 1, 1])
    res = verify_chain(links[:3], [e for e in entries if e[0] <= 3], cps)
    assert not res.ok and res.problem.kind == "checkpoint"


def test_rewritten_suffix_is_caught_by_checkpoint() -> None:
    _links, _entries, cps = build([1, 1])
    other_links, other_entries, _ = build([1, 2])  # a whole different, internally consistent chain
    res = verify_chain(other_links, other_entries, cps)
    assert not res.ok and res.problem.kind == "checkpoint"


KINDS = ["amount_column", "amount_everywhere", "delete_entry", "reorder", "forge_link_hash", "delete_link", "edit_root"]


@settings(max_examples=120, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=8), st.sampled_from(KINDS), st.data())
def test_any_single_tamper_is_caught(batches: list[int], kind: str, data: st.DataObject) -> None:
    links, entries, _cps = build(batches)
    target = data.draw(st.integers(0, len(entries) - 1))
    if kind == "reorder":
        h = entries[target][0]
        if sum(1 for e in entries if e[0] == h) < 2:
            return  # nothing to reorder in a one-entry link
    _tamper(links, entries, kind, target)
    entries.sort(key=lambda r: (r[0], r[1]))
    assert not verify_chain(links, entries, {}).ok

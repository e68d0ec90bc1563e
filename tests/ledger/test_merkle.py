"""RFC 6962 Merkle trees: the level-by-level implementation against the recursive definition."""

from __future__ import annotations

from hashlib import sha256

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle


def ref_mth(data: list[bytes]) -> bytes:
    """RFC 6962 §2.1 literally: split at the largest power of two smaller than n."""
    n = len(data)
    if n == 0:
        return sha256(b"").digest()
    if n == 1:
        return sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return sha256(b"\x01" + ref_mth(data[:k]) + ref_mth(data[k:])).digest()


def ref_path(m: int, data: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    n = len(data)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, data[:k]), ref_mth(data[k:])]
    return [*ref_path(m - k, data[k:]), ref_mth(data[:k])]


@pytest.mark.parametrize("n", range(0, 34))
def test_root_and_every_path_match_rfc6962(n: int) -> None:
    data = [f"leaf-{i}".encode() for i in range(n)]
    assert merkle.root(data) == ref_mth(data)
    hashes = [merkle.leaf_hash(d) for d in data]
    tree = merkle.levels(hashes)
    assert tree[-1][0] == ref_mth(data)
    for m in range(n):
        path = merkle.audit_path_from_levels(tree, m)
        assert path == ref_path(m, data)
        assert merkle.verify_inclusion(hashes[m], m, n, path, ref_mth(data))


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.data())
def test_a_changed_leaf_or_path_does_not_verify(data: list[bytes], draw: st.DataObject) -> None:
    n = len(data)
    m = draw.draw(st.integers(0, n - 1))
    root = merkle.root(data)
    path = merkle.audit_path([merkle.leaf_hash(d) for d in data], m)
    assert merkle.verify_inclusion(merkle.leaf_hash(data[m]), m, n, path, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(data[m] + b"x"), m, n, path, root)
    if path:
        i = draw.draw(st.integers(0, len(path) - 1))
        bad = list(path)
        bad[i] = bytes(32)
        assert not merkle.verify_inclusion(merkle.leaf_hash(data[m]), m, n, bad, root)
        assert not merkle.verify_inclusion(merkle.leaf_hash(data[m]), m, n, path[:-1], root)
    if n > 1:  # the same leaf does not prove another position
        other = (m + 1) % n
        assert not merkle.verify_inclusion(merkle.leaf_hash(data[m]), other, n, path, root) or data[m] == data[other]


def test_compact_range_gives_every_prefix_root() -> None:
    data = [bytes([i]) for i in range(70)]
    cr = merkle.CompactRange()
    assert cr.root() == merkle.EMPTY_ROOT
    for i, d in enumerate(data):
        cr.append(merkle.leaf_hash(d))
        assert cr.root() == ref_mth(data[: i + 1])


def test_domain_separation_prefixes() -> None:
    # a leaf whose data looks like an inner node must not collide with that node
    left, right = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)

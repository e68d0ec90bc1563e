"""RFC 6962 (Certificate Transparency) Merkle trees: root, audit paths, offline proof checks.

leaf hash = SHA-256(0x00 ‖ data), node hash = SHA-256(0x01 ‖ left ‖ right); a tree of n leaves
splits at the largest power of two below n (RFC 6962 §2.1). Building the tree level by level and
promoting an unpaired last node unchanged gives exactly that shape, which is how `levels` works; the
recursive definition in the tests checks it. The empty tree's root is SHA-256 of the empty string.
Used for one chain link's batch of entries and for the tree of all link hashes that a signed
checkpoint commits to (../shared/reference/ledger-design.md "Hash chain", "Tamper evidence").
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(NODE_PREFIX + left + right).digest()


def levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaves first, root level last (one element)."""
    if not leaf_hashes:
        return [[EMPTY_ROOT]]
    out = [list(leaf_hashes)]
    level = out[0]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        out.append(nxt)
        level = nxt
    return out


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over already-hashed leaves (the hot path of chain verification)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while n > 1:
        odd = n & 1
        level = [sha256(NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, n - odd, 2)] + (
            [level[-1]] if odd else []
        )
        n = len(level)
    return level[0]


def root(data: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH(D[n]) of raw leaf data."""
    return root_from_leaf_hashes([leaf_hash(d) for d in data])


def audit_path_from_levels(tree: list[list[bytes]], index: int) -> list[bytes]:
    """RFC 6962 PATH(index, D[n]): sibling hashes from the leaf up to the root."""
    n = len(tree[0])
    if not 0 <= index < n:
        raise IndexError(f"leaf index {index} outside a tree of {n} leaves")
    path: list[bytes] = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def audit_path(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    return audit_path_from_levels(levels(leaf_hashes), index)


def root_from_audit_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """Recompute the root from a leaf hash and its audit path (RFC 9162 §2.1.3.2); raises if the
    path has the wrong length for (index, size)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} outside a tree of {size} leaves")
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise ValueError("audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("audit path is shorter than the tree is deep")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], expected_root: bytes) -> bool:
    try:
        return root_from_audit_path(leaf, index, size, path) == expected_root
    except ValueError:
        return False


class CompactRange:
    """Append-only RFC 6962 accumulator: the root of every prefix in O(log n) memory.

    Keeps the roots of the perfect subtrees ("peaks") covering the leaves so far; the tree root is the
    peaks folded right to left. Lets the verifier check every checkpoint's links_root in one pass.
    """

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[bytes] = []  # left to right, decreasing subtree sizes

    def append(self, leaf: bytes) -> None:
        node = leaf
        n = self.size
        while n & 1:
            node = node_hash(self._peaks.pop(), node)
            n >>= 1
        self._peaks.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        acc = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            acc = node_hash(peak, acc)
        return acc

"""PostgreSQL binary-format array parameters assembled from elements encoded ahead of time.

The append path sends a batch's entries as one array per column (`INSERT … SELECT … FROM unnest(…)`,
ledger/store.py). psycopg would encode every element of every array when the statement is executed,
i.e. on the critical path, between reading the locked balances and sending the COMMIT. Here a
request's elements are encoded as soon as it is taken from the queue — the group committer does that
while the previous batch's COMMIT is in flight — and a batch's array is only a fixed header followed by
the concatenation of its requests' element bytes.

Binary array format (PostgreSQL's array_send / array_recv, src/backend/utils/adt/arrayfuncs.c), all
integers big-endian: int32 number of dimensions (1) · int32 flags (1 if any element is NULL) · uint32
element type oid · for the one dimension int32 length and int32 lower bound (1) · for each element an
int32 byte length (−1 for NULL, with no bytes following) and the element's binary form: text is its
UTF-8 bytes, bytea the bytes themselves, int8 eight bytes of two's complement. Each class below sends
its array type's oid, and the server's array_recv checks the header's element oid against it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from psycopg import adapters
from psycopg.adapt import Dumper
from psycopg.pq import Format

TEXT_OID, INT8_OID, BYTEA_OID = 25, 20, 17
TEXT_ARRAY_OID, INT8_ARRAY_OID, BYTEA_ARRAY_OID = 1009, 1016, 1001

_HEADER = struct.Struct(">iiIii")
_LEN = struct.Struct(">i").pack
_INT8 = struct.Struct(">iq").pack  # length 8, then the value
NULL = _LEN(-1)


def text_elements(values: Iterable[str | None]) -> bytes:
    """Element bytes of text values (None is NULL); a lone surrogate raises UnicodeEncodeError."""
    out = []
    for v in values:
        if v is None:
            out.append(NULL)
        else:
            b = v.encode("utf-8")
            out.append(_LEN(len(b)))
            out.append(b)
    return b"".join(out)


def int8_elements(values: Iterable[int | None]) -> bytes:
    """Element bytes of bigint values (None is NULL); outside the int8 range raises struct.error."""
    return b"".join([NULL if v is None else _INT8(8, v) for v in values])


def bytea_elements(values: Iterable[bytes]) -> bytes:
    out = []
    for v in values:
        out.append(_LEN(len(v)))
        out.append(v)
    return b"".join(out)


class BinaryArray:
    """A complete one-dimensional array parameter in binary format, sent to the server as it is."""

    __slots__ = ("data",)
    array_oid = 0

    def __init__(self, element_oid: int, count: int, has_null: bool, elements: bytes) -> None:
        self.data = _HEADER.pack(1, 1 if has_null else 0, element_oid, count, 1) + elements


class TextArray(BinaryArray):
    __slots__ = ()
    array_oid = TEXT_ARRAY_OID

    def __init__(self, count: int, has_null: bool, elements: bytes) -> None:
        super().__init__(TEXT_OID, count, has_null, elements)


class Int8Array(BinaryArray):
    __slots__ = ()
    array_oid = INT8_ARRAY_OID

    def __init__(self, count: int, has_null: bool, elements: bytes) -> None:
        super().__init__(INT8_OID, count, has_null, elements)


class ByteaArray(BinaryArray):
    __slots__ = ()
    array_oid = BYTEA_ARRAY_OID

    def __init__(self, count: int, elements: bytes) -> None:
        super().__init__(BYTEA_OID, count, False, elements)


def _dumper_for(cls: type[BinaryArray]) -> type[Dumper]:
    class _ArrayDumper(Dumper):
        format = Format.BINARY
        oid = cls.array_oid

        def dump(self, obj: BinaryArray) -> bytes:
            return obj.data

    _ArrayDumper.__name__ = f"{cls.__name__}Dumper"
    return _ArrayDumper


# Registered on psycopg's global adapters map, which every connection copies when it first adapts a
# value: these classes are private to the ledger, so nothing else changes. The classes do not derive
# from bytes on purpose — a connection without the dumpers refuses them ("cannot adapt type") instead
# of silently sending them as bytea.
for _cls in (TextArray, Int8Array, ByteaArray):
    adapters.register_dumper(_cls, _dumper_for(_cls))

#!/usr/bin/env python3
"""Writes hand-made inputs that the fuzzers are unlikely to reach by mutation (the tensor-bundle
index is CRC-checked block by block) into model/tests/fixtures/fuzz/savedmodel/.

sstable-amplification: a SavedModelArchive with a minimal SavedModel (tag `serve`, one input,
one output) and a 12 KB variables.index whose index block points K times at one data block of
M prefix-compressed entries that each repeat a key of L bytes: decoding it materialised
K*M*L bytes (about 2 GB) before the fix.

Usage: python3 fuzz/crafted.py [REPO_ROOT]
"""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
from seeds import field_bytes, varint  # noqa: E402

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))


def crc32c(data, crc=0):
    c = ~crc & 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return ~c & 0xFFFFFFFF


def mask(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def block(entries):
    """entries: (shared, non_shared_bytes, value) triples, one restart point."""
    b = bytearray()
    for shared, key, value in entries:
        b += varint(shared) + varint(len(key)) + varint(len(value)) + key + value
    b += struct.pack("<I", 0) + struct.pack("<I", 1)
    return bytes(b)


def append_block(file, contents):
    offset = len(file)
    file += contents
    file.append(0)
    file += struct.pack("<I", mask(crc32c(bytes([0]), crc32c(contents))))
    return offset, len(contents)


def minimal_saved_model():
    tensor = lambda name: field_bytes(1, name)  # noqa: E731 TensorInfo.name
    sig = field_bytes(1, field_bytes(1, "x") + field_bytes(2, tensor("x:0")))
    sig += field_bytes(2, field_bytes(1, "y") + field_bytes(2, tensor("y:0")))
    meta = field_bytes(1, field_bytes(4, "serve"))  # MetaInfoDef.tags
    meta += field_bytes(2, b"")  # an empty GraphDef
    meta += field_bytes(5, field_bytes(1, "serving_default") + field_bytes(2, sig))
    return field_bytes(2, meta)


def amplification(L=3000, M=1000, K=500):
    file = bytearray()
    entries = [(0, b"", b"")]  # the bundle header (empty BundleHeaderProto)
    entries.append((0, b"k" * L, b""))
    entries += [(L, b"", b"")] * M
    data = append_block(file, block(entries))
    handle = varint(data[0]) + varint(data[1])
    index = append_block(file, block([(0, b"", handle)] * K))
    footer = varint(0) + varint(0) + varint(index[0]) + varint(index[1])
    footer += b"\0" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    file += footer
    return field_bytes(1, minimal_saved_model()) + field_bytes(2, bytes(file))


def main():
    d = os.path.join(ROOT, "model", "tests", "fixtures", "fuzz", "savedmodel")
    os.makedirs(d, exist_ok=True)
    data = amplification()
    with open(os.path.join(d, "sstable-amplification"), "wb") as f:
        f.write(data)
    print(f"sstable-amplification: {len(data)} bytes")


if __name__ == "__main__":
    main()

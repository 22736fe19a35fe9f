#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (git-ignored).

Seeds come from the repository's fixtures (PMML conformance documents, ONNX models) and, when
present, from the reference data in ../shared/data/wine (the tutorial's PMML files, the frozen
graph, the SavedModel and CSV rows); those are used at run time only, never committed.
Protobuf messages are encoded by hand (proto/flowstage.proto): no Python package is needed.

Usage: python3 fuzz/seeds.py [REPO_ROOT]
"""

import glob
import os
import struct
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
WINE = os.path.join(ROOT, "..", "shared", "data", "wine")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_double(num, v):
    return varint(num << 3 | 1) + struct.pack("<d", v)


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def wine_record(values, data_type="wine", ts=1):
    msg = b"".join(field_double(i + 1, v) for i, v in enumerate(values[:11]))
    return msg + field_bytes(12, data_type) + field_varint(13, ts)


def descriptor(name, model_type, data=None, location=None):
    msg = field_bytes(1, name) + field_bytes(2, "seed") + field_bytes(3, "wine")
    msg += field_varint(4, model_type)
    if data is not None:
        msg += field_bytes(5, data)
    if location is not None:
        msg += field_bytes(6, location)
    return msg


def saved_model_archive(d, tag=None, signature=None):
    msg = field_bytes(1, read(os.path.join(d, "saved_model.pb")))
    index = os.path.join(d, "variables", "variables.index")
    if os.path.exists(index):
        msg += field_bytes(2, read(index))
        for shard in sorted(glob.glob(os.path.join(d, "variables", "variables.data-*"))):
            msg += field_bytes(3, read(shard))
    if tag:
        msg += field_bytes(4, tag)
    if signature:
        msg += field_bytes(5, signature)
    return msg


def main():
    small_pmml = None
    # pmml: the conformance documents and the tutorial's wine models.
    pmmls = sorted(glob.glob(os.path.join(ROOT, "pmml", "tests", "fixtures", "conformance", "*", "model.pmml")))
    pmmls += sorted(glob.glob(os.path.join(WINE, "*.pmml")))
    for p in pmmls:
        name = os.path.basename(os.path.dirname(p)) if p.endswith("model.pmml") else os.path.basename(p)
        data = read(p)
        write("pmml", name, data)
        if small_pmml is None or len(data) < len(small_pmml):
            small_pmml = data
    # tensor_models: selector byte (odd ONNX, even frozen graph) + the model.
    onnx = sorted(glob.glob(os.path.join(ROOT, "model", "tests", "fixtures", "onnx", "*.onnx")))
    for p in onnx:
        write("tensor_models", os.path.basename(p), b"\x01" + read(p))
    frozen = os.path.join(WINE, "optimized_WineQuality.pb")
    if os.path.exists(frozen):
        write("tensor_models", "optimized_WineQuality.pb", b"\x00" + read(frozen))
    # savedmodel: SavedModelArchive messages.
    saved = os.path.join(WINE, "saved", "1")
    archive = None
    if os.path.exists(os.path.join(saved, "saved_model.pb")):
        archive = saved_model_archive(saved)
        write("savedmodel", "wine_saved", archive)
        write("savedmodel", "wine_saved_tagged", saved_model_archive(saved, "serve", "serving_default"))
    write("savedmodel", "empty_graph", field_bytes(1, b""))
    # wire: selector 0 + WineRecord, selector 1 + ModelDescriptor.
    csv = os.path.join(WINE, "winequality_red.csv")
    rows = []
    if os.path.exists(csv):
        with open(csv) as f:
            for line in f.readlines()[:40]:
                try:
                    rows.append([float(x) for x in line.strip().split(";")])
                except ValueError:
                    pass
    if not rows:
        rows = [[7.4, 0.7, 0.0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4, 5]]
    for i, row in enumerate(rows):
        write("wire", f"record_{i:03}", b"\x00" + wine_record(row, ts=i))
    write("wire", "record_no_type", b"\x00" + wine_record(rows[0], data_type=""))
    write("wire", "desc_pmml_data", b"\x01" + descriptor("pmml", 2, data=small_pmml or b"<PMML/>"))
    write("wire", "desc_pmml_location", b"\x01" + descriptor("loc", 2, location="wine.pmml"))
    write("wire", "desc_pmml_sub", b"\x01" + descriptor("sub", 2, location="sub/wine.pmml"))
    write("wire", "desc_outside", b"\x01" + descriptor("out", 2, location="../wine.pmml"))
    if onnx:
        write("wire", "desc_onnx", b"\x01" + descriptor("onnx", 3, data=read(min(onnx, key=os.path.getsize))))
    if os.path.exists(frozen):
        write("wire", "desc_frozen", b"\x01" + descriptor("tf", 0, data=read(frozen)))
    if archive is not None:
        write("wire", "desc_saved", b"\x01" + descriptor("saved", 1, data=archive))
    for t in sorted(os.listdir(CORPUS)):
        print(f"seeds: {t}: {len(os.listdir(os.path.join(CORPUS, t)))} files")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""onnxruntime on the wine_shaped_mlp fixture, the baseline for flowstage's ONNX scoring.

Scores the 1,599 wine rows (../shared) one record at a time and in batches of 1,024, the same
way benches/scoring.rs does, in one thread. Single-record times include the Python call
overhead of InferenceSession.run.
"""
import csv
import os
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WINE = os.path.join(ROOT, "..", "shared", "data", "wine", "winequality_red.csv")
MODEL = os.path.join(ROOT, "model", "tests", "fixtures", "onnx", "wine_shaped_mlp.onnx")


def per_call(f, budget):
    for _ in range(100):
        f()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < budget:
        for _ in range(100):
            f()
        calls += 100
    return (time.perf_counter() - start) / calls


def main():
    with open(WINE, newline="") as fh:
        x = np.asarray([[float(v) for v in r[:11]] for r in csv.reader(fh, delimiter=";") if r],
                       dtype=np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(MODEL, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rows = [x[i : i + 1] for i in range(len(x))]
    i = [0]

    def single():
        sess.run(None, {name: rows[i[0] % len(rows)]})
        i[0] += 1

    batch = np.resize(x, (1024, 11))
    s = per_call(single, 2.0)
    b = per_call(lambda: sess.run(None, {name: batch}), 3.0)
    print(f"{'onnxruntime wine_shaped_mlp':<28} single: {s * 1e6:>8.2f} µs/record   "
          f"batch 1024: {1024 / b:>10.0f} records/s ({b * 1e6 / 1024:.2f} µs/record)")


if __name__ == "__main__":
    main()

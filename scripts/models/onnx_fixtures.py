#!/usr/bin/env python3
"""Small scikit-learn models exported with skl2onnx, and onnxruntime's outputs for them.

Trains every model family flowstage serves through ONNX on data this script makes (seeded, so
reruns are reproducible for a given set of library versions), exports each with skl2onnx and
records what onnxruntime computes on held-out rows. Writes, under model/tests/fixtures/onnx/:
  <name>.onnx            the model
  <name>.input.csv       the rows to score (header f0..fN; an empty cell is a missing value)
  <name>.expected.jsonl  onnxruntime's outputs, one JSON object per row, in `flowstage score`'s
                         format: keys are output names; rank-1 -> scalar, rank-2 -> list,
                         ZipMap -> object with string keys.
  manifest.json          names, kinds and versions.

Usage (from the repository root):
  .venv-models/bin/python scripts/models/onnx_fixtures.py
"""
import csv
import json
import math
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import skl2onnx
from skl2onnx import to_onnx
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "model", "tests", "fixtures", "onnx")
OPSET = {"": 17, "ai.onnx.ml": 3}
N_TEST = 40


def make_data(seed, n=400, d=6):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(n, d)) * np.array([1.0, 2.0, 0.5, 3.0, 1.0, 10.0][:d])
    w = rng.normal(size=d)
    reg = x @ w + 0.3 * np.sin(3 * x[:, 0]) + rng.normal(scale=0.1, size=n)
    multi = np.digitize(reg, np.quantile(reg, [0.33, 0.66]))  # 3 classes 0..2
    binary = (reg > np.median(reg)).astype(np.int64)
    return x.astype(np.float32), reg.astype(np.float64), multi.astype(np.int64), binary


def jsonable(v):
    if isinstance(v, float) or isinstance(v, np.floating):
        f = float(v)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "Infinity" if f > 0 else "-Infinity"
        return f
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode()
    if isinstance(v, np.str_):
        return str(v)
    return v


def row_value(out, i):
    if isinstance(out, list):  # ZipMap: list of dicts
        return {str(k): jsonable(v) for k, v in out[i].items()}
    a = np.asarray(out)
    if a.ndim == 1:
        return jsonable(a[i])
    return [jsonable(v) for v in a[i].reshape(-1)]


def export(name, model, x_train, y_train, x_test, kind, options=None, nan_every=0):
    model.fit(x_train, y_train)
    if nan_every:
        # Missing values: every nan_every-th cell of the scored rows becomes NaN.
        x_test = x_test.copy()
        x_test.reshape(-1)[::nan_every] = np.nan
    onx = to_onnx(model, x_train[:1], target_opset=OPSET, options=options)
    path = os.path.join(OUT, f"{name}.onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(None, {sess.get_inputs()[0].name: x_test})
    with open(os.path.join(OUT, f"{name}.input.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([f"f{j}" for j in range(x_test.shape[1])])
        for row in x_test:
            w.writerow(["" if math.isnan(v) else repr(float(v)) for v in row])
    with open(os.path.join(OUT, f"{name}.expected.jsonl"), "w") as f:
        for i in range(x_test.shape[0]):
            f.write(json.dumps({n: row_value(o, i) for n, o in zip(names, outs)}) + "\n")
    ops = sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onx.graph.node})
    print(f"{name}: outputs {names}, ops {ops}, {os.path.getsize(path)} bytes", file=sys.stderr)
    return {"name": name, "kind": kind, "outputs": names, "ops": ops}


def main():
    os.makedirs(OUT, exist_ok=True)
    x, reg, multi, binary = make_data(0)
    xtr, xte = x[:-N_TEST], x[-N_TEST:]
    rtr, mtr, btr = reg[:-N_TEST], multi[:-N_TEST], binary[:-N_TEST]
    labels = np.array(["low", "mid", "high"])[mtr]
    no_zipmap = {"zipmap": False}
    small_forest = dict(n_estimators=8, max_depth=4, random_state=0)
    small_gbm = dict(n_estimators=12, max_depth=3, random_state=0)
    mlp = dict(hidden_layer_sizes=(12, 8), max_iter=400, random_state=0)
    entries = [
        export("linear_regressor", LinearRegression(), xtr, rtr, xte, "regressor"),
        export("logistic_multiclass", LogisticRegression(max_iter=500), xtr, mtr, xte, "classifier"),
        export("logistic_binary_nozipmap", LogisticRegression(max_iter=500), xtr, btr, xte,
               "classifier", options={LogisticRegression: no_zipmap}),
        export("mlp_regressor", MLPRegressor(**mlp), xtr, rtr, xte, "regressor"),
        export("mlp_classifier", MLPClassifier(**mlp), xtr, mtr, xte, "classifier"),
        export("tree_regressor", DecisionTreeRegressor(max_depth=5, random_state=0), xtr, rtr, xte,
               "regressor"),
        export("tree_classifier_strings", DecisionTreeClassifier(max_depth=5, random_state=0), xtr,
               labels, xte, "classifier"),
        export("forest_regressor", RandomForestRegressor(**small_forest), xtr, rtr, xte, "regressor"),
        export("forest_classifier", RandomForestClassifier(**small_forest), xtr, mtr, xte,
               "classifier"),
        export("gbm_regressor", GradientBoostingRegressor(**small_gbm), xtr, rtr, xte, "regressor"),
        export("gbm_classifier", GradientBoostingClassifier(**small_gbm), xtr, mtr, xte,
               "classifier"),
        export("tree_regressor_nan_inputs", DecisionTreeRegressor(max_depth=5, random_state=0), xtr,
               rtr, xte, "regressor", nan_every=3),
        export("forest_binary", RandomForestClassifier(**small_forest), xtr, btr, xte, "classifier"),
        export("tree_binary_nozipmap", DecisionTreeClassifier(max_depth=4, random_state=0), xtr, btr,
               xte, "classifier", options={DecisionTreeClassifier: no_zipmap}),
        export("gbm_binary_nozipmap", GradientBoostingClassifier(**small_gbm), xtr, btr, xte,
               "classifier", options={GradientBoostingClassifier: no_zipmap}),
    ]
    # The wine MLP's shape (11 -> 12 relu -> 8 relu -> 9 classes), on made-up data, for
    # benchmarks. (skl2onnx reshapes MLPRegressor outputs to one column, so a classifier it is.)
    wx, wreg, _, _ = make_data(1, n=900, d=6)
    wx = np.concatenate([wx, wx[:, :5] * 0.5], axis=1).astype(np.float32)  # 11 columns
    wy = np.digitize(wreg, np.quantile(wreg, np.linspace(0, 1, 10)[1:-1]))  # 9 classes
    entries.append(export("wine_shaped_mlp", MLPClassifier(hidden_layer_sizes=(12, 8), max_iter=300,
                                                           random_state=0),
                          wx[:-N_TEST], wy[:-N_TEST], wx[-N_TEST:], "classifier",
                          options={MLPClassifier: no_zipmap}))
    manifest = {
        "generator": "scripts/models/onnx_fixtures.py",
        "versions": {
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "opset": OPSET,
        "models": entries,
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

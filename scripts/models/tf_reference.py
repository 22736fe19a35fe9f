#!/usr/bin/env python3
"""Reference outputs of the tutorial's TensorFlow models, computed by TensorFlow itself.

Runs tensorflow-cpu over the 1,599 rows of ../shared/data/wine/winequality_red.csv with
  * the frozen graph optimized_WineQuality.pb (dense_1_input -> dense_3/Sigmoid), and
  * the SavedModel saved/1 (tag "serve", signature "predict": inputs -> outputs),
and writes one CSV per model under model/tests/fixtures/ (9 columns, %.9g: exact for float32).
The third-party models and data are read from ../shared, never copied.

Usage (from the repository root):
  python3 -m venv .venv-models && .venv-models/bin/pip install -r scripts/models/requirements.txt
  .venv-models/bin/python scripts/models/tf_reference.py
"""
import csv
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import tensorflow as tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WINE = os.path.join(ROOT, "..", "shared", "data", "wine")
OUT = os.path.join(ROOT, "model", "tests", "fixtures")


def load_rows():
    rows = []
    with open(os.path.join(WINE, "winequality_red.csv"), newline="") as f:
        for rec in csv.reader(f, delimiter=";"):
            if rec:
                rows.append([float(v) for v in rec[:11]])
    x = np.asarray(rows, dtype=np.float32)
    assert x.shape == (1599, 11), x.shape
    return x


def run_frozen(x):
    graph_def = tf.compat.v1.GraphDef()
    with open(os.path.join(WINE, "optimized_WineQuality.pb"), "rb") as f:
        graph_def.ParseFromString(f.read())
    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return np.concatenate(
                [sess.run("dense_3/Sigmoid:0", {"dense_1_input:0": x[i : i + 1]}) for i in range(len(x))]
            )


def run_saved(x):
    with tf.Graph().as_default() as g:
        with tf.compat.v1.Session(graph=g) as sess:
            meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], os.path.join(WINE, "saved", "1"))
            sig = meta.signature_def["predict"]
            inp = sig.inputs["inputs"].name
            out = sig.outputs["outputs"].name
            return np.concatenate([sess.run(out, {inp: x[i : i + 1]}) for i in range(len(x))])


def write(name, y):
    path = os.path.join(OUT, name)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([f"out{i}" for i in range(y.shape[1])])
        for row in y:
            w.writerow(["%.9g" % v for v in row])
    print(f"wrote {path}: {y.shape}", file=sys.stderr)


def main():
    os.makedirs(OUT, exist_ok=True)
    x = load_rows()
    write("wine_frozen_tf.csv", run_frozen(x).astype(np.float32))
    write("wine_saved_tf.csv", run_saved(x).astype(np.float32))
    print(f"tensorflow {tf.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Shared helpers: the Case record, datasets, value formatting, PMML inspection."""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

SEED = 20261125
MAX_ROWS = 200

MODEL_ELEMENTS = {
    "AnomalyDetectionModel", "AssociationModel", "BayesianNetworkModel", "BaselineModel",
    "ClusteringModel", "GaussianProcessModel", "GeneralRegressionModel", "MiningModel",
    "NaiveBayesModel", "NearestNeighborModel", "NeuralNetwork", "RegressionModel", "RuleSetModel",
    "SequenceModel", "Scorecard", "SupportVectorMachineModel", "TextModel", "TimeSeriesModel",
    "TreeModel",
}


@dataclass
class Case:
    name: str
    source: str  # "sklearn2pmml" | "nyoka" | "hand-written"
    notes: str
    dataset: str
    # Builds the PMML file at the given path (training + export, or writing hand-written XML).
    build: Callable[[str], None]
    # Base rows (DataFrame, column names = input field names; NaN/None = missing).
    rows: pd.DataFrame
    # Extra hand-picked edge rows (list of dicts field -> str|None), appended before generic ones.
    extra_rows: list = field(default_factory=list)
    # Whether to add the generic edge rows (missing, unseen, thresholds, outliers, invalid).
    generic_edges: bool = True


def fmt(v) -> Optional[str]:
    """Format one input value as the CSV cell text (None = missing)."""
    if v is None:
        return None
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return None
        f = float(v)
        if f.is_integer() and abs(f) < 1e15:
            return repr(f)  # keep "3.0" so that the cell reads as a number of the double kind
        return repr(f)
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def clean_name(s: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", s.replace(" (cm)", "")).strip("_")


# ---------------------------------------------------------------- datasets

def ds_iris():
    from sklearn.datasets import load_iris
    d = load_iris(as_frame=True)
    X = d.data.copy()
    X.columns = [clean_name(c) for c in X.columns]
    y = pd.Series([str(d.target_names[i]) for i in d.target], name="species", dtype=object)
    return X, y


def ds_wine(ncols=6):
    from sklearn.datasets import load_wine
    d = load_wine(as_frame=True)
    X = d.data.iloc[:, :ncols].copy()
    X.columns = [clean_name(c) for c in X.columns]
    y = pd.Series(["class_%d" % i for i in d.target], name="cultivar", dtype=object)
    return X, y


def ds_breast_cancer(ncols=8):
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer(as_frame=True)
    X = d.data.iloc[:, :ncols].copy()
    X.columns = [clean_name(c) for c in X.columns]
    y = pd.Series([str(d.target_names[i]) for i in d.target], name="diagnosis", dtype=object)
    return X, y


def ds_diabetes():
    from sklearn.datasets import load_diabetes
    d = load_diabetes(as_frame=True)
    X = d.data.copy()
    X.columns = [clean_name(c) for c in X.columns]
    y = pd.Series(d.target.astype(float), name="progression")
    return X, y


def ds_mixed(n=400, missing=True, seed=SEED):
    """Synthetic data: 4 numeric + 2 string categorical columns, optional missing values.
    Targets: binary label "label" (yes/no) and regression target "y"."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, 1, n)
    x2 = rng.normal(5, 2, n)
    x3 = rng.uniform(-3, 3, n)
    x4 = rng.integers(0, 10, n).astype(float)
    color = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])
    size = rng.choice(["S", "M", "L", "XL"], n)
    eff_c = {"red": 0.8, "green": -0.5, "blue": 0.0}
    eff_s = {"S": -1.0, "M": 0.0, "L": 0.5, "XL": 1.2}
    lin = 1.5 * x1 - 0.4 * (x2 - 5) + 0.3 * x3 + 0.1 * x4 \
        + np.array([eff_c[c] for c in color]) + np.array([eff_s[s] for s in size])
    p = 1 / (1 + np.exp(-lin))
    label = np.where(rng.uniform(0, 1, n) < p, "yes", "no")
    y = 10 + 3 * lin + rng.normal(0, 0.5, n)
    X = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "x4": x4,
                      "color": pd.Series(color, dtype=object), "size": pd.Series(size, dtype=object)})
    X["color"] = [str(c) for c in X["color"]]
    X["size"] = [str(c) for c in X["size"]]
    if missing:
        m1 = rng.uniform(0, 1, n) < 0.06
        m2 = rng.uniform(0, 1, n) < 0.06
        X.loc[m1, "x1"] = np.nan
        X.loc[m2, "color"] = None
    return X, pd.Series([str(s) for s in label], name="label", dtype=object), pd.Series(y, name="y")


def sample_rows(X: pd.DataFrame, n: int, seed=SEED) -> pd.DataFrame:
    if len(X) <= n:
        return X.reset_index(drop=True)
    return X.sample(n=n, random_state=seed).reset_index(drop=True)


# ---------------------------------------------------------------- PMML inspection

def local(tag: str) -> str:
    return tag.split("}", 1)[-1]


def pmml_model_type(path: str) -> str:
    root = ET.parse(path).getroot()
    for child in root:
        if local(child.tag) in MODEL_ELEMENTS:
            return _describe_model(child)
    return "?"


def _describe_model(el) -> str:
    t = local(el.tag)
    if t != "MiningModel":
        return t
    inner = []
    for seg in el.iter():
        if local(seg.tag) == "Segmentation":
            method = seg.get("multipleModelMethod")
            kinds = []
            for s in seg:
                if local(s.tag) != "Segment":
                    continue
                for c in s:
                    if local(c.tag) in MODEL_ELEMENTS:
                        k = _describe_model(c)
                        if k not in kinds:
                            kinds.append(k)
            inner.append("%s:%s" % (method, "+".join(kinds)))
            break
    return "MiningModel(%s)" % ",".join(inner)


def pmml_model_elements(path: str) -> list:
    root = ET.parse(path).getroot()
    seen = []
    for el in root.iter():
        t = local(el.tag)
        if t in MODEL_ELEMENTS and t not in seen:
            seen.append(t)
    return seen


def pmml_boundary_values(path: str, input_fields: set) -> list:
    """(field, value-text) pairs that sit exactly on a split threshold / interval margin /
    normalisation knot for a raw input field."""
    root = ET.parse(path).getroot()
    out = []
    for el in root.iter():
        t = local(el.tag)
        if t == "SimplePredicate":
            f, v = el.get("field"), el.get("value")
            if f in input_fields and v is not None:
                out.append((f, v))
        elif t == "Discretize":
            f = el.get("field")
            if f in input_fields:
                for b in el.iter():
                    if local(b.tag) == "Interval":
                        for a in ("leftMargin", "rightMargin"):
                            if b.get(a) is not None:
                                out.append((f, b.get(a)))
        elif t == "NormContinuous":
            f = el.get("field")
            if f in input_fields:
                for ln in el:
                    if local(ln.tag) == "LinearNorm":
                        out.append((f, ln.get("orig")))
        elif t == "Interval" and False:
            pass
    # de-duplicate, keep order
    seen, uniq = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq


def strip_timestamp(path: str):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    text = re.sub(r"\s*<Timestamp>.*?</Timestamp>", "", text, flags=re.S)
    text = re.sub(r'\s*<Timestamp/>', "", text)
    text = re.sub(r' (copyright|modelVersion)="[^"]*Software AG[^"]*"', "", text)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


# ---------------------------------------------------------------- tree paths

_NEG = {"lessOrEqual": "greaterThan", "lessThan": "greaterOrEqual", "greaterThan": "lessOrEqual",
        "greaterOrEqual": "lessThan", "equal": "notEqual", "notEqual": "equal",
        "isMissing": "isNotMissing", "isNotMissing": "isMissing"}


def _simple(p):
    return (p.get("field"), p.get("operator"), p.get("value"))


def _own_constraints(pred):
    """Constraints implied by a Node predicate being true; None when not expressible."""
    k = local(pred.tag)
    if k == "True":
        return []
    if k == "SimplePredicate":
        return [_simple(pred)]
    if k == "CompoundPredicate" and pred.get("booleanOperator") == "and":
        parts = [c for c in pred if local(c.tag) != "Extension"]
        if all(local(c.tag) == "SimplePredicate" for c in parts):
            return [_simple(c) for c in parts]
    return None


def tree_split_paths(path: str):
    """For every SimplePredicate that is a TreeModel Node predicate: (constraints that lead to the
    node's parent and rule out earlier siblings, (field, operator, value))."""
    root = ET.parse(path).getroot()
    out = []

    def walk(node, cons):
        prev = []
        for ch in node:
            if local(ch.tag) != "Node":
                continue
            pred = next((c for c in ch if local(c.tag) in (
                "SimplePredicate", "CompoundPredicate", "SimpleSetPredicate", "True", "False")), None)
            if pred is None:
                continue
            neg = []
            for p in prev:
                if p is not None and len(p) == 1 and p[0][1] in _NEG:
                    neg.append((p[0][0], _NEG[p[0][1]], p[0][2]))
            here = cons + neg
            own = _own_constraints(pred)
            if local(pred.tag) == "SimplePredicate" and pred.get("value") is not None:
                out.append((here, _simple(pred)))
            walk(ch, here + (own or []))
            prev.append(own)

    for tm in root.iter():
        if local(tm.tag) == "TreeModel":
            top = next((c for c in tm if local(c.tag) == "Node"), None)
            if top is not None:
                own = _own_constraints(next((c for c in top if local(c.tag) in (
                    "SimplePredicate", "CompoundPredicate", "SimpleSetPredicate", "True", "False")), top))
                # the root node's predicate itself may be a split too
                walk(top, own or [])
    return out


def satisfy(row: dict, constraints, fields_dtype: dict):
    """Adjust a row (field -> text) so that it satisfies the constraints (best effort)."""
    row = dict(row)
    by_field = {}
    for f, op, v in constraints:
        by_field.setdefault(f, []).append((op, v))
    for f, cs in by_field.items():
        if f not in fields_dtype:
            return None  # constraint on a derived field: cannot steer
        numeric = fields_dtype[f] in ("double", "float", "integer")
        for op, v in cs:
            if op == "isMissing":
                row[f] = None
            elif op == "equal":
                row[f] = v
        if any(op == "isMissing" for op, _ in cs) or any(op == "equal" for op, _ in cs):
            continue
        if not numeric:
            if any(op == "notEqual" and row.get(f) == v for op, v in cs):
                return None
            continue
        lo, hi, lo_strict, hi_strict = -math.inf, math.inf, False, False
        for op, v in cs:
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            if op in ("lessOrEqual", "lessThan") and x <= hi:
                hi, hi_strict = x, op == "lessThan" or (x == hi and hi_strict)
            elif op in ("greaterOrEqual", "greaterThan") and x >= lo:
                lo, lo_strict = x, op == "greaterThan" or (x == lo and lo_strict)

        def ok(x):
            return (x > lo if lo_strict else x >= lo) and (x < hi if hi_strict else x <= hi)
        try:
            cur = float(row.get(f))
        except (TypeError, ValueError):
            cur = None
        if cur is not None and math.isfinite(cur) and ok(cur):
            continue
        if math.isfinite(lo) and math.isfinite(hi):
            x = (lo + hi) / 2
        elif math.isfinite(lo):
            x = lo + max(1.0, abs(lo) * 0.1)
        elif math.isfinite(hi):
            x = hi - max(1.0, abs(hi) * 0.1)
        else:
            continue
        if fields_dtype[f] == "integer":
            x = math.floor(x) if math.isfinite(hi) and not math.isfinite(lo) else math.ceil(x)
            if not ok(x):
                return None
            row[f] = str(int(x))
        else:
            if fields_dtype[f] == "float":
                x = float(np.float32(x))
            if not ok(x):
                return None
            row[f] = repr(x)
    return row

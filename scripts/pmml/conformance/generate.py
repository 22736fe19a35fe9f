#!/usr/bin/env python3
"""Build the PMML conformance fixtures and record JPMML-Evaluator's results.

Usage (from the repository root, inside the venv; see README.md):
    python scripts/pmml/conformance/generate.py [--only SUBSTRING ...] [--out DIR]

For every case: build model.pmml (train + export, or write the hand-written document), build the
input rows (base rows + edge rows), evaluate each row with JPMML-Evaluator (jpmml_evaluator
package) and write input.csv / expected.jsonl. Finally write manifest.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import (MAX_ROWS, fmt, pmml_boundary_values, pmml_model_elements,  # noqa: E402
                    pmml_model_type, satisfy, tree_split_paths)

REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "pmml", "tests", "fixtures", "conformance")

MAX_THRESHOLD_ROWS = 30  # boundary values; each gives up to 2 rows


def jvalue(v):
    """Convert one JPMML result value to a JSON value."""
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return [jvalue(x) for x in v]
    # numpy scalars or anything else JPMML's pickler hands back
    try:
        import numpy as np
        if isinstance(v, np.generic):
            return jvalue(v.item())
    except Exception:
        pass
    return str(v)


def near_value(text, dtype):
    """A value just above a threshold: for a float field, a double that is larger than the
    threshold but rounds to the same 32-bit float (so float and double comparisons disagree);
    for a double field, the next representable double."""
    import numpy as np
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    if dtype == "float":
        f = np.float32(v)
        for eps in (1e-9, 1e-10, 1e-12):
            cand = v + (abs(v) * eps if v != 0 else 1e-46)
            if cand > v and np.float32(cand) == f:
                return repr(cand)
        return None
    if dtype == "double":
        return repr(float(np.nextafter(v, math.inf)))
    return None


def edge_rows(case, fields, pmml_path, base):
    """Generic edge rows. fields: list of (name, dataType, opType). base: list of row dicts."""
    rows = []
    names = [f[0] for f in fields]
    if not base:
        base = [{n: None for n in names}]

    def from_base(i, **over):
        r = dict(base[i % len(base)])
        r.update(over)
        return r

    # all inputs missing
    rows.append({n: None for n in names})
    # each input missing in turn
    for i, n in enumerate(names[:12]):
        rows.append(from_base(i, **{n: None}))
    # unseen categories
    for i, (n, dt, op) in enumerate(fields):
        if op in ("categorical", "ordinal") or dt == "string":
            rows.append(from_base(i + 1, **{n: "__unseen__"}))
    # outliers on continuous fields
    cont = [(n, dt) for (n, dt, op) in fields if op == "continuous" and dt in ("double", "float", "integer")]
    for i, (n, dt) in enumerate(cont[:8]):
        vals = []
        for r in base:
            try:
                vals.append(float(r[n]))
            except (TypeError, ValueError):
                pass
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        span = (hi - lo) or 1.0
        if dt == "integer":
            rows.append(from_base(i + 2, **{n: str(int(hi + 10 * span))}))
            rows.append(from_base(i + 3, **{n: str(int(lo - 10 * span))}))
        else:
            rows.append(from_base(i + 2, **{n: fmt(hi + 10 * span)}))
            rows.append(from_base(i + 3, **{n: fmt(lo - 10 * span)}))
    # values exactly on split thresholds / interval margins / normalisation knots, and just above
    # them. For a TreeModel split the row is steered (best effort) along the path to the split.
    dtypes = {f[0]: f[1] for f in fields}
    steered = []
    for cons, (n, op, v) in tree_split_paths(pmml_path):
        if n not in dtypes:
            continue
        for j in range(3):
            r = satisfy(base[(len(steered) + j) % len(base)], cons, dtypes)
            if r is not None:
                steered.append((r, n, v))
                break
    seen = {(n, v) for _, n, v in steered}
    bounds = [(None, n, v) for (n, v) in pmml_boundary_values(pmml_path, set(names)) if (n, v) not in seen]
    bounds = steered + bounds
    if len(bounds) > MAX_THRESHOLD_ROWS:
        step = len(bounds) / MAX_THRESHOLD_ROWS
        bounds = [bounds[int(k * step)] for k in range(MAX_THRESHOLD_ROWS)]
    for i, (r, n, v) in enumerate(bounds):
        r = dict(r) if r is not None else from_base(i + 4)
        rows.append(dict(r, **{n: v}))
        near = near_value(v, dtypes.get(n))
        if near is not None:
            rows.append(dict(r, **{n: near}))
    # one invalid (non-numeric) value for a continuous field
    if cont:
        rows.append(from_base(5, **{cont[0][0]: "not_a_number"}))
    return rows


DEFAULT_TARGET_KEY = "__default_target__"


def record(evaluator, fields, rows, target_names, output_names):
    # A model without a target field (e.g. clustering) has JPMML's "default target" whose name is
    # Java null; JSON keys must be strings, so it is written as DEFAULT_TARGET_KEY.
    target_names = [DEFAULT_TARGET_KEY if (t is None or t == "None") else t for t in target_names]
    results = []
    for r in rows:
        args = {n: r.get(n) for n in fields}
        try:
            res = evaluator.evaluate(dict(args))
        except Exception as e:  # JavaError: "className: message"
            msg = str(e)
            results.append({"__error__": msg})
            continue
        res = dict(res)
        if None in res:
            res[DEFAULT_TARGET_KEY] = res.pop(None)
        obj = {}
        for k in target_names + output_names:
            obj[k] = jvalue(res.get(k))
        for k, v in res.items():
            if k not in obj:
                obj[k] = jvalue(v)
        results.append(obj)
    return results


def run_case(case, out_dir, make_evaluator):
    cdir = os.path.join(out_dir, case.name)
    tmp = cdir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    pmml_path = os.path.join(tmp, "model.pmml")
    case.build(pmml_path)

    ev = make_evaluator(pmml_path).verify()
    fields = [(f.getName(), f.getDataType(), f.getOpType()) for f in ev.getInputFields()]
    names = [f[0] for f in fields]
    target_names = [DEFAULT_TARGET_KEY if f.getName() in (None, "None") else f.getName() for f in ev.getTargetFields()]
    output_names = [f.getName() for f in ev.getOutputFields()]

    base = []
    for _, rec in case.rows.iterrows():
        base.append({n: (fmt(rec[n]) if n in rec.index else None) for n in names})
    extra = [{n: (None if r.get(n) is None else str(r.get(n))) for n in names} for r in case.extra_rows]
    edges = edge_rows(case, fields, pmml_path, base) if case.generic_edges else []
    budget = MAX_ROWS - len(extra) - len(edges)
    rows = base[:max(budget, 0)] + extra + edges
    rows = rows[:MAX_ROWS]
    # input.csv cannot tell an empty string from a missing value: an empty cell is missing, so
    # JPMML must see it as missing too.
    rows = [{n: (None if r.get(n) in (None, "") else r.get(n)) for n in names} for r in rows]

    results = record(ev, names, rows, target_names, output_names)

    with open(os.path.join(tmp, "input.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(names)
        for r in rows:
            w.writerow(["" if r[n] is None else r[n] for n in names])
    with open(os.path.join(tmp, "expected.jsonl"), "w", encoding="utf-8") as fh:
        for obj in results:
            fh.write(json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n")

    shutil.rmtree(cdir, ignore_errors=True)
    os.rename(tmp, cdir)
    pmml_path = os.path.join(cdir, "model.pmml")
    errors = [o["__error__"] for o in results if "__error__" in o]
    err_kinds = sorted({e.split(":", 1)[0] for e in errors})
    return {
        "name": case.name,
        "model_type": pmml_model_type(pmml_path),
        "model_elements": pmml_model_elements(pmml_path),
        "source": case.source,
        "dataset": case.dataset,
        "notes": case.notes,
        "rows": len(rows),
        "error_rows": len(errors),
        "error_kinds": err_kinds,
        "inputs": [{"name": n, "dataType": dt, "opType": op} for (n, dt, op) in fields],
        "targets": target_names,
        "outputs": output_names,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*", help="only cases whose name contains one of these")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--no-handwritten", action="store_true")
    args = ap.parse_args()

    from jpmml_evaluator import make_evaluator

    import handwritten_cases
    import sklearn_cases

    cases = []
    if not args.no_sklearn:
        cases += sklearn_cases.cases()
    if not args.no_handwritten:
        cases += handwritten_cases.cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    if args.only:
        cases = [c for c in cases if any(s in c.name for s in args.only)]

    os.makedirs(args.out, exist_ok=True)
    manifest_path = os.path.join(args.out, "manifest.json")
    old = {}
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as fh:
            for e in json.load(fh).get("cases", []):
                old[e["name"]] = e

    entries, failed = dict(old), []
    if not args.only and not args.no_sklearn and not args.no_handwritten:
        entries = {}
    for c in cases:
        t0 = time.time()
        try:
            entries[c.name] = run_case(c, args.out, make_evaluator)
            e = entries[c.name]
            print("%-45s %-40s rows=%3d errors=%3d  %.1fs" % (c.name, e["model_type"][:40], e["rows"], e["error_rows"], time.time() - t0), flush=True)
        except Exception as ex:
            failed.append((c.name, "%s: %s" % (type(ex).__name__, str(ex).splitlines()[0] if str(ex) else "")))
            print("FAILED %s: %s" % (c.name, ex), flush=True)
            traceback.print_exc(limit=3)
            shutil.rmtree(os.path.join(args.out, c.name + ".tmp"), ignore_errors=True)

    # drop stale case directories on a full run
    if not args.only and not args.no_sklearn and not args.no_handwritten:
        for d in os.listdir(args.out):
            p = os.path.join(args.out, d)
            if os.path.isdir(p) and d not in entries:
                shutil.rmtree(p)

    versions = {}
    try:
        from importlib.metadata import version
        for p in ("scikit-learn", "sklearn2pmml", "nyoka", "jpmml_evaluator", "numpy", "pandas", "scipy", "JPype1"):
            try:
                versions[p] = version(p)
            except Exception:
                pass
    except Exception:
        pass
    import jpmml_evaluator
    jars = sorted(f for f in os.listdir(os.path.join(os.path.dirname(jpmml_evaluator.__file__), "dependencies")) if f.startswith("pmml-evaluator-"))
    versions["jpmml-evaluator jars"] = jars
    ordered = [entries[k] for k in sorted(entries)]
    manifest = {
        "format": "flowstage PMML conformance fixtures v1 (see README.md)",
        "generator": "scripts/pmml/conformance/generate.py",
        "versions": versions,
        "case_count": len(ordered),
        "row_count": sum(e["rows"] for e in ordered),
        "cases": ordered,
    }
    with open(manifest_path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print("\n%d cases, %d rows written to %s" % (len(ordered), manifest["row_count"], args.out))
    if failed:
        print("FAILED cases (%d):" % len(failed))
        for n, m in failed:
            print("  %s: %s" % (n, m))
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Record JPMML-Evaluator's outputs for the seven wine tutorial models.

Reads the read-only reference data in ../shared/data/wine (relative to the repo root), scores all
rows of winequality_red.csv with every *.pmml model there using the `jpmml_evaluator` package
(JPMML-Evaluator 1.7.x on the local Java runtime) and writes one JSON-lines file per model to
pmml/tests/fixtures/wine/<model>.expected.jsonl.

Each line is a JSON object: {"row": <0-based row index>, "<field>": <value>, ...} holding the
target field(s) and every OutputField exactly as JPMML returned them; a missing result is `null`,
an evaluation error is recorded as {"row": i, "error": "<java message>"}.
Only outputs are committed; the PMML files and the CSV stay in ../shared.

Usage (from the repo root):
    python3 -m venv .venv && .venv/bin/pip install -r scripts/pmml/requirements.txt
    .venv/bin/python scripts/pmml/record_wine_fixtures.py [--wine-dir ../shared/data/wine]
"""

import argparse
import json
import math
import sys
from pathlib import Path

import pandas
from jpmml_evaluator import make_evaluator

COLUMNS = [
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
    "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
    "quality",
]

REPO = Path(__file__).resolve().parents[2]


def to_json_value(value):
    """Map a pandas/numpy cell to a JSON value; NaN/None -> null (missing)."""
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wine-dir", default=str(REPO.parent / "shared" / "data" / "wine"))
    parser.add_argument("--out-dir", default=str(REPO / "pmml" / "tests" / "fixtures" / "wine"))
    args = parser.parse_args()

    wine_dir = Path(args.wine_dir)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Read every column as a string, exactly as written in the CSV, and hand JPMML the text:
    # it parses the values itself, as flowstage-pmml's test does from the same text.
    data = pandas.read_csv(wine_dir / "winequality_red.csv", sep=";", header=None, names=COLUMNS, dtype=str)
    models = sorted(wine_dir.glob("*.pmml"))
    if not models:
        sys.exit(f"no PMML files in {wine_dir}")

    for pmml in models:
        evaluator = make_evaluator(str(pmml)).verify()
        inputs = [f.getName() for f in evaluator.getInputFields()]
        arguments = data[inputs]
        fields = [f.getName() for f in evaluator.getTargetFields()] + [f.getName() for f in evaluator.getOutputFields()]
        results = evaluator.evaluateAll(arguments)
        out = out_dir / (pmml.stem + ".expected.jsonl")
        with out.open("w", encoding="utf-8") as fh:
            for i in range(len(arguments)):
                row = {"row": i}
                error = results["errors"].iloc[i] if "errors" in results.columns else None
                if error is not None and isinstance(error, str) and error not in ("", "nan", "None"):
                    row["error"] = error
                else:
                    for name in fields:
                        row[name] = to_json_value(results[name].iloc[i])
                fh.write(json.dumps(row, allow_nan=False) + "\n")
        print(f"{pmml.name}: {len(arguments)} rows, fields {fields} -> {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()

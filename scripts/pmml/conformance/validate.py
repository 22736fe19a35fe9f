#!/usr/bin/env python3
"""Check the committed conformance fixtures for format errors (stdlib only, no venv needed).

    python3 scripts/pmml/conformance/validate.py [DIR]

Checks: manifest <-> directories, the three files per case, CSV header == manifest inputs,
row counts match, every expected line is strict JSON (no NaN/Infinity literals) and an object,
keys = targets + outputs (or a lone __error__), <= 200 rows, total size.
"""
import csv
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "..", "pmml", "tests", "fixtures", "conformance")


def strict(s):
    def bad(c):
        raise ValueError("non-standard JSON constant %s" % c)
    return json.loads(s, parse_constant=bad)


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
    problems = []
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    names = [c["name"] for c in manifest["cases"]]
    dirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if sorted(names) != dirs:
        problems.append("manifest cases != directories: %s" % sorted(set(names) ^ set(dirs)))
    total_rows = 0
    for c in manifest["cases"]:
        d = os.path.join(root, c["name"])
        for f in ("model.pmml", "input.csv", "expected.jsonl"):
            if not os.path.isfile(os.path.join(d, f)):
                problems.append("%s: missing %s" % (c["name"], f))
        try:
            with open(os.path.join(d, "input.csv"), newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
            with open(os.path.join(d, "expected.jsonl"), encoding="utf-8") as fh:
                lines = [l for l in fh.read().split("\n") if l]
        except OSError:
            continue
        header, data = rows[0], rows[1:]
        if header != [i["name"] for i in c["inputs"]]:
            problems.append("%s: CSV header != manifest inputs" % c["name"])
        if any(len(r) != len(header) for r in data):
            problems.append("%s: ragged CSV row" % c["name"])
        if len(data) != len(lines) or len(data) != c["rows"]:
            problems.append("%s: %d input rows, %d expected lines, manifest %d" % (c["name"], len(data), len(lines), c["rows"]))
        if len(data) > 200:
            problems.append("%s: more than 200 rows" % c["name"])
        keys = c["targets"] + [o for o in c["outputs"] if o not in c["targets"]]
        keys = ["__default_target__" if k in (None, "None") else k for k in keys]
        errors = 0
        for i, line in enumerate(lines):
            try:
                obj = strict(line)
            except ValueError as e:
                problems.append("%s line %d: %s" % (c["name"], i + 1, e))
                continue
            if not isinstance(obj, dict):
                problems.append("%s line %d: not an object" % (c["name"], i + 1))
            elif "__error__" in obj:
                errors += 1
                if list(obj) != ["__error__"] or not isinstance(obj["__error__"], str):
                    problems.append("%s line %d: bad error object" % (c["name"], i + 1))
            elif list(obj)[:len(keys)] != keys:
                problems.append("%s line %d: keys %s != %s" % (c["name"], i + 1, list(obj), keys))
        if errors != c["error_rows"]:
            problems.append("%s: %d error rows, manifest %d" % (c["name"], errors, c["error_rows"]))
        total_rows += len(data)
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs)
    if size > 15 * 1024 * 1024:
        problems.append("fixtures are %.1f MB (> 15 MB)" % (size / 1e6))
    for p in problems:
        print("PROBLEM:", p)
    print("%d cases, %d rows, %.1f MB: %s" % (len(names), total_rows, size / 1e6, "OK" if not problems else "%d problems" % len(problems)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

"""CI helper: two `hf-iqa score` CSVs have the same rows and every score within 1e-4.
Usage: python .ci/compare_scores.py EXPECTED.csv ACTUAL.csv (standard library only: runs in the torch-free venv)."""

from __future__ import annotations

import csv
import sys

expected, actual = ({row["path"]: row for row in csv.DictReader(open(path))} for path in sys.argv[1:3])
assert expected.keys() == actual.keys() and expected, (sorted(expected), sorted(actual))
worst = max(abs(float(expected[key]["score"]) - float(actual[key]["score"])) for key in expected)
print(f"{len(expected)} images, max |score difference| {worst:.2e}")
sys.exit(0 if worst <= 1e-4 else 1)

"""The documented file contracts (docs/*.md) name exactly the columns the code writes."""
import os
import re

import pytest

from pie.analysis import per_class, pie_labels, robustness, subgroups
from pie.io import records

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def documented_columns(doc, file_name):
    """Backticked names in the first cell of the table under the heading naming the file."""
    text = open(os.path.join(DOCS, doc)).read()
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    matching = [s for s in sections if file_name in s.splitlines()[0]]
    assert matching, f"{doc} has no section headed with {file_name}"
    columns = []
    for line in matching[0].splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2 and "---" not in line:
            columns += re.findall(r"`([a-z_0-9]+)`", cells[1])
    return columns


@pytest.mark.parametrize("doc, file_name, columns, exact", [
    ("contracts.md", "population.csv", records.MANIFEST_COLUMNS, False),
    ("contracts.md", "<member_id>.parquet", records.PREDICTION_COLUMNS, False),
    ("analysis.md", "per_class_metrics.csv", per_class.METRICS_COLUMNS, True),
    ("analysis.md", "tstatistic.csv", per_class.TSTATISTIC_COLUMNS, True),
    ("analysis.md", "tstatistic_summary.csv", per_class.SUMMARY_COLUMNS, True),
    ("analysis.md", "pie/pie.csv", pie_labels.PIE_COLUMNS, True),
    ("analysis.md", "pie_summary.csv", pie_labels.SUMMARY_COLUMNS, True),
])
def test_documented_columns_match_the_writers(doc, file_name, columns, exact):
    documented = documented_columns(doc, file_name)
    if exact:
        assert documented == list(columns)
    else:  # the contract documents optional columns after the fixed ones
        assert documented[:len(columns)] == list(columns)


def test_robustness_and_subgroup_columns_are_documented():
    text = open(os.path.join(DOCS, "robustness.md")).read()
    for column in (robustness.ACCURACY_COLUMNS + robustness.EXCESS_ERROR_COLUMNS
                   + robustness.PRUNE_POTENTIAL_COLUMNS
                   + robustness.PRUNE_POTENTIAL_SUMMARY_COLUMNS):
        assert f"`{column}`" in text, column
    text = open(os.path.join(DOCS, "subgroups.md")).read()
    for column in subgroups.SUBGROUP_COLUMNS:
        assert f"`{column}`" in text, column

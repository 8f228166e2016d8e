"""Logs a person can follow (issue 25.9): lines say only what happened, names from
`{seed}` patterns are clean, log axes read as numbers, docs link inside the repository."""
import os
import re

import matplotlib
import pytest

from conftest import ROOT
from pie.compress import pruning
from pie.models import imported
from pie.stages import toy_plots


def test_data_free_methods_name_no_reference_images():
    assert pruning.removed_line("magnitude_0.5_seed0", "magnitude", 0.5, 80) == (
        "magnitude_0.5_seed0: magnitude removed 0.5000 of the weights")
    assert pruning.removed_line("wt_0.5_seed0", "wt", 0.5, 80) == (
        "wt_0.5_seed0: wt removed 0.5000 of the weights")
    assert pruning.removed_line("sipp_0.5_seed0", "sipp", 0.5, 80) == (
        "sipp_0.5_seed0: sipp removed 0.5000 of the weights (scored on 80 reference images)")


@pytest.mark.parametrize("path, label", [
    ("models/net_seed{seed}.keras", "init-net_seed.keras"),
    ("net_{seed}_final.keras", "init-net__final.keras"),
    ("{seed}.keras", "init-seeds.keras"),
    ("my model.keras", "init-my_model.keras"),
])
def test_member_model_names_from_seed_patterns_are_clean(path, label):
    assert imported.model_label("init", path) == label


def test_log_axis_ticks_are_plain_numbers():
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots()
    axis.plot([1, 3, 10, 30, 100], [0.5, 0.6, 0.7, 0.8, 0.9])
    toy_plots.plain_log_axis(axis)
    figure.canvas.draw()
    labels = [label.get_text() for label in axis.get_xticklabels() if label.get_text()]
    plt.close(figure)
    assert matplotlib.rcParams["text.parse_math"] is False  # why the default labels fail
    assert {"1", "10", "100"} <= set(labels)
    assert all(float(label) > 0 for label in labels)


def _doc_files():
    folder = os.path.join(ROOT, "docs")
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))
            if name.endswith(".md")]


@pytest.mark.parametrize("path", _doc_files(), ids=os.path.basename)
def test_docs_link_only_to_files_in_the_repository(path):
    with open(path) as handle:
        text = handle.read()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    targets = [link for link in links if not re.match(r"[a-z]+://", link)]
    # Markdown files named in backquotes are links a reader follows too (not the
    # files a stage writes into a workdir: W/..., runs/<study>/..., <out>/...).
    targets += [name for name in re.findall(r"`([^`\s<]*\.md)`", text)
                if not name.startswith(("W/", "runs/"))]
    for target in targets:
        here = os.path.normpath(os.path.join(os.path.dirname(path), target))
        at_root = os.path.normpath(os.path.join(ROOT, target))
        assert here.startswith(ROOT) and (os.path.exists(here) or os.path.exists(at_root)), \
            f"{os.path.basename(path)} links to {target}, not a file of the repository"

"""pie.data.mnist5k_groups: image-property groups (stroke, width), from the package."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import ROOT
from pie.data import mnist5k_groups, sources


def test_groups_split_at_the_median_ink_and_box_width():
    images = np.zeros((4, 5, 6, 1), np.uint8)
    images[0, :, 2, 0] = 255          # one inked column
    images[1, :, 1:5, 0] = 255        # four
    images[2, 0, 0:6, 0] = 255        # six, one row
    images[3, :, 3, 0] = 40           # faint: below the ink threshold, no box
    groups = mnist5k_groups.image_groups(images, [7, 8, 9, 10])
    intensity = images[..., 0].mean(axis=(1, 2))
    widths = np.array([1, 4, 6, 0])
    assert list(groups.columns) == ["image_id", "stroke", "width"]
    assert groups["image_id"].tolist() == [7, 8, 9, 10]
    assert groups["stroke"].tolist() == [
        "thick" if value > np.median(intensity) else "thin" for value in intensity]
    assert groups["width"].tolist() == [
        "wide" if value > np.median(widths) else "narrow" for value in widths]


def test_it_runs_from_any_folder_with_the_package(tiny_population, tmp_path):
    """The study runs it as a module of the package: no path relative to the repository
    (PYTHONPATH: this checkout, which is what an install of it holds)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "pie.data.mnist5k_groups", f"--workdir={tiny_population}",
         "--output=groups.csv"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    written = pd.read_csv(tmp_path / "groups.csv")
    images, _, ids = sources.load_for_workdir(tiny_population).eval_arrays()
    expected = mnist5k_groups.image_groups(images, ids)
    pd.testing.assert_frame_equal(written, expected)

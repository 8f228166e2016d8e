r"""A groups file for a population's eval images, from properties of the images.

  python examples/make_mnist5k_groups.py --workdir=W [--output=W/groups.csv]

Writes `image_id` and two attributes per eval image (see examples/groups_mnist5k.md):

  stroke  `thick` when the image's mean pixel intensity is above the median over the
          eval images, else `thin` (more ink per image ~ thicker strokes)
  width   `wide` when the digit's bounding box (columns with a pixel above
          INK_THRESHOLD) is wider than the median box, else `narrow`

The file feeds `python -m per_class_accuracy.subgroups --workdir=W --groups_csv=...`.
"""
import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import pie  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.data import sources
from pie.io import cli, records  # noqa: E402

INK_THRESHOLD = 64  # of 255: faint anti-aliasing pixels do not widen the box

flags.DEFINE_string("workdir", None, "Workdir of the population (its dataset.json).")
flags.DEFINE_string("output", None, "Groups CSV to write (default W/groups.csv).")
FLAGS = flags.FLAGS


def image_groups(images, image_ids):
    """The groups frame: image_id, stroke (thick/thin), width (wide/narrow)."""
    pixels = images.reshape(len(images), images.shape[1], images.shape[2], -1).max(axis=-1)
    intensity = pixels.mean(axis=(1, 2))
    ink_columns = (pixels > INK_THRESHOLD).any(axis=1)  # (n, width)
    has_ink = ink_columns.any(axis=1)
    first = ink_columns.argmax(axis=1)
    last = ink_columns.shape[1] - 1 - ink_columns[:, ::-1].argmax(axis=1)
    box_width = np.where(has_ink, last - first + 1, 0)
    return pd.DataFrame({
        "image_id": np.asarray(image_ids, np.int64),
        "stroke": np.where(intensity > np.median(intensity), "thick", "thin"),
        "width": np.where(box_width > np.median(box_width), "wide", "narrow"),
    })


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise cli.UsageError("--workdir is required")
    source = sources.load_for_workdir(FLAGS.workdir)
    if source.family == "toy":
        raise cli.UsageError(f"dataset '{source.name}' has points, not images")
    images, _, image_ids = source.eval_arrays()
    groups = image_groups(images, image_ids)
    output = FLAGS.output or os.path.join(FLAGS.workdir, "groups.csv")
    records.write_csv(output, groups)
    counts = ", ".join(f"{name}={count}" for name, count in pd.concat(
        [groups["stroke"], groups["width"]]).value_counts().sort_index().items())
    print(f"wrote {output}: {len(groups)} images ({counts})", flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main)

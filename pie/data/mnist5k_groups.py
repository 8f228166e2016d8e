r"""A groups file for a population's eval images, from properties of the images.

  python -m pie.data.mnist5k_groups --workdir=W [--output=W/groups.csv]

Writes `image_id` and two attributes per eval image (see examples/groups_mnist5k.md):

  stroke  `thick` when the image's mean pixel intensity is above the median over the
          eval images, else `thin` (more ink per image ~ thicker strokes)
  width   `wide` when the digit's bounding box (columns with a pixel above
          INK_THRESHOLD) is wider than the median box, else `narrow`

The file feeds `python -m per_class_accuracy.subgroups --workdir=W --groups_csv=...`;
the study (pie.stages.study) makes it for mnist5k when no groups are given. It is
part of the package, so it runs from any current folder.
"""
import numpy as np
import pandas as pd
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import cli, records
from pie.io.workdir import Workdir

INK_THRESHOLD = 64  # of 255: faint anti-aliasing pixels do not widen the box
FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    flags.DEFINE_string("workdir", None, "Workdir of the population (its dataset.json).",
                        flag_values=flag_values)
    flags.DEFINE_string("output", None, "Groups CSV to write (default W/groups.csv).",
                        flag_values=flag_values)


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
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    from pie.data import sources
    if not settings.workdir:
        raise cli.UsageError("--workdir is required")
    source = sources.load_for_workdir(settings.workdir)
    if source.family == "toy":
        raise cli.UsageError(f"dataset '{source.name}' has points, not images")
    images, _, image_ids = source.eval_arrays()
    groups = image_groups(images, image_ids)
    output = settings.output or Workdir(settings.workdir).file("groups")
    records.write_csv(output, groups)
    counts = ", ".join(f"{name}={count}" for name, count in pd.concat(
        [groups["stroke"], groups["width"]]).value_counts().sort_index().items())
    print(f"wrote {output}: {len(groups)} images ({counts})", flush=True)
    return 0


# The Python API: run(workdir="W", output=...) (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

r"""Predictions of every population member on the eval split, once.

  python -m pie_dataset_gen.predictions --workdir=W [--split=test] [--shard=i/n]

Writes `W/predictions/<split>/clean/<member_id>.parquet` per manifest member (see
docs/contracts.md). Every later analysis derives from these files, so no stage
runs a model twice. A rerun skips members whose file exists. `--shard=i/n` runs
manifest members i, i+n, ... only (pie.io.shards); n shards may run at once.
"""


import numpy as np

from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import cli, records, shards
from pie.io.progress import Progress
from pie.models import predict

FLAGS = flags.FLAGS
SPLITS = ("test",)


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    flags.DEFINE_string("workdir", None, "Workdir holding population.csv.",
                        flag_values=flag_values)
    flags.DEFINE_enum("split", "test", SPLITS, "Eval split (the dataset's test or validation).",
                      flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 256, "Images per model call.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None,
                        "tensorflow-datasets folder, if not the one trained with.",
                        flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Recompute members whose predictions exist.",
                      flag_values=flag_values)
    shards.define_flag(flag_values)

# Keep the eval inputs in memory (and run every member on the same array) below this.
IN_MEMORY_BYTES = 2 << 30


def eval_inputs(source, batch_size):
    """(inputs, labels, image_ids) of the eval split, or None when it is too large."""
    if source.eval_size is None:
        return None
    per_image = 4 * int(np.prod(source.input_shape))
    if per_image * source.eval_size > IN_MEMORY_BYTES:
        return None
    inputs, labels, ids = [], [], []
    for batch in source.eval_batches(batch_size).as_numpy_iterator():
        inputs.append(batch["inputs"])
        labels.append(batch["label"])
        ids.append(batch["image_id"])
    return np.concatenate(inputs), np.concatenate(labels), np.concatenate(ids)


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    cli.require_workdir(settings.workdir)
    if settings.batch_size < 2:
        raise cli.UsageError(f"--batch_size must be at least 2, got {settings.batch_size}")
    shard = shards.parse(settings.shard)
    manifest = records.read_manifest(settings.workdir)
    predict.check_model_files(settings.workdir, manifest)
    mine = shards.select(manifest.to_dict("records"), shard)
    todo = [row for row in mine
            if settings.force or predict.needs_predictions(settings.workdir, row, split=settings.split)]
    print(f"predictions: {len(mine)} members{shards.describe(shard)}, "
          f"{len(mine) - len(todo)} done, {len(todo)} to run", flush=True)
    if not todo:
        return 0
    # TensorFlow loads here, with the data (about 4 s of CPU): not in a study's rerun,
    # where quantize and training have written every member's predictions already.
    from pie.data import sources
    source = sources.load_for_workdir(settings.workdir, data_dir=settings.data_dir)
    arrays = eval_inputs(source, settings.batch_size)
    members = ((row["member_id"], predict.load_member(settings.workdir, row)) for row in todo)
    predict.predict_members(settings.workdir, members, source, arrays, settings.batch_size, settings.split,
                    Progress(len(todo), "members"))
    return 0


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

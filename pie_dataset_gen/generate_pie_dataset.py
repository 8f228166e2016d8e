r"""Write the PIE and non-PIE images of every variant as sharded TFRecords.

  python -m pie_dataset_gen.generate_pie_dataset --workdir=W

Reads `W/pie/pie.csv` (pie_dataset_gen.aggregate_predictions) and the eval images,
and writes per variant `W/pie/tfrecords/<method>_<sparsity>/{pie,non_pie}/` with
`<subset>-00000-of-0000N.tfrecord` shards, a `dataset_info.json` so the folder
reads back as `--dataset=tfrecord:<folder>`, and `counts.json` per variant.
A variant's folder appears whole or not at all (written aside, then renamed).
"""
import os
import shutil
import sys

from absl import flags
import numpy as np
import pandas as pd

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.analysis import pie_labels
from pie.data import sources
from pie.io import cli, records
from pie.io.workdir import Workdir
from pie.io.progress import Progress

FLAGS = flags.FLAGS
SUBSETS = {"pie": True, "non_pie": False}
COUNTS_NAME = "counts.json"


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    flags.DEFINE_string("workdir", None, "Workdir with pie/pie.csv.", flag_values=flag_values)
    flags.DEFINE_integer("shard_size", 1024, "Images per TFRecord shard.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None,
                        "tensorflow-datasets folder, if not the one trained with.",
                        flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Rewrite variants that exist.", flag_values=flag_values)


def _int_feature(values):
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _float_feature(values):
    import tensorflow as tf
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _bytes_feature(value):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def example(image_png, row):
    """One tf.train.Example with the image and its PIE facts."""
    import tensorflow as tf
    feature = {
        "image/encoded": _bytes_feature(image_png),
        "image/format": _bytes_feature(b"png"),
        "image/class/label": _int_feature([row["label"]]),
        "image_id": _int_feature([row["image_id"]]),
        "pruning_fraction": _float_feature([row["sparsity"]]),
        "baseline_modal_label": _int_feature([row["baseline_modal_label"]]),
        "variant_modal_label": _int_feature([row["variant_modal_label"]]),
        "baseline_n": _int_feature([row["baseline_n"]]),
        "variant_n": _int_feature([row["variant_n"]]),
        "baseline_mean_prob": _float_feature([row["baseline_mean_prob"]]),
        "variant_mean_prob": _float_feature([row["variant_mean_prob"]]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_subset(folder, name, images, rows, source, shard_size):
    """Shards of one subset plus the dataset_info.json the tfrecord: loader reads."""
    import tensorflow as tf
    os.makedirs(folder)
    shards = max(1, -(-len(rows) // shard_size))
    for shard in range(shards):
        part = slice(shard * shard_size, (shard + 1) * shard_size)
        path = os.path.join(folder, f"{name}-{shard:05d}-of-{shards:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for image, row in zip(images[part], rows[part]):
                writer.write(example(tf.io.encode_png(image).numpy(), row))
    records.write_json(os.path.join(folder, sources.TFRECORD_INFO), {
        "num_examples": len(rows), "num_classes": source.num_classes,
        "class_names": list(source.class_names), "family": source.family})


def write_variant(out_dir, variant_rows, images, position, source, shard_size, fingerprint):
    """Both subsets of one variant, written aside and renamed into place."""
    staging = out_dir + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    counts = {"n_images": int(len(variant_rows)), "pie_table": fingerprint}
    for subset, flag in SUBSETS.items():
        chosen = variant_rows[variant_rows["is_pie"].astype(bool) == flag]
        order = position[chosen["image_id"].to_numpy()]
        write_subset(os.path.join(staging, subset), subset, images[order],
                     chosen.to_dict("records"), source, shard_size)
        counts[f"n_{subset}"] = int(len(chosen))
        counts[f"{subset}_per_class"] = {
            str(k): int(v) for k, v in chosen["label"].value_counts().sort_index().items()}
    records.write_json(os.path.join(staging, COUNTS_NAME), counts)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)
    return counts


def variant_fingerprint(rows):
    """A digest of a variant's rows of pie.csv: a changed table rewrites its records."""
    digest = pd.util.hash_pandas_object(rows[pie_labels.PIE_COLUMNS], index=False)
    return f"{int(digest.sum()) & (2 ** 64 - 1):016x}-{len(rows)}"


def is_written(folder, fingerprint):
    counts_path = os.path.join(folder, COUNTS_NAME)
    return (os.path.exists(counts_path)
            and records.read_json(counts_path).get("pie_table") == fingerprint)


def main(argv):
    del argv
    cli.require_workdir(FLAGS.workdir)
    if FLAGS.shard_size < 1:
        raise cli.UsageError(f"--shard_size must be at least 1, got {FLAGS.shard_size}")
    # The clean PIE table: the records hold the clean eval images.
    workdir = Workdir(FLAGS.workdir)
    table = records.read_csv(workdir.file("pie"), pie_labels.PIE_COLUMNS)
    variants = {records.variant_key(method, sparsity): rows
                for (method, sparsity), rows in table.groupby(["method", "sparsity"])}
    fingerprints = {key: variant_fingerprint(rows) for key, rows in variants.items()}
    todo = [key for key in variants
            if FLAGS.force or not is_written(workdir.pie_tfrecords(key), fingerprints[key])]
    print(f"PIE TFRecords: {len(variants)} variants, {len(variants) - len(todo)} done, "
          f"{len(todo)} to write", flush=True)
    if not todo:
        return 0
    source = sources.load_for_workdir(FLAGS.workdir, data_dir=FLAGS.data_dir)
    if source.family == "toy":
        raise cli.UsageError(f"'{source.name}' holds 2-D points, not images: "
                             "PIE TFRecords need an image dataset")
    images, _, ids = source.eval_arrays()
    position = np.full(int(ids.max()) + 1, -1, np.int64)
    position[ids] = np.arange(len(ids))
    unknown = table["image_id"][(table["image_id"] > ids.max()) | (table["image_id"] < 0)]
    if len(unknown) or (position[table["image_id"].to_numpy()] < 0).any():
        raise records.ContractError("pie.csv names image ids that are not in the eval split")
    progress = Progress(len(todo), "variants")
    for key in todo:
        counts = write_variant(workdir.pie_tfrecords(key), variants[key], images, position,
                               source, FLAGS.shard_size, fingerprints[key])
        progress.advance(1, f"{key}: {counts['n_pie']} PIEs, {counts['n_non_pie']} non-PIEs")
    return 0


def run(**flag_values):
    """The stage in this process (the Python API): keyword arguments are its flags,
    e.g. run(workdir="W"); bad input raises errors.InputError. See docs/api.md."""
    return cli.call_stage(sys.modules[__name__], flag_values)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

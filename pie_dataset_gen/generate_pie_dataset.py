r"""Write the PIE and non-PIE images of every variant as sharded TFRecords.

  python -m pie_dataset_gen.generate_pie_dataset --workdir=W

Reads `W/pie/pie.csv` (pie_dataset_gen.aggregate_predictions) and streams the eval
split once, and writes per variant `W/pie/tfrecords/<method>_<sparsity>/{pie,non_pie}/`
with `<subset>-00000-of-0000N.tfrecord` shards, a `dataset_info.json` so the folder
reads back as `--dataset=tfrecord:<folder>`, the folder's size cache, and
`counts.json` per variant. Each record keeps the image's original encoded bytes
(TFRecord and tfds sources: the JPEG stays that JPEG; in-memory sets: a PNG of the
pixels), so reading a subset back applies the family's eval geometry once and gives
exactly the pixels the PIE analysis predicted on; a TFRecord source's record is
copied whole, every feature kept (filename, synset, bounding boxes, ...), so a PIE
leads back to its file. Record features: see docs/contracts.md. A variant's
folder appears whole or not at all (written aside, then renamed). Runs on one
workdir take turns (a lock on the folder `W/pie`): the `.partial` staging folders
are never shared, and those of killed runs are removed under the lock. Records
are serialised with their features in a fixed order, so the same inputs give the
same bytes.
"""
import contextlib
import os
import shutil

from absl import flags
import pandas as pd

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.analysis import pie_labels
from pie.data import size_cache, sources, tfrecords
from pie.io import cli, journal, records
from pie.io.workdir import Workdir
from pie.io.progress import Progress

FLAGS = flags.FLAGS
SUBSETS = {"pie": True, "non_pie": False}
COUNTS_NAME = "counts.json"
# Bumped when the records' layout changes, so older subsets are written again.
RECORD_FORMAT = 3
IMAGE_FORMATS = ((b"\xff\xd8\xff", b"jpeg"), (b"\x89PNG", b"png"), (b"GIF8", b"gif"),
                 (b"BM", b"bmp"))
READ_BATCH = 256
STAGING_SUFFIX = ".partial"


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    flags.DEFINE_string("workdir", None, "Workdir with pie/pie.csv.", flag_values=flag_values)
    flags.DEFINE_integer("shard_size", 1024, "Images per TFRecord shard.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None,
                        "tensorflow-datasets folder, if not the one trained with.",
                        flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Rewrite variants that exist.", flag_values=flag_values)


def image_format(encoded):
    for magic, name in IMAGE_FORMATS:
        if encoded.startswith(magic):
            return name
    return b""


def example(encoded, row, class_name, original=None):
    """One record of a subset, serialised: the source's record `original` (a
    tf.train.Example) with every feature kept, or, without one, the image's bytes
    and its label; what it lacks of image/format and image/class/text added; then
    the image id and every other PIE column set (replacing a feature of that name)."""
    import tensorflow as tf
    record = tf.train.Example()
    if original is not None:
        record.CopyFrom(original)
    else:
        tfrecords.set_features(record, {"image/encoded": encoded,
                                        "image/class/label": int(row["label"])})
    features = record.features.feature
    for name, value in (("image/format", image_format(encoded)),
                        ("image/class/text", class_name)):
        if name not in features:
            tfrecords.set_features(record, {name: value})
    tfrecords.set_features(record, {column: value for column, value in row.items()
                                    if column != "label"})
    return tfrecords.serialized(record)


class SubsetWriter:
    """The shards of one subset, filled in eval order; empty subsets get one empty shard."""

    def __init__(self, folder, name, count, shard_size):
        journal.makedirs(folder)
        self.folder, self.name, self.count, self.shard_size = folder, name, count, shard_size
        self.shards = max(1, -(-count // shard_size))
        self.written = 0
        self.writer = None
        self.paths = []
        self.records = []

    def _open(self, shard):
        import tensorflow as tf
        path = os.path.join(self.folder, f"{self.name}-{shard:05d}-of-{self.shards:05d}.tfrecord")
        self.paths.append(path)
        self.records.append(0)
        self.writer = tf.io.TFRecordWriter(path)

    def write(self, record):
        if self.writer is None or self.records[-1] == self.shard_size:
            if self.writer is not None:
                self.writer.close()
            self._open(len(self.paths))
        self.writer.write(record)
        self.records[-1] += 1
        self.written += 1

    def close(self, source, texts):
        """Closes the last shard; writes dataset_info.json and the size cache."""
        if self.writer is None:
            self._open(0)
        self.writer.close()
        records.write_json(os.path.join(self.folder, sources.TFRECORD_INFO), {
            "num_examples": self.written, "num_classes": source.num_classes,
            "class_names": list(source.class_names), "family": source.family,
            "label_offset": source.label_offset, "channels": int(source.raw_shape[-1]),
            "image_shape": list(source.raw_shape)})
        # The facts the tfrecord: loader would count, known here already.
        size_cache.write_entries(self.folder, {
            path: {"records": n, "texts": texts.get(path, {})}
            for path, n in zip(self.paths, self.records)})


def eval_items(source):
    """(label, image id, record key, encoded bytes, stored record) of every eval image,
    in eval order: a TFRecord source's records as stored (each feature kept, parsed
    only when a subset wants them), any other source's encoded images (no record)."""
    if source.eval_serialized is None:
        for batch in source.eval_encoded().batch(READ_BATCH).as_numpy_iterator():
            for encoded, label, image_id in zip(batch["encoded"], batch["label"],
                                                batch["image_id"]):
                yield int(label), int(image_id), "", encoded, None
        return
    for batch in source.eval_serialized().batch(READ_BATCH).as_numpy_iterator():
        for serialized, label, image_id, key in zip(batch["serialized"], batch["label"],
                                                    batch["image_id"], batch["record_key"]):
            yield int(label), int(image_id), key.decode("utf-8", "replace"), None, serialized


def stored_text(original, class_name):
    """The image/class/text a subset's record holds (the source's own, else the class's)."""
    if original is not None and "image/class/text" in original.features.feature:
        texts = original.features.feature["image/class/text"].bytes_list.value
        return texts[0].decode("utf-8", "replace") if texts else ""
    return class_name


def check_row(row, image_id, label, record_key):
    """Fails when pie.csv's row of an image is not of this data: another label, or
    another record (when both name one)."""
    named = row.get("record_key") or ""
    if int(row["label"]) != label or (named and record_key and named != record_key):
        def where(key):
            return f" (record {key})" if key else ""
        raise records.ContractError(
            f"pie.csv gives image {image_id} the label {row['label']}{where(named)}, the "
            f"data {label}{where(record_key)}: the table was made from other data")


def stream_into(source, wanted, writers):
    """One pass over the eval split, each wanted image into its subsets' writers."""
    import tensorflow as tf
    texts = {}  # shard path -> {stored label: class text}, as the loader's scan counts
    seen = 0
    for label, image_id, record_key, encoded, stored in eval_items(source):
        rows = wanted.get(image_id, ())
        original = None
        if rows and stored is not None:
            original = tf.train.Example.FromString(stored)
            encoded = original.features.feature["image/encoded"].bytes_list.value[0]
        for writer_key, row in rows:
            check_row(row, image_id, label, record_key)
            writer = writers[writer_key]
            name = source.class_names[label]
            writer.write(example(encoded, row, name, original))
            texts.setdefault(writer.paths[-1], {})[str(label + source.label_offset)] = (
                stored_text(original, name))
            seen += 1
    if seen != sum(len(items) for items in wanted.values()):
        raise records.ContractError("pie.csv names image ids that are not in the eval split")
    return texts


def write_variants(workdir, variants, todo, source, shard_size, fingerprints):
    """Every variant in `todo`, from one pass over the eval split; returns their counts."""
    wanted = {}  # image_id -> [(writer key, row)]
    writers, staging, counts = {}, {}, {}
    for key in todo:
        rows = variants[key]
        staging[key] = workdir.pie_tfrecords(key) + STAGING_SUFFIX
        journal.makedirs(staging[key], scratch=True)
        counts[key] = {"n_images": int(len(rows)), "pie_table": fingerprints[key],
                       "format": RECORD_FORMAT}
        for subset, flag in SUBSETS.items():
            chosen = rows[rows["is_pie"].astype(bool) == flag]
            writers[key, subset] = SubsetWriter(os.path.join(staging[key], subset), subset,
                                                len(chosen), shard_size)
            for row in chosen.to_dict("records"):
                wanted.setdefault(int(row["image_id"]), []).append(((key, subset), row))
            counts[key][f"n_{subset}"] = int(len(chosen))
            counts[key][f"{subset}_per_class"] = {
                str(k): int(v) for k, v in chosen["label"].value_counts().sort_index().items()}
    try:
        texts = stream_into(source, wanted, writers)
    except BaseException:
        for key in todo:  # nothing half-written stays behind
            for writer in (writers.get((key, subset)) for subset in SUBSETS):
                if writer is not None and writer.writer is not None:
                    writer.writer.close()
            shutil.rmtree(staging[key], ignore_errors=True)
        with contextlib.suppress(OSError):  # W/pie/tfrecords, when this run made it
            os.rmdir(os.path.dirname(staging[todo[0]]))
        raise
    for key in todo:
        for subset in SUBSETS:
            writers[key, subset].close(source, texts)
        records.write_json(os.path.join(staging[key], COUNTS_NAME), counts[key])
        # Undoable in a --force run: the old folder is kept until the stage succeeds.
        journal.replace_folder(staging[key], workdir.pie_tfrecords(key))
    return counts


def remove_stale_staging(workdir):
    """Removes the `.partial` folders killed runs left in W/pie/tfrecords (called
    under the lock: no other run is writing one). Links are removed, not followed."""
    root = workdir.pie_tfrecords()
    workdir.checked(root, "folder")
    if not os.path.isdir(root):
        return []
    removed = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.endswith(STAGING_SUFFIX):
            if os.path.islink(path) or not os.path.isdir(path):
                os.remove(path)
            else:
                shutil.rmtree(path)
            removed.append(path)
    return removed


def variant_fingerprint(rows):
    """A digest of a variant's rows of pie.csv: a changed table rewrites its records."""
    digest = pd.util.hash_pandas_object(rows[pie_labels.PIE_COLUMNS], index=False)
    return f"{int(digest.sum()) & (2 ** 64 - 1):016x}-{len(rows)}"


def is_written(folder, fingerprint):
    counts_path = os.path.join(folder, COUNTS_NAME)
    if not os.path.exists(counts_path):
        return False
    counts = records.read_json(counts_path)
    return counts.get("pie_table") == fingerprint and counts.get("format") == RECORD_FORMAT


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    cli.require_workdir(settings.workdir)
    if settings.shard_size < 1:
        raise cli.UsageError(f"--shard_size must be at least 1, got {settings.shard_size}")
    # The clean PIE table: the records hold the clean eval images.
    workdir = Workdir(settings.workdir)
    table = pie_labels.read_pie_table(workdir.file("pie"))
    # Methods name folders under W/pie/tfrecords, replaced with --force.
    records.check_names(table, ["method"], workdir.file("pie"))
    variants = {records.variant_key(method, sparsity): rows
                for (method, sparsity), rows in table.groupby(["method", "sparsity"])}
    fingerprints = {key: variant_fingerprint(rows) for key, rows in variants.items()}
    # The output folders are checked before anything is read, written or deleted.
    workdir.checked(workdir.pie_tfrecords(), "folder")
    for key in variants:
        workdir.checked(workdir.pie_tfrecords(key), "folder")
    pie_dir = os.path.dirname(workdir.pie_tfrecords())
    # One run at a time: a lock on W/pie itself (a lock file would be left behind).
    with records.locked(pie_dir, folder=True):
        for path in remove_stale_staging(workdir):
            print(f"removed {path}, left by a killed run", flush=True)
        todo = [key for key in variants
                if settings.force or not is_written(workdir.pie_tfrecords(key), fingerprints[key])]
        print(f"PIE TFRecords: {len(variants)} variants, {len(variants) - len(todo)} done, "
              f"{len(todo)} to write", flush=True)
        if not todo:
            return 0
        source = sources.load_for_workdir(settings.workdir, data_dir=settings.data_dir)
        if source.family == "toy":
            raise cli.UsageError(f"'{source.name}' holds 2-D points, not images: "
                                 "PIE TFRecords need an image dataset")
        if (table["image_id"] < 0).any():
            raise records.ContractError("pie.csv names image ids that are not in the eval split")
        counts = write_variants(workdir, variants, todo, source, settings.shard_size, fingerprints)
    progress = Progress(len(todo), "variants")
    for key in todo:
        progress.advance(1, f"{key}: {counts[key]['n_pie']} PIEs, "
                            f"{counts[key]['n_non_pie']} non-PIEs")
    return 0


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

r"""Predictions of every population member on shifted copies of the eval split.

  python -m robustness_tests.corruptions --workdir=W [--corruptions=all] \
      [--severities=all|1,2,3,4,5] [--seed=0] [--corruption_scale=auto] [--batch_size=256] \
      [--workers=0] [--shard=i/n]
  python -m robustness_tests.corruptions --workdir=W \
      --tfds_corrupted=cifar10_corrupted|imagenet2012_corrupted|imagenet_a [--data_dir=D]

Synthetic (default): the raw eval images are corrupted once per (corruption,
severity) with `pie.shift.corruptions.corrupt_batch`, normalised like the clean ones,
and every member runs on them. The eval split is streamed in chunks of about
CHUNK_BYTES of pixels and corrupted by --workers processes (0 = every core), so
memory does not grow with the eval set. Corruptions that are the identity on the
images (saturate on grey images) are skipped. With `--tfds_corrupted` the precomputed sets are
read through tensorflow-datasets instead (they must already be prepared in the
data folder: nothing is downloaded). Each member's predictions go to
`W/predictions/test/<corruption>-<severity>/<member_id>.parquet` (`imagenet_a` for
ImageNet-A) in the schema of `pie_dataset_gen.predictions` plus a `distribution`
column (`gaussian_noise/3`). Files that exist are skipped; a folder records where
its predictions came from (`corruption_source.json`), and a run asking for them
another way (another seed, scale or source, or frost from photographs vs procedural
textures) stops with an error unless --force. `--shard=i/n` runs manifest members
i, i+n, ... only (pie.io.shards); n shards may run at once into one workdir.
"""
import concurrent.futures
import dataclasses
import os
import time

import numpy as np
import pandas as pd
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import cli, records, shards
from pie.io.workdir import ROBUSTNESS_DIR, Workdir
from pie.io.progress import Progress
from pie.models import predict
from pie.shift import corruptions, ops, pool
from pie.shift.tables import CIFAR, SCALES

FLAGS = flags.FLAGS
STAGE = "corruptions"
SPLIT = "test"
GROUPS = tuple(corruptions.CORRUPTION_GROUPS)


@dataclasses.dataclass(frozen=True)
class TfdsShiftedSet:
    """A precomputed shifted test set in tensorflow-datasets."""
    builder: str
    family: str  # the population's data family it fits (pie.data.sources)
    num_classes: int
    per_corruption: bool  # one config `<name>_<severity>` per corruption and severity
    renamed: tuple = ()  # (our corruption name, its tfds name)
    eval_geometry: bool = False  # natural images: resize 256 + centre crop 224 first
    class_subset: bool = False  # score only the classes the set contains (ImageNet-A)

    def config(self, corruption, severity):
        name = dict(self.renamed).get(corruption, corruption)
        return f"{self.builder}/{name}_{severity}"


TFDS_SETS = {
    "cifar10_corrupted": TfdsShiftedSet(
        "cifar10_corrupted", "cifar", 10, True,
        renamed=(("glass_blur", "frosted_glass_blur"), ("elastic_transform", "elastic"))),
    "imagenet2012_corrupted": TfdsShiftedSet("imagenet2012_corrupted", "imagenet", 1000, True),
    "imagenet_a": TfdsShiftedSet("imagenet_a", "imagenet", 1000, False, eval_geometry=True,
                                 class_subset=True),
}
IMAGENET_A = "imagenet_a"


def define_flags(flag_values=flags.FLAGS):
    """Flags of the stage script (not defined on import: tests import several stages)."""
    flags.DEFINE_string("workdir", None, "Workdir holding population.csv and dataset.json.",
                        flag_values=flag_values)
    flags.DEFINE_string(
        "corruptions", "all", "Comma-separated corruption names (pie.shift.corruptions), group "
        f"names ({', '.join(GROUPS)}), or 'all' for the 19.", flag_values=flag_values)
    flags.DEFINE_string("severities", "all", "Comma-separated severities in 1..5, or 'all' "
                        "(1,2,3,4,5).", flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of the corruptions' random draws (>= 0).",
                         flag_values=flag_values)
    flags.DEFINE_enum("corruption_scale", "auto", SCALES,
                      "Parameter table: 'imagenet' (224 px), 'cifar' (32 px) or 'auto' "
                      "(cifar below 64 px).", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 256, "Images per model call.", flag_values=flag_values)
    flags.DEFINE_enum("tfds_corrupted", None, list(TFDS_SETS),
                      "Read this precomputed tensorflow-datasets set instead of corrupting "
                      "in memory (imagenet_a ignores --corruptions/--severities).",
                      flag_values=flag_values)
    flags.DEFINE_string("data_dir", None,
                        "tensorflow-datasets folder (default: the population's).",
                        flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Recompute predictions that exist.", flag_values=flag_values)
    flags.DEFINE_integer("workers", 0, "Processes corrupting images: 0 = every core, 1 = "
                         "in the stage's own process.", flag_values=flag_values)
    shards.define_flag(flag_values)


# ------------------------------------------------------------------------ arguments


def parse_corruptions(text):
    """Corruption names from a flag value: names, group names or `all`."""
    names = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item == "all":
            names.extend(corruptions.ALL_CORRUPTIONS)
        elif item in corruptions.CORRUPTION_GROUPS:
            names.extend(corruptions.CORRUPTION_GROUPS[item])
        else:
            try:
                corruptions.corruption_params(item, 1, CIFAR)
            except ValueError as error:
                raise cli.UsageError(f"--corruptions: {error}; or a group "
                                     f"({', '.join(GROUPS)}) or all")
            names.append(item)
    if not names:
        raise cli.UsageError("--corruptions is empty; name corruptions, groups or all")
    return list(dict.fromkeys(names))


def parse_severities(text):
    if text.strip() == "all":
        return list(corruptions.SEVERITIES)
    values = cli.parse_ints(text, "severities")
    for severity in values:
        try:
            corruptions.corruption_params(corruptions.ALL_CORRUPTIONS[0], severity, CIFAR)
        except ValueError as error:
            raise cli.UsageError(f"--severities: {error}")
    return sorted(set(values))


def check_arguments(workdir, seed, batch_size):
    cli.require_workdir(workdir)
    if seed < 0:
        raise cli.UsageError(f"--seed must be >= 0, got {seed}")
    if batch_size < 1:
        raise cli.UsageError(f"--batch_size must be at least 1, got {batch_size}")


def require_images(config):
    if config.get("family") == "toy":
        raise cli.UsageError(
            f"corruptions need images: the population was trained on the 2-D toy set "
            f"'{config.get('dataset')}'")


# ---------------------------------------------------------------------- provenance


def source_path(workdir, distribution):
    return Workdir(workdir).corruption_source(distribution, SPLIT)


# frost: "photographs" or "procedural" (pie.shift.ops.frost_source), frost folders only.
IDENTITY_KEYS = ("source", "seed", "scale", "frost")


def check_folder(workdir, distribution, identity, force):
    """Fails when the folder's predictions were made another way (unless --force).

    Checked before existing files are skipped, so a changed --seed, --corruption_scale
    or source is never silently ignored.
    """
    path = source_path(workdir, distribution)
    if force or not os.path.exists(path):
        return
    previous = records.read_json(path)
    recorded = {key: previous.get(key) for key in IDENTITY_KEYS if key in previous}
    wanted = {key: identity.get(key) for key in IDENTITY_KEYS if key in identity}
    if recorded != wanted:
        made = ", ".join(f"{key}={value}" for key, value in recorded.items())
        asked = ", ".join(f"{key}={value}" for key, value in wanted.items())
        raise cli.UsageError(
            f"{os.path.dirname(path)} holds predictions made with {made}, not {asked}: "
            "pass --force to replace them")


def claim_folder(workdir, distribution, record):
    """Records where the folder's predictions come from, before the first is written."""
    records.write_json(source_path(workdir, distribution), record)


# ------------------------------------------------------------------------ running


class Members:
    """Manifest members, each loaded once per run and kept for every distribution."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.loaded = {}

    def get(self, row):
        if row["member_id"] not in self.loaded:
            self.loaded[row["member_id"]] = predict.load_member(self.workdir, row)
        return self.loaded[row["member_id"]]


class Reporter:
    """A progress line per distribution written: its members, their mean top-1."""

    def __init__(self, total, unit):
        self.progress = Progress(total, unit)
        self.started = time.time()

    def __call__(self, distribution, rows, top1):
        self.progress.advance(1, f"{distribution}: {len(rows)} members, mean top-1 "
                                 f"{np.mean(list(top1.values())):.4f} "
                                 f"({time.time() - self.started:.1f}s)")
        self.started = time.time()


# Model inputs (float32) gathered, across distributions, into one call per member;
# running a block holds it twice (its chunks and their concatenation).
BLOCK_BYTES = 128 << 20


def predict_distributions(workdir, jobs, members, normalize, batch_size, class_subset=None,
                          done=None, block_bytes=BLOCK_BYTES):
    """Runs the members over many distributions, each member once per block of inputs.

    `jobs` yields (distribution, rows, batches): the manifest rows (dicts) still to
    run on that distribution and its (raw images, labels, ids) chunks. Chunks are
    gathered, across distributions, into blocks of about `block_bytes` of model
    inputs; every member then runs once per block, on the inputs of all the
    distributions it needs there, instead of once per distribution and chunk (each
    call has a fixed cost). A member's file of a distribution is written, by a
    writer thread while the next member runs, once that distribution's last chunk
    has run; then, in the order of `jobs`, `done(distribution, rows, top1)` is called
    (top1 by member_id).
    """
    block, parts, closed = [], {}, []

    def write(distribution, member_id):
        frame = pd.concat(parts.pop((distribution, member_id)), ignore_index=True)
        frame["distribution"] = distribution
        records.write_predictions(Workdir(workdir).predictions_path(
            member_id, distribution, SPLIT), frame)
        return float((frame["predicted"] == frame["label"]).mean())

    def run_block(writer):
        inputs = block[0][2] if len(block) == 1 else np.concatenate([item[2] for item in block])
        ends = np.cumsum([len(item[2]) for item in block])
        starts = np.concatenate([[0], ends[:-1]])
        needed = {}  # member_id -> (row, positions in the block), in manifest order
        for position, (_, rows, _, _, _) in enumerate(block):
            for row in rows:
                needed.setdefault(row["member_id"], (row, []))[1].append(position)
        finished = {distribution for distribution, _ in closed}
        written = {}  # (distribution, member_id) -> future top-1
        for member_id, (row, positions) in needed.items():
            if len(positions) == len(block):
                x = inputs
            else:
                x = np.concatenate([inputs[starts[p]:ends[p]] for p in positions])
            logits = members.get(row).logits(x, batch_size)
            offset = 0
            for p in positions:
                distribution, _, _, labels, ids = block[p]
                count = ends[p] - starts[p]
                parts.setdefault((distribution, member_id), []).append(
                    predict.predictions_frame(member_id, logits[offset:offset + count], labels,
                                              ids, class_subset=class_subset))
                offset += count
            for distribution in dict.fromkeys(block[p][0] for p in positions):
                if distribution in finished:
                    written[distribution, member_id] = writer.submit(write, distribution,
                                                                     member_id)
        block.clear()
        for distribution, rows in closed:
            top1 = {row["member_id"]: written.pop((distribution, row["member_id"])).result()
                    for row in rows}
            if done:
                done(distribution, rows, top1)
        closed.clear()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        for distribution, rows, batches in jobs:
            chunks = 0
            for images, labels, ids in batches:
                block.append((distribution, rows, np.asarray(normalize(images), np.float32),
                              labels, ids))
                chunks += 1
                if sum(item[2].nbytes for item in block) >= block_bytes:
                    run_block(writer)
            if not chunks:
                raise records.ContractError(f"{distribution}: the shifted set has no images")
            if block:
                closed.append((distribution, rows))
            else:  # its last chunk ran in the block just run, before it was closed
                top1 = {row["member_id"]: writer.submit(write, distribution,
                                                        row["member_id"]).result()
                        for row in rows}
                if done:
                    done(distribution, rows, top1)
        if block:
            run_block(writer)


def pending(workdir, manifest, distribution, force, shard=shards.UNSHARDED):
    """Manifest rows (dicts) of `shard` whose predictions on `distribution` are still
    to make."""
    return [row for row in shards.select(manifest.to_dict("records"), shard)
            if force or predict.needs_predictions(workdir, row, distribution, SPLIT)]


# ------------------------------------------------------------------- memory bounds

# Raw eval images read, corrupted and run per step: about this many bytes of
# float32 pixels (111 images at 224 px, 21,000 at 28 px), so memory does not grow
# with the eval set.
CHUNK_BYTES = 64 << 20


def eval_chunks(source, chunk_images):
    """The eval split as (raw images, labels, image_ids) chunks, streamed."""
    for batch in source.eval_raw().batch(chunk_images).as_numpy_iterator():
        yield batch["image"], batch["label"], batch["image_id"]


def corrupted_chunks(chunks, name, severity, seed, scale, workers):
    """Each (raw, labels, ids) chunk with its images corrupted by `workers` (a
    pool.CorruptionPool)."""
    for raw, labels, ids in chunks:
        yield workers.corrupt(raw, ids, name, severity, seed, scale), labels, ids


def image_channels(source):
    shape = tuple(source.raw_shape)
    return int(shape[-1]) if len(shape) == 3 and shape[-1] else 1


def check_workers(workers):
    try:
        return pool.resolve_workers(workers)
    except ValueError as error:
        raise cli.UsageError(f"--{error}")


def run_synthetic(workdir, names, severities, seed=0, scale="auto", batch_size=256,
                  force=False, workers=1, shard=shards.UNSHARDED):
    """Corrupts the eval split in streamed chunks; returns how many distributions were
    run. Corruptions that are the identity on the images' channels (saturate on
    grey images) are skipped."""
    check_arguments(workdir, seed, batch_size)
    workers = check_workers(workers)
    config = records.read_dataset_config(workdir)
    require_images(config)
    manifest = records.read_manifest(workdir)
    predict.check_model_files(workdir, manifest)
    from pie.data import sources
    source = sources.load_for_workdir(workdir)
    channels = image_channels(source)
    skipped = [name for name in names if not corruptions.changes_channels(name, channels)]
    if skipped:
        print(f"corruptions: skipping {', '.join(skipped)}: the identity on "
              f"{channels}-channel images (not run, not in mean_corruption)", flush=True)
    names = [name for name in names if name not in skipped]
    plan = [(f"{name}/{severity}", name, severity) for name in names for severity in severities]
    identity = {"source": "pie.shift.corruptions", "seed": seed, "scale": scale}

    def made_as(name):
        # Frost depends on whether the published photographs are installed.
        return dict(identity, frost=ops.frost_source()) if name == "frost" else identity

    for distribution, name, _ in plan:
        check_folder(workdir, distribution, made_as(name), force)
    todo = [(distribution, name, severity, pending(workdir, manifest, distribution, force,
                                                   shard))
            for distribution, name, severity in plan]
    todo = [item for item in todo if item[3]]
    print(f"corruptions: {len(plan)} corrupted sets x "
          f"{shards.count(len(manifest), shard)} members{shards.describe(shard)}, "
          f"{len(plan) - len(todo)} sets done, {len(todo)} to run", flush=True)
    if not todo:
        return 0
    shape = next(eval_chunks(source, 1))[0].shape[1:]
    resolved = corruptions.resolve_scale(scale, shape[0], shape[1])
    chunk_images = pool.images_per(CHUNK_BYTES, shape)
    with pool.CorruptionPool(workers) as workers_pool:

        def jobs():  # each folder is claimed before its first file is written
            for distribution, name, severity, rows in todo:
                claim_folder(workdir, distribution, dict(made_as(name), resolved_scale=resolved))
                yield distribution, rows, corrupted_chunks(
                    eval_chunks(source, chunk_images), name, severity, seed, scale, workers_pool)

        predict_distributions(workdir, jobs(), Members(workdir), source.normalize, batch_size,
                              done=Reporter(len(todo), "corrupted sets"))
    return len(todo)


# --------------------------------------------------------------------------- tfds


def _load_tfds(config, data_dir, decoders=None):
    import tensorflow_datasets as tfds
    try:
        return tfds.load(config, split=SPLIT, data_dir=data_dir, download=False,
                         shuffle_files=False, decoders=decoders,
                         read_config=tfds.ReadConfig(interleave_cycle_length=1))
    except Exception as error:  # tfds raises AssertionError / DatasetNotFoundError
        from pie.data import sources
        raise sources.DataError(
            f"cannot read {config} from data_dir {data_dir}: "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__} "
            "(prepare it with tfds first; nothing is downloaded here)")


def tfds_batches(spec, config, data_dir, batch_size, label_map=None):
    """Raw uint8 images, labels (mapped onto the population's classes), positions."""
    from pie.data import sources
    dataset = _load_tfds(config, data_dir).enumerate()

    def select(position, example):
        image = example["image"]
        if spec.eval_geometry:
            image = sources.imagenet_eval_geometry(image)
        return {"image": image, "label": example["label"], "image_id": position}

    import tensorflow as tf
    dataset = dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    for batch in dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        labels = batch["label"].astype(np.int64)
        if label_map is not None:
            labels = label_map[labels]
        yield batch["image"], labels, batch["image_id"].astype(np.int64)


def imagenet_label_map(spec, data_dir, population_names):
    """Maps the set's label ids onto the population's ImageNet class ids by wnid.

    ImageNet class ids are the positions of the wnids in tfds imagenet2012's label
    names; the set's labels are translated through its own label names.
    """
    from pie.data import sources
    reference = list(sources.tfds_builder("imagenet2012", data_dir=data_dir).info.features[
        "label"].names)
    if (set(population_names) == set(reference)
            and list(population_names) != reference):
        raise sources.DataError(
            "the population's class names are ImageNet wnids in another order than "
            "tfds imagenet2012's: its class ids cannot be matched")
    names = sources.tfds_builder(spec.builder, data_dir=data_dir).info.features["label"].names
    index = {wnid: position for position, wnid in enumerate(reference)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise sources.DataError(f"{spec.builder} labels {unknown[:3]} are not imagenet2012 wnids")
    return np.array([index[name] for name in names], np.int64)


def present_classes(spec, data_dir, label_map):
    """The population class ids the set's labels cover (ImageNet-A: its 200 classes)."""
    import tensorflow_datasets as tfds
    dataset = _load_tfds(spec.builder, data_dir,
                         decoders={"image": tfds.decode.SkipDecoding()})
    labels = np.concatenate([batch["label"] for batch in dataset.batch(4096).as_numpy_iterator()])
    return np.unique(label_map[labels.astype(np.int64)])


def run_tfds(workdir, set_name, names, severities, batch_size=256, data_dir=None, force=False,
             shard=shards.UNSHARDED):
    """Predictions on a precomputed tfds set; returns how many distributions were run."""
    check_arguments(workdir, 0, batch_size)
    if set_name not in TFDS_SETS:
        raise cli.UsageError(f"unknown --tfds_corrupted {set_name}; allowed: "
                             f"{', '.join(TFDS_SETS)}")
    spec = TFDS_SETS[set_name]
    config = records.read_dataset_config(workdir)
    require_images(config)
    if config.get("family") != spec.family or config.get("num_classes") != spec.num_classes:
        raise cli.UsageError(
            f"--tfds_corrupted={set_name} fits a {spec.family} population with "
            f"{spec.num_classes} classes; this one is '{config.get('dataset')}' "
            f"({config.get('family')}, {config.get('num_classes')} classes)")
    manifest = records.read_manifest(workdir)
    predict.check_model_files(workdir, manifest)
    if spec.per_corruption:
        plan = [(f"{name}/{severity}", spec.config(name, severity))
                for name in names for severity in severities]
    else:
        print(f"{set_name} is one set: --corruptions and --severities do not apply",
              flush=True)
        plan = [(IMAGENET_A, spec.builder)]
    for distribution, tfds_config in plan:
        check_folder(workdir, distribution, {"source": f"tfds:{tfds_config}"}, force)
    todo = [(distribution, tfds_config, pending(workdir, manifest, distribution, force, shard))
            for distribution, tfds_config in plan]
    todo = [item for item in todo if item[2]]
    print(f"corruptions: {len(plan)} sets of {set_name} x "
          f"{shards.count(len(manifest), shard)} members{shards.describe(shard)}, "
          f"{len(plan) - len(todo)} sets done, {len(todo)} to run", flush=True)
    if not todo:
        return 0
    from pie.data import sources
    source = sources.load_for_workdir(workdir, data_dir=data_dir)
    data_dir = data_dir or config.get("data_dir")
    label_map = class_subset = None
    if spec.class_subset:
        label_map = imagenet_label_map(spec, data_dir, source.class_names)
        class_subset = present_classes(spec, data_dir, label_map)
        print(f"{set_name}: scoring the {len(class_subset)} classes the set contains",
              flush=True)

    def jobs():  # each folder is claimed before its first file is written
        for distribution, tfds_config, rows in todo:
            claim_folder(workdir, distribution, {"source": f"tfds:{tfds_config}"})
            yield distribution, rows, tfds_batches(spec, tfds_config, data_dir, batch_size,
                                                   label_map)

    predict_distributions(workdir, jobs(), Members(workdir), source.normalize, batch_size,
                          class_subset, done=Reporter(len(todo), f"sets of {set_name}"))
    return len(todo)


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    check_arguments(settings.workdir, settings.seed, settings.batch_size)
    check_workers(settings.workers)
    shard = shards.parse(settings.shard)
    names = parse_corruptions(settings.corruptions)
    severities = parse_severities(settings.severities)
    if settings.tfds_corrupted:
        ran = run_tfds(settings.workdir, settings.tfds_corrupted, names, severities,
                       settings.batch_size, settings.data_dir, settings.force, shard)
    else:
        ran = run_synthetic(settings.workdir, names, severities, settings.seed,
                            settings.corruption_scale, settings.batch_size, settings.force,
                            settings.workers, shard)
    if ran:  # one file for every shard: the shard changes no prediction
        records.write_text(Workdir(settings.workdir).flags_file(ROBUSTNESS_DIR, STAGE),
                           shards.flags_text(settings.flags_text))
    return 0


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

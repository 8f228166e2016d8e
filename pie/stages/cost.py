r"""What every population member costs: parameters, bytes, gzip bytes, latency.

  python -m pie.stages.cost --workdir=W [--repeats=50] [--num_threads=1] [--force] \
      [--workers=2] [--shard=i/n]

Writes `W/quantization/cost.csv`, one row per manifest member (Keras and TFLite):

  params, nonzero_params   weights of the Keras model (TFLite members: of the Keras
                           member they were converted from, see meta.json)
  file_bytes, gzip_bytes   the member's weights alone, raw and gzip (level `gzip_level`,
                           deflate's default 6): a Keras member
                           saved again without optimizer state or pruning wrappers (an
                           imported file may carry them), a TFLite member's file
  tflite_bytes, tflite_gzip_bytes   the .tflite that was timed (a Keras member is
                           converted to a plain float TFLite in a temporary folder)
  latency_ms_batch1        median ms of one interpreter call on 1 image
  latency_ms_batch32       median ms of one call on 32 images, divided by 32: ms PER IMAGE
  top1                     from the manifest (eval split)

Latency uses the TFLite interpreter with XNNPACK on (its default delegate),
`--num_threads` threads, `--warmup` untimed calls, then the median of `--repeats`
timed calls on random inputs.

Two phases, in chunks of members (4 per worker): the Keras members' loading,
weights-only save and float conversion (the slow part: about 10 s for a ResNet-20
on a slow core) run in `--workers` processes (pie.compress.conversion_pool; default
one per core, at most 2; 0 = one per core; 1 = in this process), then every member
of the chunk is timed here, one after the other, while the workers wait: latency is
measured uncontended. The table does not depend on --workers
(tests/test_cost_pool.py). A rerun keeps the rows of members whose model file,
repeats, threads and gzip level are unchanged. `--shard=i/n` measures manifest members i, i+n,
... only; n shards may run at once, and the last to finish writes cost.csv from
every shard's rows (pie.io.shards). See docs/quantization.md.
"""
import os
import re
import tempfile
import time
import zipfile

import numpy as np
import pandas as pd
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import cli, errors, records, shards
from pie.io.workdir import QUANTIZATION_DIR, Workdir
from pie.io.progress import Progress
from pie.compress import conversion_pool
from pie.compress import quantize as pq
from pie.models import loading

FLAGS = flags.FLAGS
STAGE = "cost"
BATCH_SIZES = (1, 32)
COST_COLUMNS = [
    "member_id", "method", "sparsity", "seed", "params", "nonzero_params", "file_bytes",
    "gzip_bytes", "latency_ms_batch1", "latency_ms_batch32", "top1", "tflite_bytes",
    "tflite_gzip_bytes", "latency_model", "repeats", "num_threads", "gzip_level",
]
# The zip entries' date of a weights-only copy (the earliest a zip can hold).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    flags.DEFINE_string("workdir", None, "Workdir holding population.csv.",
                        flag_values=flag_values)
    flags.DEFINE_integer("repeats", 50, "Timed interpreter calls per batch size (median taken).",
                         flag_values=flag_values)
    flags.DEFINE_integer("warmup", 5, "Untimed calls before timing.", flag_values=flag_values)
    flags.DEFINE_integer("num_threads", 1, "Interpreter threads (1: comparable across machines).",
                         flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Measure every member again, even with a matching row.",
                      flag_values=flag_values)
    flags.DEFINE_integer("workers", conversion_pool.default_workers(),
                         "Processes loading and converting Keras members before they are "
                         "timed (one at a time, here): 0 = one per core, 1 = in the stage's "
                         "own process. The table does not depend on it.",
                         flag_values=flag_values)
    shards.define_flag(flag_values)


def cost_path(workdir):
    return Workdir(workdir).file("cost")


class KerasWeights:
    """Parameter counts of Keras members, each model loaded at most once."""

    def __init__(self, workdir, manifest):
        self.workdir = Workdir(workdir)
        self.rows = {row["member_id"]: row for row in manifest.to_dict("records")}
        self._counts = {}

    def remember(self, member_id, counts):
        """The counts of a Keras member measured already (its TFLite members' source)."""
        self._counts[member_id] = counts

    def counts(self, member_id):
        if member_id not in self._counts:
            model = inference_model(loading.load_keras(
                self.workdir.model_path(self.rows[member_id])))
            self._counts[member_id] = pq.parameter_counts(model)
        return self._counts[member_id]

    def source_of(self, row):
        """The Keras member a TFLite member was converted from, or None."""
        meta_path = self.workdir.member_file(row["path"], "meta")
        if not os.path.exists(meta_path):
            return None
        source = records.read_json(meta_path).get("source_member_id")
        return source if source in self.rows else None


def inference_model(model):
    """The model as it predicts: tfmot's pruning wrappers stripped (their masks,
    thresholds and step counters are training state, not weights)."""
    from pie.compress import pruning
    return pruning.strip(model) if pruning.is_wrapped(model) else model


def weights_only_sizes(model):
    """(bytes, gzip bytes) of `model` saved alone: its config and weights, never an
    optimizer's slots (an imported file saved compiled holds Adam's two per weight).
    The copy's dates are set to one value (`undated`), so a rerun gives the same bytes."""
    from pie.compress import training
    with tempfile.TemporaryDirectory(prefix="cost-") as folder:
        path = os.path.join(folder, "weights.keras")
        training.uncompiled(model).save(path)  # a copy without the optimizer
        undated(path)
        return pq.file_sizes(path)


def undated(path):
    """Rewrites a saved .keras zip with its dates (metadata.json's date_saved, each
    entry's modification time) set to one value, the same length: the bytes then
    depend on the model alone, and so does their gzip size."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, content in entries:
            if info.filename == "metadata.json":
                content = re.sub(rb'("date_saved": ")([^"]*)', lambda match: match.group(1)
                                 + re.sub(rb"[0-9]", b"0", match.group(2)), content)
            info.date_time = ZIP_EPOCH
            archive.writestr(info, content)


def latencies(tflite_path, repeats, warmup, num_threads):
    """Timed in this process, after a child survived the same inputs
    (pie.models.loading.load_tflite); the interpreter's own refusals are bad input."""
    try:
        timer = pq.Latency(tflite_path, num_threads=num_threads)
        batch1 = timer.median_ms(1, repeats, warmup)
        per_image32 = timer.median_ms(BATCH_SIZES[1], repeats, warmup) / BATCH_SIZES[1]
    except (RuntimeError, ValueError, TypeError) as error:
        if isinstance(error, errors.InputError):
            raise
        raise loading.ModelError(f"cannot time TFLite model {tflite_path}: "
                                 f"{errors.first_line(error)}")
    return batch1, per_image32


def converted(member_name, model_path, tflite_path):
    """What a Keras member costs but its latency, and its float conversion written to
    `tflite_path` (run in a conversion worker, or in the stage's process): params,
    nonzero_params, file_bytes, gzip_bytes, tflite_bytes, tflite_gzip_bytes."""
    try:
        model = inference_model(loading.load_keras(model_path))
    except loading.ModelError as error:
        raise loading.ModelError(f"{member_name}: {error}")
    params, nonzero = pq.parameter_counts(model)
    file_bytes, gzip_bytes = weights_only_sizes(model)
    with open(tflite_path, "wb") as handle:
        handle.write(pq.convert(model, pq.FLOAT_MODE))
    tflite_bytes, tflite_gzip = pq.file_sizes(tflite_path)
    return dict(params=params, nonzero_params=nonzero, file_bytes=file_bytes,
                gzip_bytes=gzip_bytes, tflite_bytes=tflite_bytes, tflite_gzip_bytes=tflite_gzip)


def member_name(row):
    return f"manifest member {row['member_id']}"


def measure(workdir, row, weights, repeats, warmup, num_threads, keras_cost=None):
    """The cost row of one manifest member; a Keras member's `keras_cost` is what
    `converted` returned for it (its float TFLite at `keras_cost["tflite_path"]`)."""
    model_path = Workdir(workdir).model_path(row)
    cost = {key: row[key] for key in ("member_id", "method", "sparsity", "seed", "top1")}
    cost.update(repeats=repeats, num_threads=num_threads, gzip_level=pq.GZIP_LEVEL)
    if model_path.endswith(".tflite"):
        file_bytes, gzip_bytes = pq.file_sizes(model_path)
        source = weights.source_of(row)
        params, nonzero = weights.counts(source) if source else (np.nan, np.nan)
        cost.update(params=params, nonzero_params=nonzero, file_bytes=file_bytes,
                    gzip_bytes=gzip_bytes, tflite_bytes=file_bytes,
                    tflite_gzip_bytes=gzip_bytes, latency_model="member")
        batch1, batch32 = latencies(model_path, repeats, warmup, num_threads)
    else:
        cost.update({key: value for key, value in keras_cost.items() if key != "tflite_path"},
                    latency_model="float_tflite")
        batch1, batch32 = latencies(keras_cost["tflite_path"], repeats, warmup, num_threads)
    cost.update(latency_ms_batch1=round(batch1, 4), latency_ms_batch32=round(batch32, 4))
    return cost


def keras_costs(workdir, rows, pool, folder):
    """{member_id: converted(...) and its tflite_path} of the Keras members of `rows`,
    converted by `pool`, each float TFLite written into `folder`; a progress line as
    each is converted (a wide model's takes a minute before anything is timed)."""
    keras_rows = [row for row in rows if not workdir.model_path(row).endswith(".tflite")]
    paths = [os.path.join(folder, f"{index}.tflite") for index in range(len(keras_rows))]
    progress = Progress(len(keras_rows), "Keras members of this chunk converted")
    results = pool.map(converted, [
        (member_name(row), workdir.model_path(row), path)
        for row, path in zip(keras_rows, paths)], names=map(member_name, keras_rows),
        done=lambda index: progress.advance(1, f"{keras_rows[index]['member_id']}: saved "
                                               "alone, gzipped and converted"))
    return {row["member_id"]: dict(result, tflite_path=path)
            for row, result, path in zip(keras_rows, results, paths)}


def reusable_rows(workdir, manifest, repeats, num_threads):
    """Rows of the previous cost.csv still valid for the current manifest and options."""
    path = cost_path(workdir)
    if not os.path.exists(path):
        return {}
    sizes = {row["member_id"]: os.path.getsize(Workdir(workdir).model_path(row))
             for row in manifest.to_dict("records")}
    return pq.reusable_cost_rows(records.read_csv(path), sizes, repeats, num_threads,
                                 COST_COLUMNS)


def validate_flags(settings):
    cli.require_workdir(settings.workdir)
    if settings.repeats < 1:
        raise cli.UsageError(f"--repeats must be at least 1, got {settings.repeats}")
    if settings.warmup < 0:
        raise cli.UsageError(f"--warmup must be at least 0, got {settings.warmup}")
    if settings.num_threads < 1:
        raise cli.UsageError(f"--num_threads must be at least 1, got {settings.num_threads}")
    return shards.parse(settings.shard), conversion_pool.resolve(settings.workers)


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    shard, workers = validate_flags(settings)
    from pie.analysis import stage_io
    from pie.models import predict
    workdir = Workdir(settings.workdir)
    manifest = records.read_manifest(workdir)
    if manifest.empty:
        raise records.ContractError(f"{workdir.manifest} has no members")
    predict.check_model_files(workdir, manifest)
    kept = {} if settings.force else reusable_rows(workdir, manifest, settings.repeats,
                                                settings.num_threads)
    mine = shards.select(manifest.to_dict("records"), shard)
    todo = [row for row in mine if row["member_id"] not in kept]
    print(f"cost: {len(mine)} members{shards.describe(shard)}, {len(mine) - len(todo)} up to "
          f"date, {len(todo)} to measure", flush=True)
    if not todo and len(kept) == len(manifest) and os.path.exists(cost_path(workdir)):
        return 0  # nothing new: leave the file (and what reads it) untouched
    weights = KerasWeights(workdir, manifest)
    progress = Progress(len(todo), "members")
    rows = [kept[row["member_id"]] for row in mine if row["member_id"] in kept]
    with conversion_pool.ConversionPool(workers) as pool:
        for chunk in conversion_pool.chunks(todo, pool.workers):
            with tempfile.TemporaryDirectory(prefix="cost-") as folder:
                started = time.time()
                converted_now = keras_costs(workdir, chunk, pool, folder)
                each = (time.time() - started) / max(len(converted_now), 1)
                for member_id, result in converted_now.items():
                    # No second load for its TFLite members
                    weights.remember(member_id, (result["params"], result["nonzero_params"]))
                for row in chunk:
                    started = time.time()
                    try:
                        cost = measure(workdir, row, weights, settings.repeats,
                                       settings.warmup, settings.num_threads,
                                       converted_now.get(row["member_id"]))
                    except loading.ModelError as error:
                        raise loading.ModelError(f"{member_name(row)}: {error}")
                    rows.append(cost)
                    spent = time.time() - started + (each if row["member_id"] in converted_now
                                                     else 0)
                    progress.advance(1, f"{row['member_id']}: {cost['file_bytes']} bytes, gzip "
                                        f"{cost['gzip_bytes']}, {cost['latency_ms_batch1']:.3f} "
                                        f"ms (batch 1), {cost['latency_ms_batch32']:.3f} ms/image "
                                        f"(batch 32) ({spent:.1f}s)")
    path = cost_path(workdir)
    # Shards' rows are put together by the last shard to finish (pie.io.shards).
    key = {"options": {"repeats": settings.repeats, "warmup": settings.warmup,
                       "num_threads": settings.num_threads},
           "inputs": stage_io.fingerprint(settings.workdir, [workdir.manifest] + [
               workdir.model_path(row) for row in manifest.to_dict("records")])}
    part = {"rows": pd.DataFrame(rows, columns=COST_COLUMNS)}
    with shards.gathered(os.path.dirname(path), STAGE, shard, key, part) as parts:
        if parts is None:
            print(shards.kept_line(STAGE, shard, path), flush=True)
            return 0
        rows = pd.concat(parts["rows"], ignore_index=True).to_dict("records")
        table = pd.DataFrame(rows, columns=COST_COLUMNS).sort_values("member_id", kind="stable")
        records.write_csv(path, table, COST_COLUMNS)
        records.write_text(workdir.flags_file(QUANTIZATION_DIR, STAGE),
                           shards.flags_text(settings.flags_text))
    print(f"wrote {path} ({len(table)} members)", flush=True)
    return 0


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

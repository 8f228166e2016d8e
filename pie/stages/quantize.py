r"""Quantized (and sparse-encoded) TFLite members, added to the population.

  python -m pie.stages.quantize --workdir=W --modes=float16,dynamic_int8,full_int8 \
      [--representative_images=200] [--pruned_method=magnitude] [--workers=2] [--shard=i/n]

Converts every dense member (modes float16, dynamic_int8, full_int8) or every
pruned member of `--pruned_method` (modes sparse, pruned_int8) with the TFLite
converter; each result is a new manifest member of method `quant_<mode>`, the
source's seed and sparsity, stored at
`W/checkpoints/quant_<mode>/sparsity_<s>/seed_<k>/model.tflite` with meta.json and
flags.txt. Its `top1` is measured with the TFLite model on the eval split.
Full-integer modes calibrate on `--representative_images` training images drawn
with the member's seed. The conversions of a chunk of jobs (4 per worker) run in
`--workers` processes (pie.compress.conversion_pool: default one per core, at most
2; 0 = one per core; 1 = in this process), then each result is evaluated and
recorded here, in plan order; the members do not depend on --workers. Reruns skip
members already converted. `--shard=i/n` makes
conversions i, i+n, ... of the plan (in source member order) only (pie.io.shards);
n shards may run at once into one workdir. See docs/quantization.md.
"""
import os
import sys
import time

from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import cli, records, shards
from pie.compress import conversion_pool
from pie.compress import quantize as pq
from pie.compress import recipes
from pie.io.workdir import Workdir
from pie.io.progress import Progress
from pie.models import loading

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    flags.DEFINE_string("workdir", None, "Workdir holding population.csv; members are added to it.",
                        flag_values=flag_values)
    flags.DEFINE_string("modes", "float16,dynamic_int8,full_int8",
                        "Comma-separated conversion modes, or 'all': " + ", ".join(pq.MODES)
                        + ". float16/dynamic_int8/full_int8 convert the dense members, "
                        "sparse/pruned_int8 the pruned ones.", flag_values=flag_values)
    flags.DEFINE_integer("representative_images", 200,
                         "Training images that calibrate the full-integer modes' activations.",
                         flag_values=flag_values)
    flags.DEFINE_string("pruned_method", "magnitude",
                        "Which pruned members the sparse and pruned_int8 modes convert (the "
                        "manifest method); one method, so member ids stay unique.",
                        flag_values=flag_values)
    flags.DEFINE_string("data_dir", None,
                        "tensorflow-datasets folder, if not the one trained with.",
                        flag_values=flag_values)
    flags.DEFINE_integer("batch_size", pq.EVAL_BATCH_SIZE, "Images per call when measuring top-1.",
                         flag_values=flag_values)
    flags.DEFINE_integer("workers", conversion_pool.default_workers(),
                         "Processes converting members (each result is then evaluated here): "
                         "0 = one per core, 1 = in the stage's own process.",
                         flag_values=flag_values)
    shards.define_flag(flag_values)


class Job:
    """One conversion: a source member and the member it becomes."""

    def __init__(self, mode, source_row):
        self.mode = mode
        self.source = source_row
        self.method = pq.mode_method(mode.name)
        self.sparsity = float(source_row["sparsity"])
        self.seed = int(source_row["seed"])
        self.member_id = pq.member_id(self.method, self.sparsity, self.seed)
        self.relpath = Workdir.member_relpath(self.method, self.sparsity, self.seed)
        self.model_file = Workdir.member_relfile(self.relpath, "tflite_model")


def source_rows(manifest, mode, pruned_method):
    """The manifest rows a mode converts: Keras members only, never converted ones."""
    keras_rows = manifest[manifest["model_file"].astype(str).str.endswith(".keras")]
    if mode.source == pq.DENSE_SOURCE:
        chosen = keras_rows[keras_rows["method"] == records.DENSE_METHOD]
    else:
        chosen = keras_rows[(keras_rows["method"] == pruned_method)
                            & (keras_rows["sparsity"].astype(float) > 0)]
    return chosen.to_dict("records")


def plan(manifest, modes, pruned_method):
    """Jobs in source order (each source model is loaded once), and modes without sources."""
    jobs, empty = [], []
    for name in modes:
        mode = pq.MODES[name]
        rows = source_rows(manifest, mode, pruned_method)
        if not rows:
            empty.append(name)
        jobs += [Job(mode, row) for row in rows]
    jobs.sort(key=lambda job: job.source["member_id"])
    return jobs, empty


def finished(workdir, job, manifest_ids):
    """Whether the member exists (recovering a manifest row lost to a crash)."""
    if job.member_id in manifest_ids:
        return True
    workdir = Workdir(workdir)
    meta_path = workdir.member_file(job.relpath, "meta")
    if os.path.exists(meta_path) and os.path.exists(workdir.path(job.model_file)):
        records.add_manifest_rows(workdir, [records.read_json(meta_path)["manifest_row"]])
        return True
    return False


# The last source model a process loaded, by its file's path, size and time: a dense
# member is converted in three modes, one after the other.
_loaded = {}


def converted_content(model_path, mode_name, representative):
    """The .tflite bytes of the Keras model at `model_path` in mode `mode_name` (a
    conversion task, in a worker or in the stage's process)."""
    stat = os.stat(model_path)
    key = (model_path, stat.st_size, stat.st_mtime_ns)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = loading.load_keras(model_path)
    return pq.convert(_loaded[key], mode_name, representative)


class Converter:
    """Converts jobs (in a conversion pool), then measures and records each result,
    each representative set drawn once."""

    def __init__(self, workdir, source, n_representative, batch_size, flags_text):
        self.workdir = Workdir(workdir)
        self.flags_text = flags_text  # the stage's flags, saved beside each member
        self.source = source
        self.n_representative = n_representative
        self.batch_size = batch_size
        self._representative = {}

    def representative(self, seed):
        if seed not in self._representative:
            self._representative[seed] = pq.representative_inputs(
                self.source, self.n_representative, seed)
        return self._representative[seed]

    def contents(self, jobs, pool):
        """The .tflite bytes of each job, converted by `pool`."""
        return pool.map(converted_content, [
            (self.workdir.model_path(job.source), job.mode.name,
             self.representative(job.seed) if job.mode.full_int8 else None) for job in jobs],
            names=[f"{job.member_id} (from {job.source['member_id']})" for job in jobs])

    def record(self, job, content, convert_seconds):
        """Writes the converted member, its top-1 and clean predictions, meta.json and
        its manifest row; returns the row."""
        started = time.time() - convert_seconds
        model_path = self.workdir.path(job.model_file)
        with records.atomic_path(model_path) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(content)
        from pie.models import predict
        # Its clean predictions, from the pass that gives its top-1 (one evaluation).
        top1 = predict.record_clean_predictions(self.workdir, job.member_id,
                                                predict.TFLiteMember(model_path), self.source,
                                                self.batch_size)
        row = {"member_id": job.member_id, "method": job.method, "sparsity": job.sparsity,
               "measured_sparsity": job.source["measured_sparsity"], "seed": job.seed,
               "dataset": job.source["dataset"], "model": job.source["model"],
               "top1": round(top1, 6), "path": job.relpath, "model_file": job.model_file}
        recipe = recipes.quantized_settings(
            job.mode.name, self.n_representative if job.mode.full_int8 else 0,
            recipes.row_digest(job.source))
        row["recipe"] = recipes.digest(recipe)
        meta = dict(row, recipe_settings=recipe, mode=job.mode.name, source_member_id=job.source["member_id"],
                    source_top1=job.source["top1"],
                    representative_images=self.n_representative if job.mode.full_int8 else 0,
                    file_bytes=len(content), wall_time_s=round(time.time() - started, 2),
                    manifest_row=row)
        records.write_text(self.workdir.member_file(job.relpath, "flags"),
                           shards.flags_text(self.flags_text))
        records.write_json(self.workdir.member_file(job.relpath, "meta"), meta)
        records.add_manifest_rows(self.workdir, [row])
        return row


def validate_flags(settings):
    cli.require_workdir(settings.workdir)
    modes = cli.parse_names(settings.modes, "modes", list(pq.MODES))
    if settings.representative_images < 1:
        raise cli.UsageError(
            f"--representative_images must be at least 1, got {settings.representative_images}")
    if settings.batch_size < 1:
        raise cli.UsageError(f"--batch_size must be at least 1, got {settings.batch_size}")
    if (settings.pruned_method in (records.DENSE_METHOD, "")
            or pq.is_quantized_method(settings.pruned_method)):
        raise cli.UsageError(f"--pruned_method must name a pruning method (e.g. magnitude), "
                             f"got '{settings.pruned_method}'")
    return modes, shards.parse(settings.shard), conversion_pool.resolve(settings.workers)


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    modes, shard, workers = validate_flags(settings)
    from pie.data import sources
    from pie.models import predict  # TensorFlow loads only once the flags are valid
    workdir = settings.workdir
    manifest = records.read_manifest(workdir)
    jobs, empty = plan(manifest, modes, settings.pruned_method)
    jobs = shards.select(jobs, shard)
    for name in empty:
        wanted = ("dense members" if pq.MODES[name].source == pq.DENSE_SOURCE
                  else f"pruned members of method '{settings.pruned_method}'")
        print(f"warning: mode {name}: the manifest has no {wanted}; nothing to convert",
              file=sys.stderr, flush=True)
    predict.check_model_files(workdir, manifest[manifest["member_id"].isin(
        [job.source["member_id"] for job in jobs])])
    manifest_ids = set(manifest["member_id"])
    todo = [job for job in jobs if not finished(workdir, job, manifest_ids)]
    print(f"quantize: {len(jobs)} conversions{shards.describe(shard)}, "
          f"{len(jobs) - len(todo)} already done, "
          f"{len(todo)} to run", flush=True)
    if not todo:
        return 0
    source = sources.load_for_workdir(workdir, data_dir=settings.data_dir)
    converter = Converter(workdir, source, settings.representative_images, settings.batch_size,
                          settings.flags_text)
    progress = Progress(len(todo), "conversions")
    with conversion_pool.ConversionPool(workers) as pool:
        for chunk in conversion_pool.chunks(todo, pool.workers):
            started = time.time()
            contents = converter.contents(chunk, pool)
            each = (time.time() - started) / len(chunk)
            for job, content in zip(chunk, contents):
                started = time.time()
                row = converter.record(job, content, each)
                progress.advance(1, f"{job.member_id} (from {job.source['member_id']}): "
                                    f"top-1 {row['top1']:.4f} vs "
                                    f"{float(job.source['top1']):.4f} "
                                    f"({time.time() - started + each:.1f}s)")
    _loaded.clear()  # no model kept by a stage run through the Python API
    print(f"manifest: {Workdir(workdir).manifest}", flush=True)
    return 0


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

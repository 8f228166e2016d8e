r"""Add models trained or compressed elsewhere to a population, as its members.

  python -m save_checkpoint.import_members --workdir=W --models='runs/mine/seed*.keras' \
      --method=dense [--sparsity=0] [--seed_from=order|regex:<pattern>] [--dataset=digits]

Every file `--models` matches (a glob; `.keras` zip files or `.tflite` flatbuffers,
opened by pie.models.loading, never anything that can run code) becomes one member
of variant `(--method, --sparsity)`: checked to take the dataset's inputs and give
one output per class (one error line naming both shapes otherwise), its `top1`
measured on the eval split and its `measured_sparsity` counted (the zeros of its
Conv2D and Dense kernels; for `.tflite` files the constant weights of its CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED operators), then copied to
`W/checkpoints/<method>/sparsity_<s>/seed_<k>/model.{keras,tflite}` with meta.json
and flags.txt, and added to `W/population.csv` (see docs/contracts.md). A file that
scores at chance on a few eval images stops the run (another input convention?
--allow_chance makes it a warning); a --sparsity more than 0.02 from the measured
one draws a warning.

Seeds: `order` numbers the matched files 0, 1, ... in sorted path order;
`regex:<pattern>` takes the first group of the pattern searched in each file name
(e.g. `regex:seed(\d+)`). An empty workdir takes `--dataset` (and writes
dataset.json); a workdir with a population keeps its dataset. Every file is checked
before anything is written. A rerun skips members already imported from the same
file (same SHA-256); another file for an existing member needs --force.
"""
import glob
import hashlib
import os
import re
import shutil
import time

from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.compress import recipes
from pie.io import cli, records
from pie.io.progress import Progress
from pie.io.workdir import Workdir

FLAGS = flags.FLAGS
METHOD_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
SEED_ORDER = "order"
SEED_REGEX = "regex:"


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    flags.DEFINE_string("workdir", None, "Workdir whose population.csv the members join "
                        "(created if needed).", flag_values=flag_values)
    flags.DEFINE_string("models", None, "Glob of the model files, e.g. 'mine/seed*.keras' "
                        "(quote it): .keras (zip) or .tflite.", flag_values=flag_values)
    flags.DEFINE_string("method", None, "The members' method: 'dense' for unpruned models "
                        "(the population others are compared with), or a name of your own "
                        "(lower-case letters, digits, _), e.g. 'ext_magnitude'.",
                        flag_values=flag_values)
    flags.DEFINE_float("sparsity", 0.0, "The variant's target sparsity in [0, 1) (0 for "
                       "dense).", flag_values=flag_values)
    flags.DEFINE_string("seed_from", SEED_ORDER, "How each file gets its seed: 'order' "
                        "(0, 1, ... in sorted path order) or 'regex:<pattern>' (the first "
                        "group of the pattern in the file name, e.g. 'regex:seed(\\d+)').",
                        flag_values=flag_values)
    flags.DEFINE_string("dataset", None, "The dataset (as save_checkpoint.train's --dataset); "
                        "default: the workdir's.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets folder.",
                        flag_values=flag_values)
    flags.DEFINE_string("label_attribute", None, "Binary label attribute (celeb_a).",
                        flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 256, "Images per model call when measuring top-1.",
                         flag_values=flag_values)
    flags.DEFINE_bool("allow_chance", False, "Import a model that scores at chance on a few "
                      "eval images (else an error: another input convention?).",
                      flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Replace members that exist with another file.",
                      flag_values=flag_values)


def seeds_of(paths, seed_from):
    """{path: seed} by file order or by a pattern in the file name; seeds unique."""
    if seed_from == SEED_ORDER:
        return {path: seed for seed, path in enumerate(paths)}
    if not seed_from.startswith(SEED_REGEX):
        raise cli.UsageError(f"--seed_from must be '{SEED_ORDER}' or '{SEED_REGEX}<pattern>', "
                             f"got '{seed_from}'")
    try:
        pattern = re.compile(seed_from[len(SEED_REGEX):])
    except re.error as error:
        raise cli.UsageError(f"--seed_from pattern is not a regular expression: {error}")
    seeds = {}
    for path in paths:
        found = pattern.search(os.path.basename(path))
        if not found or not found.groups() or not (found.group(1) or "").isdigit():
            raise cli.UsageError(f"--seed_from pattern finds no seed (a group of digits) in "
                                 f"'{os.path.basename(path)}'")
        seeds[path] = int(found.group(1))
    twice = sorted({seed for seed in seeds.values() if list(seeds.values()).count(seed) > 1})
    if twice:
        raise cli.UsageError(f"--seed_from gives seed {twice[0]} to more than one file")
    return seeds


def validate_flags(settings):
    if not settings.workdir:
        raise cli.UsageError("--workdir is required")
    if not settings.models:
        raise cli.UsageError("--models is required: a glob of .keras or .tflite files")
    if not settings.method or not METHOD_PATTERN.match(settings.method):
        raise cli.UsageError(f"--method must be lower-case letters, digits and _, starting "
                             f"with a letter (e.g. dense, ext_magnitude), got "
                             f"'{settings.method or ''}'")
    if not 0 <= settings.sparsity < 1:
        raise cli.UsageError(f"--sparsity must be in [0, 1), got {settings.sparsity:g}")
    if settings.method == records.DENSE_METHOD and settings.sparsity != 0:
        raise cli.UsageError(f"dense members have sparsity 0, got --sparsity={settings.sparsity:g}")
    if settings.batch_size < 1:
        raise cli.UsageError(f"--batch_size must be at least 1, got {settings.batch_size}")
    paths = sorted(path for path in glob.glob(settings.models) if not os.path.isdir(path))
    if not paths:
        raise cli.UsageError(f"--models={settings.models} matches no file")
    return paths, seeds_of(paths, settings.seed_from)


def load_source(workdir, settings):
    """The dataset: the workdir's when it has one (a different --dataset is refused),
    else --dataset. Returns (source, dataset name, whether dataset.json is new)."""
    from pie.data import sources
    if os.path.exists(workdir.dataset_config):
        config = records.read_dataset_config(workdir)
        if settings.dataset and settings.dataset != config.get("dataset"):
            raise cli.UsageError(f"workdir holds a population of '{config.get('dataset')}', "
                                 f"not '{settings.dataset}': use another --workdir")
        return sources.load_for_workdir(workdir, data_dir=settings.data_dir), config["dataset"], False
    if not settings.dataset:
        raise cli.UsageError(f"{workdir.dataset_config} does not exist: pass --dataset")
    sources.validate_name(settings.dataset)
    source = sources.load(settings.dataset, data_dir=settings.data_dir,
                          label_attribute=settings.label_attribute)
    return source, settings.dataset, True


class Candidate:
    """One file to import: its member, its runnable model, what was measured."""

    def __init__(self, path, seed, settings):
        from pie.models import loading
        self.path, self.seed = path, seed
        self.kind = loading.kind(path)
        self.member_id = f"{records.variant_key(settings.method, settings.sparsity)}_seed{seed}"
        self.relpath = Workdir.member_relpath(settings.method, settings.sparsity, seed)
        self.model_file = Workdir.member_relfile(
            self.relpath, "tflite_model" if self.kind == "tflite" else "keras_model")
        with open(path, "rb") as handle:
            self.sha256 = hashlib.sha256(handle.read()).hexdigest()

    def open(self, source, settings):
        """Loads the model, checks its shapes against the dataset, that it does not score
        at chance (unless --allow_chance) and its declared sparsity; the runnable member."""
        from pie.models import imported, predict
        if self.kind == "keras":
            self.member = imported.keras_member(self.path)
            input_shape, n_outputs = imported.keras_signature(self.member.model, self.path)
            imported.check_shapes(self.path, input_shape, n_outputs, source)
            self.sparsity = imported.keras_sparsity(self.member.model)
        else:
            self.member = predict.TFLiteMember(self.path)
            input_shape, n_outputs = imported.tflite_signature(self.member.interpreter,
                                                               self.path)
            imported.check_shapes(self.path, input_shape, n_outputs, source)
            self.sparsity = imported.tflite_sparsity(self.path)
        imported.check_member(self.path, self.member, source, settings.sparsity,
                              self.sparsity, settings.allow_chance, settings.batch_size)
        return self


def existing(workdir, candidate, manifest):
    """'new', 'same' (imported from this very file) or 'other' (another file)."""
    if candidate.member_id not in set(manifest["member_id"]):
        return "new"
    meta_path = workdir.member_file(candidate.relpath, "meta")
    if os.path.exists(meta_path) and records.read_json(meta_path).get(
            "source_sha256") == candidate.sha256:
        return "same"
    return "other"


def write_member(workdir, candidate, source, dataset, settings):
    from pie.compress import quantize as pq
    from pie.models import imported, predict
    started = time.time()
    logits, labels, ids = predict.member_logits(candidate.member, source, None,
                                                settings.batch_size)
    if len(labels) == 0:
        raise pq.QuantizeError("the eval split is empty")
    target = workdir.path(candidate.model_file)
    workdir.output_folder(os.path.dirname(target))  # a linked folder is refused
    with records.atomic_path(target) as tmp:
        shutil.copyfile(candidate.path, tmp)
    # Its clean predictions, after its model file, from the pass that gives its top-1.
    top1 = predict.write_member(workdir, candidate.member_id, logits, labels, ids, "test",
                                stage=predict.PREDICTIONS_STAGE)
    row = {"member_id": candidate.member_id, "method": settings.method,
           "sparsity": settings.sparsity, "measured_sparsity": round(candidate.sparsity, 6),
           "seed": candidate.seed, "dataset": dataset,
           "model": imported.model_label("import", candidate.path), "top1": round(top1, 6),
           "path": candidate.relpath, "model_file": candidate.model_file, "parent_id": ""}
    recipe = recipes.imported_settings(dataset, settings.method, settings.sparsity)
    row["recipe"] = recipes.digest(recipe)
    meta = dict(row, recipe_settings=recipe, target_sparsity=settings.sparsity,
                source_file=os.path.abspath(candidate.path),
                source_sha256=candidate.sha256, imported=True,
                wall_time_s=round(time.time() - started, 2), manifest_row=row)
    records.write_text(workdir.member_file(candidate.relpath, "flags"), settings.flags_text)
    records.write_json(workdir.member_file(candidate.relpath, "meta"), meta)
    records.add_manifest_rows(workdir, [row])
    return row


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    paths, seeds = validate_flags(settings)
    workdir = Workdir(settings.workdir)
    source, dataset, new_config = load_source(workdir, settings)
    manifest = records.read_manifest(workdir, required=False)
    candidates = [Candidate(path, seeds[path], settings) for path in paths]
    states = {c.member_id: existing(workdir, c, manifest) for c in candidates}
    clash = [c for c in candidates if states[c.member_id] == "other"]
    if clash and not settings.force:
        raise records.ContractError(
            f"member {clash[0].member_id} exists in {workdir.manifest} from another file "
            f"than {clash[0].path}: --force replaces it")
    todo = [c for c in candidates if states[c.member_id] != "same"]
    for candidate in todo:  # every file is checked before anything is written
        candidate.open(source, settings)
    print(f"import: {len(candidates)} files, {len(candidates) - len(todo)} already "
          f"imported, {len(todo)} to add as {records.variant_key(settings.method, settings.sparsity)}",
          flush=True)
    if not todo:
        return 0
    os.makedirs(workdir, exist_ok=True)
    if new_config:
        from pie.data import sources
        sources.save_config(workdir, source, dataset=dataset, data_dir=settings.data_dir,
                            label_attribute=settings.label_attribute)
    progress = Progress(len(todo), "members")
    for candidate in todo:
        row = write_member(workdir, candidate, source, dataset, settings)
        progress.advance(1, f"{row['member_id']} from {candidate.path}: top-1 "
                            f"{row['top1']:.4f}, measured sparsity "
                            f"{row['measured_sparsity']:.4f}")
    print(f"manifest: {workdir.manifest}", flush=True)
    return 0


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

"""The layout of a study's workdir: every path a stage reads or writes, in one place.

A stage holds a `Workdir` and asks it for paths (`wd.file("tstatistic")`,
`wd.predictions_path(member_id, "fog/3")`); no stage joins fragments of a workdir
path itself. `FILES` names every file a stage writes, with its folder, its writer
and what it holds; the layout table of docs/contracts.md is checked against it
(tests/test_workdir.py), so the docs cannot drift from the code.

Stages that take `--distribution` write clean results in their folder and shifted
ones in a sub-folder named after the distribution (`fog/3` -> `fog-3`).
"""
import collections
import os

from pie import commands
from pie.io import journal, safe_paths

CLEAN = "clean"
DEFAULT_SPLIT = "test"



class Entry(collections.namedtuple("Entry", "folder name stages description")):
    """A file of the layout: its folder and name, the stages of pie.commands.TABLE
    that write it (none: the user's own file) and what it holds."""

    @property
    def writer(self):
        """The stage module whose stamp records this file: its one writing stage's;
        None for a file several stages (or the user) write, recorded by none."""
        return commands.STAGES[self.stages[0]] if len(self.stages) == 1 else None

    def written_by(self):
        """Who writes it, in words (the docs' layout table)."""
        return ", ".join(commands.STAGES[name] for name in self.stages) or "you"

# Folders of the stages' outputs (relative to W).
PER_CLASS_DIR = "per_class"
PIE_DIR = "pie"
NOISE_FLOOR_DIR = "noise_floor"
ROBUSTNESS_DIR = "robustness"
QUANTIZATION_DIR = "quantization"
REPORT_DIR = "report"
TOY_DIR = "toy"
SMOKE_DATA_DIR = "smoke_data"  # pie.stages.smoke: the miniature data of a --smoke study
CHECKPOINTS_DIR = "checkpoints"
PREDICTIONS_DIR = "predictions"
# Prediction files are Parquet; workdirs written before that hold gzip CSV files,
# which are still read (a Parquet file of the same member and distribution wins).
PREDICTIONS_SUFFIX = ".parquet"
LEGACY_PREDICTIONS_SUFFIX = ".csv.gz"

# Every file a stage writes, by key. Folder "" is W itself.
FILES = {
    "manifest": Entry("", "population.csv",
                      ("train", "quantize", "import-members"),
                      "the population manifest: one row per member"),
    "dataset_config": Entry("", "dataset.json", ("train", "import-members"),
                            "how the population's data was loaded"),
    "classes": Entry("", "classes.json", ("train", "import-members"),
                     "class names, a JSON list indexed by class id"),
    "groups": Entry("", "groups.csv", (),
                    "subgroup attributes per eval image (optional; the study makes "
                    "pie.data.mnist5k_groups' for mnist5k)"),
    "per_class_metrics": Entry(PER_CLASS_DIR, "per_class_metrics.csv",
                               ("per-class",),
                               "per member x class: recall, precision, counts"),
    "tstatistic": Entry(PER_CLASS_DIR, "tstatistic.csv", ("t-test",),
                        "per variant x class: the per-class test"),
    "tstatistic_summary": Entry(PER_CLASS_DIR, "tstatistic_summary.csv",
                                ("t-test",),
                                "per variant: classes significantly hurt / helped"),
    "subgroups": Entry(PER_CLASS_DIR, "subgroups.csv", ("subgroups",),
                       "per variant x group: error, FPR/FNR, PIE rates"),
    "pie": Entry(PIE_DIR, "pie.csv", ("pies",),
                 "per variant x image: modal labels, agreement, is_pie"),
    "pie_summary": Entry(PIE_DIR, "pie_summary.csv", ("pies",),
                         "per variant: PIE share, top-1 on PIEs and non-PIEs"),
    "noise_floor": Entry(NOISE_FLOOR_DIR, "noise_floor.csv", ("noise-floor",),
                         "per measure x variant: the finding beside seed noise's floor"),
    "robustness_accuracy": Entry(ROBUSTNESS_DIR, "accuracy.csv", ("robustness",),
                                 "per member x distribution: top-1"),
    "excess_error": Entry(ROBUSTNESS_DIR, "excess_error.csv", ("robustness",),
                          "per variant x distribution: excess error over dense"),
    "excess_error_per_seed": Entry(ROBUSTNESS_DIR, "excess_error_per_seed.csv",
                                   ("robustness",),
                                   "per variant x distribution x seed: excess error"),
    "prune_potential": Entry(ROBUSTNESS_DIR, "prune_potential.csv", ("robustness",),
                             "per method x distribution: prune potential"),
    "prune_potential_summary": Entry(ROBUSTNESS_DIR, "prune_potential_summary.csv",
                                     ("robustness",),
                                     "per pruning method: prune potential over seeds and shifts"),
    "excess_error_fit": Entry(ROBUSTNESS_DIR, "excess_error_fit.csv", ("robustness",),
                              "per method x distribution: excess error vs prune ratio fit"),
    "noise_similarity": Entry(ROBUSTNESS_DIR, "noise_similarity.csv",
                              ("noise-similarity",),
                              "per variant x eps: similarity to dense under noise"),
    "noise_similarity_per_pair": Entry(ROBUSTNESS_DIR, "noise_similarity_per_pair.csv",
                                       ("noise-similarity",),
                                       "per member pair x eps: similarity"),
    "noise_prune_potential": Entry(ROBUSTNESS_DIR, "noise_prune_potential.csv",
                                   ("noise-similarity",),
                                   "per method x eps: prune potential under noise"),
    "noise_prune_potential_per_seed": Entry(ROBUSTNESS_DIR, "noise_prune_potential_per_seed.csv",
                                            ("noise-similarity",),
                                            "per method x eps x seed: prune potential under "
                                            "noise, each member against its parent"),
    "informative_features": Entry(ROBUSTNESS_DIR, "informative_features.csv",
                                  ("informative-features",),
                                  "per variant pair: confidence on others' features"),
    "informative_features_per_image": Entry(ROBUSTNESS_DIR,
                                            "informative_features_per_image.csv",
                                            ("informative-features",),
                                            "per member pair x image: confidence"),
    "cost": Entry(QUANTIZATION_DIR, "cost.csv", ("cost",),
                  "per member: file sizes, latency, sparsity"),
    "report_html": Entry(REPORT_DIR, "index.html", ("report",),
                         "the report: one self-contained page"),
    "report_markdown": Entry(REPORT_DIR, "summary.md", ("report",),
                             "the report's summary table in Markdown (--format=md)"),
    "report_frontier": Entry(REPORT_DIR, "frontier.csv", ("report",),
                             "per variant: gzip size against forgetting, Pareto front"),
    "report_pies": Entry(REPORT_DIR, "pies.html", ("report",),
                         "the PIE explorer: every variant's PIEs by class, one page"),
    "toy_results": Entry(TOY_DIR, "results.csv", ("toy",),
                         "toy criteria study: accuracy per seed x criterion x samples"),
    "toy_rank_analysis": Entry(TOY_DIR, "rank_analysis.csv", ("toy",),
                               "toy criteria study: rank agreement of criteria"),
}

# Files inside each member's folder (`path` in the manifest).
MEMBER_FILES = {
    "keras_model": "model.keras",
    "tflite_model": "model.tflite",
    "meta": "meta.json",
    "history": "history.csv",  # recipes: a row per training epoch (pie.compress.history)
    "flags": "flags.txt",
    "checkpoint": "ckpt",
    "logs": "logs",
    "unit_mask": os.path.join("ckpt", "unit_mask.npz"),
    "weight_mask": os.path.join("ckpt", "weight_mask.npz"),
    "train_lock": ".train.lock",
}


STAMP_SUFFIX = ".stamp.json"


def stamp_in(folder, stage):
    """The stamp of `stage` in an output folder (also one outside W: --out).

    It records what the stage's outputs there were computed from (freshness) and
    each output as written: rows, bytes, SHA-256 (records.record_written).
    """
    return os.path.join(folder, f".{stage}{STAMP_SUFFIX}")


def stage_name(module):
    """A stage module's stamp name: its last part (`per_class_accuracy.gen_tstatistic`
    -> `gen_tstatistic`), the name the stages give their stamps."""
    return module.rsplit(".", 1)[-1]


def writer_stamp(path, module):
    """The stamp of the stage `module` beside the file `path`: where its record is."""
    return stamp_in(os.path.dirname(os.path.abspath(path)), stage_name(module))


def stamps_in(folder):
    """Every stage's stamp in `folder`, sorted (none when it does not exist); a linked
    folder of a workdir is refused, not listed."""
    safe_paths.checked(folder, "folder")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [os.path.join(folder, name) for name in sorted(names)
            if name.startswith(".") and name.endswith(STAMP_SUFFIX)]


def distribution_dirname(distribution):
    """`clean` -> `clean`; `gaussian_noise/3` -> `gaussian_noise-3` (a folder name)."""
    return distribution.replace("/", "-")


class Workdir:
    """A study's folder; every path of its layout comes from here."""

    def __init__(self, root):
        if isinstance(root, Workdir):
            root = root.root
        if not root:
            raise ValueError("a workdir path is required")
        self.root = os.fspath(root)
        # Every path under it that the readers and writers of pie.io touch is checked
        # from here on: no link on the way, no FIFO read (docs/contracts.md).
        safe_paths.guard(self.root)

    def __fspath__(self):
        return self.root

    def __str__(self):
        return self.root

    def __repr__(self):
        return f"Workdir({self.root!r})"

    def __eq__(self, other):
        return isinstance(other, Workdir) and other.root == self.root

    def __hash__(self):
        return hash(self.root)

    def path(self, relative):
        """`W/relative` for a relative path the toolkit itself names (not user input)."""
        return os.path.join(self.root, relative)

    def relative(self, path):
        return os.path.relpath(path, self.root)

    def checked(self, path, kind=None):
        """`path`, refused (ContractError) when a part of it below W is a link, or
        (with `kind` "file" / "folder") when it exists as something else."""
        return safe_paths.check_inside(self.root, path, kind)

    def output_folder(self, path):
        """Creates the folder `path` of W (and those on the way) for a stage's outputs,
        after refusing a linked one: nothing is written or deleted through it."""
        self.checked(path, "folder")
        journal.makedirs(path)
        return path

    # ----------------------------------------------------------------- stage files

    def folder(self, folder, distribution=CLEAN):
        """A stage's output folder; shifted distributions get a sub-folder."""
        base = os.path.join(self.root, folder)
        if distribution == CLEAN:
            return base
        return os.path.join(base, distribution_dirname(distribution))

    def file(self, key, distribution=CLEAN):
        """The path of the stage file `key` of FILES (for `distribution`)."""
        entry = FILES[key]
        return os.path.join(self.folder(entry.folder, distribution), entry.name)

    def relative_file(self, key, distribution=CLEAN):
        return self.relative(self.file(key, distribution))

    def stamp(self, folder, stage, distribution=CLEAN):
        """The freshness stamp of `stage`, beside its outputs."""
        return stamp_in(self.folder(folder, distribution), stage)

    def flags_file(self, folder, stage, distribution=CLEAN):
        """`<stage>.flags.txt` beside a stage's outputs: the flags that produced them."""
        return os.path.join(self.folder(folder, distribution), f"{stage}.flags.txt")

    @property
    def manifest(self):
        return self.file("manifest")

    @property
    def manifest_lock(self):
        return os.path.join(self.root, ".population.lock")

    @property
    def dataset_config(self):
        return self.file("dataset_config")

    @property
    def classes(self):
        return self.file("classes")

    # -------------------------------------------------------------------- members

    @staticmethod
    def member_relpath(method, sparsity, seed):
        """A member's folder relative to W (the manifest's `path`)."""
        return os.path.join(CHECKPOINTS_DIR, method, f"sparsity_{float(sparsity):g}",
                            f"seed_{int(seed)}")

    def member_dir(self, relpath):
        return os.path.join(self.root, relpath)

    @staticmethod
    def member_relfile(relpath, key):
        """A file of MEMBER_FILES relative to W (the manifest's `model_file`)."""
        return os.path.join(relpath, MEMBER_FILES[key])

    def member_file(self, relpath, key):
        """A file of MEMBER_FILES inside the member folder `relpath`."""
        return os.path.join(self.root, self.member_relfile(relpath, key))

    def model_path(self, row):
        """Absolute path of a manifest row's model file."""
        return os.path.join(self.root, row["model_file"])

    # ---------------------------------------------------------------- predictions

    def predictions_root(self, split=DEFAULT_SPLIT):
        return os.path.join(self.root, PREDICTIONS_DIR, split)

    def predictions_dir(self, distribution=CLEAN, split=DEFAULT_SPLIT):
        return os.path.join(self.predictions_root(split), distribution_dirname(distribution))

    def predictions_path(self, member_id, distribution=CLEAN, split=DEFAULT_SPLIT):
        """Where a member's predictions on `distribution` are written (Parquet)."""
        return os.path.join(self.predictions_dir(distribution, split),
                            member_id + PREDICTIONS_SUFFIX)

    def legacy_predictions_path(self, member_id, distribution=CLEAN, split=DEFAULT_SPLIT):
        """The gzip CSV file of a workdir written before predictions were Parquet."""
        return os.path.join(self.predictions_dir(distribution, split),
                            member_id + LEGACY_PREDICTIONS_SUFFIX)

    def existing_predictions_path(self, member_id, distribution=CLEAN, split=DEFAULT_SPLIT):
        """The predictions file to read: the Parquet one, else an old gzip CSV one.

        When neither exists this is the Parquet path (so a message names the file a
        stage would write).
        """
        path = self.predictions_path(member_id, distribution, split)
        if not os.path.exists(path):
            legacy = self.legacy_predictions_path(member_id, distribution, split)
            if os.path.exists(legacy):
                return legacy
        return path

    def prediction_folders(self, split=DEFAULT_SPLIT):
        """The distribution folders that exist under predictions/<split>/, sorted."""
        root = self.checked(self.predictions_root(split), "folder")
        if not os.path.isdir(root):
            return []
        return sorted(os.path.join(root, name) for name in os.listdir(root)
                      if os.path.isdir(os.path.join(root, name)))

    def corruption_source(self, distribution, split=DEFAULT_SPLIT):
        """How a shifted prediction folder was made (robustness_tests.corruptions)."""
        return os.path.join(self.predictions_dir(distribution, split), "corruption_source.json")

    # ---------------------------------------------------------- other stage folders

    def pie_tfrecords(self, variant_key=None, distribution=CLEAN):
        """`W/pie/tfrecords[/<variant>]`: the PIE / non-PIE TFRecords of a variant."""
        root = os.path.join(self.folder(PIE_DIR, distribution), "tfrecords")
        return root if variant_key is None else os.path.join(root, variant_key)

    @property
    def report_dir(self):
        return self.folder(REPORT_DIR)

    @property
    def toy_dir(self):
        return self.folder(TOY_DIR)

    @property
    def smoke_data_dir(self):
        """Where a --smoke study writes its miniature data (pie.stages.smoke)."""
        return self.folder(SMOKE_DATA_DIR)

    def toy_figures(self):
        """The toy study's PNG figures under W/toy, sorted; links are never followed."""
        found = []
        self.checked(self.toy_dir, "folder")  # (os.walk would follow a linked W/toy)
        for folder, subfolders, names in os.walk(self.toy_dir, followlinks=False):
            subfolders.sort()
            found += [os.path.join(folder, name) for name in names
                      if name.endswith(".png") and not os.path.islink(os.path.join(folder, name))]
        return sorted(found)

    def toy_stamps(self):
        """The toy study's stamps under W/toy (one per folder it wrote), sorted; the
        report embeds only the figures they list. Links are never followed."""
        stage = stage_name(FILES["toy_results"].writer)
        found = []
        self.checked(self.toy_dir, "folder")
        for folder, subfolders, names in os.walk(self.toy_dir, followlinks=False):
            subfolders.sort()
            stamp = stamp_in(folder, stage)
            if os.path.basename(stamp) in names and not os.path.islink(stamp):
                found.append(stamp)
        return sorted(found)

    def worker_scratch(self, task_id):
        """A non-chief worker's private scratch copy (multi-worker training)."""
        return os.path.join(self.root, ".workers", str(task_id))


def layout_rows():
    """(path pattern, writer, description) for every file in FILES, for the docs."""
    rows = []
    for entry in FILES.values():
        pattern = "/".join(part for part in ("W", entry.folder, entry.name) if part)
        rows.append((pattern, entry.written_by(), entry.description))
    return rows


def layout_markdown():
    """The layout table of docs/contracts.md (tests/test_workdir.py keeps them equal)."""
    lines = ["| file | written by | what it holds |", "|---|---|---|"]
    lines += [f"| `{pattern}` | {writer} | {description} |"
              for pattern, writer, description in layout_rows()]
    return "\n".join(lines)


if __name__ == "__main__":  # prints the table to paste into docs/contracts.md
    print(layout_markdown())

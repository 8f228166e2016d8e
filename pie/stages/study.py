r"""One study, every stage: what `bash run.sh` runs.

  python -m pie.stages.study [--workdir=runs/demo]                  # the embedded study
  python -m pie.stages.study --flagfile=configs/hooker_cifar10_wrn.cfg [--workdir=DIR]
  python -m pie.stages.study --dataset=digits --model=mlp --seeds=2 --epochs=2 --workdir=W

Takes every flag of save_checkpoint.train (its defaults here are the embedded
study's: mnist5k, small_cnn, sparsities 0,0.5,0.8,0.95, 6 seeds, 8 epochs, one
training worker per core) plus the
choices of the later stages below, and runs the stages, each as its own `python -m`
process, passing each what it needs: the workdir, the data folder, and its own
options. The training stages run one after another; the later ones run side by side
on a machine of several cores, each once the stages it reads from have finished
(--stage_jobs, pie.stages.stage_processes; the cost stage, whose figures are
timings, alone), each stage's output printed as one block. Stages that need images (PIE TFRecords, corruptions,
noise similarity, informative features) are skipped for the toy 2-D sets; the
subgroup stage runs with --groups_csv or --group_attributes (and on mnist5k with
its image-property groups, pie.data.mnist5k_groups: examples/groups_mnist5k.md);
the toy criteria study runs in the embedded study (mnist5k, small_cnn) or when
--toy_dataset is given. On a workdir that holds a population, the dataset and
population flags not given are the workdir's, and a given one that contradicts
them is refused (pie.stages.study_workdir). Every stage skips what is already done,
so a rerun continues. A stage that fails stops the study with its exit code.
"""
import collections
import os
import sys
import time

from absl import flags

from pie import commands
from pie.io import cli, records
from pie.io.workdir import Workdir
from pie.stages import stage_processes, study_workdir

FLAGS = flags.FLAGS
TRAIN_MODULE = commands.STAGES["train"]
# The embedded study: save_checkpoint.train's flags that differ from its own defaults.
EMBEDDED = {"workdir": "runs/demo", "dataset": "mnist5k", "model": "small_cnn",
            "sparsities": "0,0.5,0.8,0.95", "seeds": 6, "epochs": 8, "workers": 0}
# The methods people ship (issue 28) the embedded study adds beside its own populations.
EXTRA_METHODS = ("m_by_n", "qat", "distill")
IMAGE_STAGES = ("pie-tfrecords", "corruptions", "robustness", "noise-similarity",
                "informative-features")
# The stages it runs, in order, and its --skip names: pie.commands' stage table.
STAGE_NAMES = commands.STUDY_STAGES
# mnist5k gets its image-property groups (stroke, width) when no groups are given
# (examples/groups_mnist5k.md): a module of the package, so any current folder works.
GROUPS_MODULE = "pie.data.mnist5k_groups"
GROUPS_DATASETS = ("mnist5k",)
STAMP_FILE = ".study.stamp.json"  # Workdir(W).stamp("", "study")


def define_flags(flag_values=flags.FLAGS):
    """save_checkpoint.train's flags (embedded-study defaults) and the later stages'."""
    from save_checkpoint import train
    train.define_flags(flag_values)
    for name, value in EMBEDDED.items():
        flag_values.set_default(name, value)
    flags.DEFINE_list("extra_methods", list(EXTRA_METHODS),
                      "Populations made after the main training, one training stage each, "
                      "from the same seeds (pie.compress: m_by_n at its pattern's sparsity, "
                      "pqat at --sparsities' pruned levels, qat, cluster and distill at 0); "
                      "'none' trains none.", flag_values=flag_values)
    flags.DEFINE_string("quantize_modes", "float16,dynamic_int8,full_int8",
                        "pie.stages.quantize --modes; 'none' skips quantization.",
                        flag_values=flag_values)
    flags.DEFINE_string("corruptions", "all", "robustness_tests.corruptions --corruptions.",
                        flag_values=flag_values)
    flags.DEFINE_string("severities", "3", "robustness_tests.corruptions --severities.",
                        flag_values=flag_values)
    flags.DEFINE_integer("noise_draws", 2, "robustness_tests.noise_similarity --draws.",
                         flag_values=flag_values)
    flags.DEFINE_integer("noise_images", 200, "robustness_tests.noise_similarity --images.",
                         flag_values=flag_values)
    flags.DEFINE_integer("informative_images", 50,
                         "robustness_tests.informative_features --images.",
                         flag_values=flag_values)
    flags.DEFINE_integer("cost_repeats", 5, "pie.stages.cost --repeats.",
                         flag_values=flag_values)
    flags.DEFINE_integer("cost_warmup", 5, "pie.stages.cost --warmup.",
                         flag_values=flag_values)
    flags.DEFINE_string("groups_csv", None, "per_class_accuracy.subgroups --groups_csv "
                        "(mnist5k: made by pie.data.mnist5k_groups when not given).",
                        flag_values=flag_values)
    flags.DEFINE_string("group_attributes", None, "per_class_accuracy.subgroups "
                        "--group_attributes, e.g. Male,Young for celeb_a.",
                        flag_values=flag_values)
    flags.DEFINE_string("toy_dataset", "moons", "pie.stages.toy_experiment --dataset: "
                        "the toy criteria study runs in the embedded study (mnist5k, "
                        "small_cnn) or when this is given; 'none' skips it.",
                        flag_values=flag_values)
    flags.DEFINE_integer("toy_seeds", 2, "pie.stages.toy_experiment --seeds.",
                         flag_values=flag_values)
    flags.DEFINE_string("toy_samples_per_class", "1,10,100",
                        "pie.stages.toy_experiment --samples_per_class.",
                        flag_values=flag_values)
    flags.DEFINE_enum("report_format", "md", ["html", "md"], "pie.report.build --format.",
                      flag_values=flag_values)
    flags.DEFINE_list("skip", [], "Stages not to run: " + ", ".join(STAGE_NAMES) + ".",
                      flag_values=flag_values)
    flags.DEFINE_integer("stage_jobs", 0, "Stages after training run at once, each when "
                         "the stages it reads from have finished (pie.stages."
                         "stage_processes; the cost stage always alone): 0 is one per core "
                         f"up to {stage_processes.MAX_AUTOMATIC_JOBS}, 1 one after another.",
                         flag_values=flag_values)
    flags.DEFINE_bool("smoke", False, "Every stage of this study on a miniature of its "
                      "data: the same recipe, fewer seeds, levels, epochs and images "
                      "(pie.stages.smoke; one line says what changed).",
                      flag_values=flag_values)


def train_args(flag_values):
    """save_checkpoint.train's flags whose value differs from that stage's own default."""
    from save_checkpoint import train
    defaults = flags.FlagValues()
    train.define_flags(defaults)
    args = []
    for name in sorted(defaults):
        if name == "epochs" and flag_values.init_from and not flag_values.present(name):
            continue  # --init_from: the given model is the dense member, not retrained
        if getattr(flag_values, name) != defaults[name].default:
            args.append(flag_values.serialized(name))
    return args


def extra_methods(flag_values):
    """The --extra_methods names ('none': no name)."""
    return [name for name in flag_values.extra_methods if name != "none"]


def extra_levels(flag_values, method):
    """The sparsity levels of one --extra_methods population."""
    from pie.compress import methods, methods_m_by_n
    if method == "m_by_n":
        pattern = methods_m_by_n.parse_m_by_n(flag_values.m_by_n)
        return [f"{methods_m_by_n.pattern_sparsity(pattern):g}"]
    if method == "pqat":
        return [level for level in flag_values.sparsities.split(",") if float(level) > 0]
    if method in methods.names() and methods.get(method).keeps_zero_level:
        return ["0"]
    raise cli.UsageError(f"--extra_methods takes methods made from the study's members "
                         f"(m_by_n, qat, pqat, cluster, distill), got '{method}'")


def extra_settings(flag_values, method):
    """The training flags an --extra_methods run changes: its method and levels (pqat:
    the pruned population of the study's --method, unless --parent_method is given)."""
    settings = {"method": method, "sparsities": ",".join(extra_levels(flag_values, method))}
    if method == "pqat":
        settings["parent_method"] = (flag_values.parent_method
                                     if flag_values.present("parent_method")
                                     else flag_values.method)
    return settings


def extra_train_args(flag_values, method):
    """The training stage's arguments of one --extra_methods population: the main
    population's flags with that method and the sparsity levels it takes."""
    settings = extra_settings(flag_values, method)
    args = [arg for arg in train_args(flag_values)
            if arg.split("=", 1)[0][2:] not in settings]
    return args + [f"--{name}={value}" for name, value in settings.items()]


PlannedStage = collections.namedtuple("PlannedStage", "name module args")


def stage_args(flag_values):
    """{stage name: its command-line arguments} of the stages after training that
    these settings run (a stage left out is not run)."""
    workdir = flag_values.workdir
    w = f"--workdir={workdir}"
    data = [f"--data_dir={flag_values.data_dir}"] if flag_values.data_dir else []
    args = {}
    if flag_values.quantize_modes != "none":
        args["quantize"] = [w, f"--modes={flag_values.quantize_modes}"] + data
    args.update({"predictions": [w] + data, "per-class": [w], "t-test": [w], "pies": [w],
                 "pie-tfrecords": [w] + data})
    groups = []
    if flag_values.groups_csv:
        groups = [f"--groups_csv={flag_values.groups_csv}"]
    elif flag_values.dataset in GROUPS_DATASETS and not flag_values.group_attributes:
        groups = [f"--groups_csv={Workdir(workdir).file('groups')}"]
    if flag_values.group_attributes:
        groups.append(f"--group_attributes={flag_values.group_attributes}")
    if groups:
        args["subgroups"] = [w] + groups + data
    args.update({
        "corruptions": [w, f"--corruptions={flag_values.corruptions}",
                        f"--severities={flag_values.severities}"],
        "robustness": [w],
        "noise-floor": [w],
        "noise-similarity": [w, f"--draws={flag_values.noise_draws}",
                             f"--images={flag_values.noise_images}"],
        "informative-features": [w, f"--images={flag_values.informative_images}"],
        "cost": [w, f"--repeats={flag_values.cost_repeats}",
                 f"--warmup={flag_values.cost_warmup}"]})
    if runs_toy(flag_values):
        args["toy"] = [f"--dataset={flag_values.toy_dataset}",
                       f"--seeds={flag_values.toy_seeds}",
                       f"--samples_per_class={flag_values.toy_samples_per_class}",
                       f"--out={Workdir(workdir).toy_dir}"]
    args["report"] = [w, f"--format={flag_values.report_format}"]
    return args


def runs_toy(flag_values):
    """Whether the toy criteria study runs: in the embedded study (its data and
    model), or when --toy_dataset is given; never 'none'. A study of other data
    does not run it unasked."""
    if flag_values.toy_dataset == "none":
        return False
    return flag_values.present("toy_dataset") or all(
        getattr(flag_values, name) == EMBEDDED[name] for name in ("dataset", "model"))


def plan(flag_values, family):
    """[PlannedStage(name, module, args)] of the study after training, for a data
    family, in the stage table's order (pie.commands)."""
    args = stage_args(flag_values)
    return [PlannedStage(name, commands.STAGES[name], args[name]) for name in STAGE_NAMES
            if name in args and name not in flag_values.skip
            and not (family == "toy" and name in IMAGE_STAGES)]


def train_jobs(settings):
    """The training stages, one after another: the main population, then each
    --extra_methods population made from it."""
    if "train" in settings.skip:
        return []
    python = sys.executable
    jobs = [stage_processes.Job("train", [("train", [python, "-m", TRAIN_MODULE]
                                           + train_args(settings))])]
    for method in extra_methods(settings):
        name = f"train {method}"
        jobs.append(stage_processes.Job(name, [(name, [python, "-m", TRAIN_MODULE]
                                                + extra_train_args(settings, method))]))
    return jobs


def stage_jobs(settings, family):
    """The stages after training as stage_processes.Jobs, in the table's order, each
    waiting for the stages it reads from (pie.commands.prerequisites)."""
    python = sys.executable
    groups = Workdir(settings.workdir).file("groups")
    jobs = []
    for stage in plan(settings, family):
        steps = [(stage.name, [python, "-m", stage.module] + stage.args)]
        if stage.name == "subgroups" and f"--groups_csv={groups}" in stage.args \
                and not settings.groups_csv and not os.path.exists(groups):
            steps.insert(0, ("groups", [python, "-m", GROUPS_MODULE,
                                            f"--workdir={settings.workdir}",
                                            f"--output={groups}"]))
        jobs.append(stage_processes.Job(stage.name, steps,
                                        after=commands.prerequisites(stage.name),
                                        alone=commands.BY_NAME[stage.name].alone))
    return jobs


def jobs_at_once(settings):
    """--stage_jobs, 0 resolved to one per core (stage_processes.automatic_jobs)."""
    return settings.stage_jobs or stage_processes.automatic_jobs()


def _fingerprint(workdir):
    """{relative path: [size, mtime_ns]} of every file in W but the study's own stamp,
    lock files and the stages' temporary files."""
    prints = {}
    for folder, subfolders, names in os.walk(workdir):
        subfolders.sort()
        for name in sorted(names):
            if name == STAMP_FILE or name.endswith(".lock") or name.startswith(".tmp-"):
                continue
            path = os.path.join(folder, name)
            stat = os.stat(path)
            prints[os.path.relpath(path, workdir)] = [stat.st_size, stat.st_mtime_ns]
    return prints


def _stamp_content(flag_values, workdir):
    """The study's flags (its own and train's, as given) and W's files."""
    import pie
    own = flags.FlagValues()
    define_flags(own)
    return {"version": pie.__version__,
            "flags": [flag_values.serialized(name) for name in sorted(own)],
            "files": _fingerprint(workdir)}


def is_up_to_date(flag_values):
    """Whether the last study in W ran with these flags and nothing in W changed since:
    then no stage would do anything, and the study skips even their start-up."""
    path = Workdir(flag_values.workdir).stamp("", "study")
    if not os.path.exists(path):
        return False
    try:
        recorded = records.read_json(path)
    except records.ContractError:
        return False
    return recorded == _stamp_content(flag_values, flag_values.workdir)


def validate(flag_values):
    unknown = [name for name in flag_values.skip if name not in STAGE_NAMES]
    if unknown:
        raise cli.UsageError(f"unknown --skip stage {', '.join(unknown)}; allowed: "
                             f"{', '.join(STAGE_NAMES)}")
    if not flag_values.workdir:
        raise cli.UsageError("--workdir is required")
    check_workdir(flag_values.workdir)
    check_train_flags(flag_values)
    for method in extra_methods(flag_values):
        check_train_flags(flag_values, **extra_settings(flag_values, method))
    check_stage_flags(flag_values)


def check_stage_flags(flag_values):
    """The later stages' flags, checked before any stage runs: a bad one found only
    when its stage starts would leave the stages before it run for nothing."""
    from robustness_tests import corruptions
    corruptions.parse_corruptions(flag_values.corruptions)
    corruptions.parse_severities(flag_values.severities)
    if flag_values.stage_jobs < 0:
        raise cli.UsageError(f"--stage_jobs must be at least 0 (0: one per core), got "
                             f"{flag_values.stage_jobs}")
    for name in ("noise_draws", "noise_images", "informative_images", "cost_repeats",
                 "toy_seeds"):
        if getattr(flag_values, name) < 1:
            raise cli.UsageError(f"--{name} must be at least 1, got "
                                 f"{getattr(flag_values, name)}")
    if flag_values.cost_warmup < 0:
        raise cli.UsageError(f"--cost_warmup must be at least 0, got {flag_values.cost_warmup}")


def check_workdir(workdir):
    """W may be missing (training makes it), else it is a folder: a dangling link or a
    file would fail only inside the first stage."""
    if os.path.islink(workdir) and not os.path.exists(workdir):
        raise cli.UsageError(f"--workdir={workdir} is a symbolic link to "
                             f"{os.readlink(workdir)}, which does not exist")
    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        raise cli.UsageError(f"--workdir={workdir} is not a folder")


def check_train_flags(flag_values, **changes):
    """The training stage's flags checked as that stage checks them, before any stage
    runs (pie.compress.config.TrainConfig); `changes`: an --extra_methods run's."""
    import dataclasses
    from pie.compress.config import TrainConfig
    values = {field.name: getattr(flag_values, field.name)
              for field in dataclasses.fields(TrainConfig)}
    values.update(changes)
    if flag_values.init_from and not flag_values.present("epochs"):
        values["epochs"] = None  # the given model is the dense member, not retrained
    TrainConfig(**values)


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    if not settings.smoke:
        settings = study_workdir.follow(settings, define_flags)
    validate(settings)
    if settings.smoke:  # the same study in miniature, its data written first
        from pie.stages import smoke
        settings, line = smoke.shrink(settings)
        validate(settings)
        # A smoke workdir is followed as its miniature flags (the same on a rerun);
        # its data is written only once they are known to agree.
        settings = study_workdir.follow(settings, define_flags)
        print(line, flush=True)
        smoke.write_data(settings)
    started = time.time()
    if os.path.isdir(settings.workdir) and is_up_to_date(settings):
        print(f"== study up to date: the same flags, and nothing in {settings.workdir} changed "
              "since it finished (delete its .study.stamp.json to run every stage's check)",
              flush=True)
        print(f"report: {Workdir(settings.workdir).file('report_html')}", flush=True)
        return 0
    try:
        stage_processes.run_all(train_jobs(settings), 1)
        family = records.read_dataset_config(settings.workdir).get("family")
        stage_processes.run_all(stage_jobs(settings, family), jobs_at_once(settings))
    except stage_processes.StageFailed as failure:
        print(f"error: {failure}", file=sys.stderr, flush=True)
        return failure.code
    # Written last: a study that failed or was killed leaves no stamp and runs again.
    records.write_json(Workdir(settings.workdir).stamp("", "study"),
                       _stamp_content(settings, settings.workdir))
    print(f"== done in {time.time() - started:.0f}s", flush=True)
    print(f"report: {Workdir(settings.workdir).file('report_html')}", flush=True)
    return 0


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

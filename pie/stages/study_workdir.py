"""What an existing workdir fixes of a study run on it again.

A workdir holds one population: its data (`W/dataset.json`) and the flags of the
training run that made it (each trained member's `flags.txt`). A study on that
workdir takes those flags from it when they are not given, and refuses a given one
that contradicts it (one line, exit 2, before anything runs): without this, a rerun
without `--dataset` would take the flag's default (mnist5k) and run mnist5k's
extras on another dataset. `recorded_flags` is the one reader of what a workdir
fixes; `follow` applies it to the study's settings.
"""
import collections
import os

from pie.compress import config
from pie.io import cli, records, safe_paths
from pie.io.workdir import Workdir

# dataset.json keys that are the training stage's flags of the same name.
FROM_DATASET_JSON = ("dataset", "label_attribute", "label_offset", "toy_noise", "toy_seed")
# Taken from dataset.json when not given, but a given one is kept: a data folder
# can move without the data changing.
MOVABLE = ("data_dir",)
# The population's flags, from the last training run's flags.txt (absent there: None).
POPULATION = ("model", "width", "method", "sparsities", "seeds", "epochs")
# The rest of its recipe (pie.compress.config): followed where its flags.txt has the
# line (a workdir of an older version may not), so that a study run again without
# them trains the same recipe, not the defaults (which training would refuse).
REST_OF_RECIPE = tuple(name for name in config.RECIPE_FIELDS + config.PRUNED_RECIPE_FIELDS
                     if name not in FROM_DATASET_JSON + POPULATION)
# A flags.txt of the training stage has these lines (quantize's and import_members'
# flags.txt have not): it says how the population was trained.
TRAINING_RUN_LINES = ("model", "seeds", "sparsities")
MAX_FLAG_FILE_BYTES = 1_000_000

Recorded = collections.namedtuple("Recorded", "value source")


def recorded_flags(workdir):
    """{flag name: Recorded(value, the file it comes from)} of what `workdir` fixes:
    nothing when it holds no population yet (no dataset.json)."""
    if not os.path.isdir(workdir):
        return {}  # a new workdir, or not a folder (the study's own check says so)
    workdir = Workdir(workdir)
    if not os.path.lexists(workdir.dataset_config):
        return {}
    config = records.read_dataset_config(workdir)
    source = workdir.relative(workdir.dataset_config)
    # A key left out (a workdir of an older version) fixes nothing; toy_seed null is 0,
    # as the stages read it (pie.data.sources.load_for_workdir).
    recorded = {name: Recorded(config[name], source) for name in FROM_DATASET_JSON
                if name in config}
    if "toy_seed" in recorded and recorded["toy_seed"].value is None:
        recorded["toy_seed"] = Recorded(0, source)
    if config.get("data_dir") is not None:
        recorded["data_dir"] = Recorded(config["data_dir"], source)
    run = last_training_run(workdir)
    if run is not None:
        path, lines = run
        for name in POPULATION + tuple(n for n in REST_OF_RECIPE if n in lines):
            recorded[name] = Recorded(_parsed(name, lines.get(name), path),
                                      workdir.relative(path))
    return recorded


def last_training_run(workdir):
    """(flags.txt path, {flag: text}) of the member of the main population trained
    last (members a method made from another member, as the study's --extra_methods,
    left out), or None when no member was trained here."""
    from pie.compress import methods
    manifest = records.read_manifest(workdir, required=False)
    paths = [workdir.member_file(relpath, "flags") for relpath in manifest["path"]]
    found = []
    for path in paths:
        safe_paths.checked(path)
        if os.path.isfile(path):
            found.append((os.stat(path).st_mtime_ns, path))
    for _, path in sorted(found, reverse=True):
        lines = _flag_lines(path)
        if not all(name in lines for name in TRAINING_RUN_LINES):
            continue  # quantized or imported members: not a training run's flags
        method = lines.get("method", "")
        if method in methods.names() and methods.get(method).trains_members:
            continue
        return path, lines
    return None


def _flag_lines(path):
    """{name: text} of the `--name=value` lines of a flags.txt (nothing else read:
    a workdir is untrusted, its --flagfile lines are not followed)."""
    with safe_paths.open_regular(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read(MAX_FLAG_FILE_BYTES)
    lines = {}
    for line in text.splitlines():
        if line.startswith("--") and "=" in line:
            name, value = line[2:].split("=", 1)
            lines[name] = value
    return lines


def _parsed(name, text, path):
    """The value of training flag `name` written as `text` (None: not written)."""
    if text is None:
        return None
    flag = _train_flags()[name]
    try:
        flag.parse(text)
    except Exception as error:  # absl raises several types for a bad value
        raise records.ContractError(f"{path}: --{name}={text} does not parse: "
                                    f"{str(error).splitlines()[0]}")
    return flag.value


def _train_flags():
    from absl import flags
    from save_checkpoint import train
    values = flags.FlagValues()
    train.define_flags(values)
    return values


def comparable(name, value):
    """A flag's value as compared with the workdir's: sparsity levels as a set."""
    if name == "sparsities" and value is not None:
        return tuple(sorted({float(level) for level in str(value).split(",")
                             if level.strip()}))
    return value


def contradiction(workdir, name, given, recorded):
    """The one line refusing a given flag: the flag, the given and the workdir's value."""
    has = (f"no --{name}" if recorded.value is None
           else f"--{name}={recorded.value}")
    return (f"--{name}={'' if given is None else given} contradicts --workdir={workdir}: "
            f"its population has {has} ({recorded.source}); leave --{name} out or use "
            "another --workdir")


def follow(settings, define_flags):
    """The study's settings with the workdir's recorded flags for those not given; a
    UsageError when a given one contradicts them. `define_flags`: the study's."""
    recorded = recorded_flags(settings.workdir) if settings.workdir else {}
    changes = {}
    for name, entry in sorted(recorded.items()):
        if not settings.present(name):
            if settings.as_dict()[name] != entry.value:
                changes[name] = entry.value
        elif name not in MOVABLE and \
                comparable(name, getattr(settings, name)) != comparable(name, entry.value):
            raise cli.UsageError(contradiction(settings.workdir, name,
                                               getattr(settings, name), entry))
    if not changes:
        return settings
    return _with_values(settings, changes, define_flags)


def _with_values(settings, changes, define_flags):
    """Settings with `changes` as if given on the command line (serialized as that),
    still not `present` (a workdir's value is no more a given flag than a default)."""
    from absl import flags
    values = flags.FlagValues()
    define_flags(values)
    serialized = {name: settings.serialized(name) for name in settings.as_dict()}
    for name, value in changes.items():
        values[name].value = value
        serialized[name] = values[name].serialize()
    text = "\n".join(line for _, line in sorted(serialized.items()) if line) + "\n"
    merged = dict(settings.as_dict(), **changes)
    present = [name for name in merged if settings.present(name)]
    return cli.Settings(merged, present, text, serialized)

"""What every stage script shares: flag parsing helpers, exit codes, saved flags,
and stage settings as frozen dataclasses (`option`, `define_flags_of`)."""
import dataclasses
import os
import sys
import typing

from absl import app, flags

from pie.io import errors, journal, progress

# Errors a user can fix by changing the command: one line on stderr, exit 2.
USAGE_EXIT = 2


UsageError = errors.UsageError


def user_errors():
    """The exception types that mean 'bad input', not 'bug'."""
    return (errors.InputError,)


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_EXIT)


def run(main):
    """absl's app.run, with bad input reported as one line and exit code 2."""
    def guarded(argv):
        # Libraries' INFO lines (TensorFlow checkpoints, tfds) drown the stages' progress.
        progress.quiet_libraries()
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; every option is a --flag")
        try:
            tidy_workdir(flags.FLAGS)
            from pie.io import records
            with forced(flags.FLAGS), records.writing_as(_main_module()):
                code = main(argv)
        except Exception as error:
            bad_input = error if isinstance(error, user_errors()) else errors.from_library(error)
            if bad_input is None:
                raise
            fail(str(bad_input))
        finished(code)
    app.run(guarded, flags_parser=_parse_flags)


def _main_module():
    """The stage module running as `__main__` (python -m, or `pie <stage>`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None)


def finished(code):
    """Ends a stage process whose outputs are all written (each file renamed into
    place and synced): output streams and logs flushed, then straight out. The
    interpreter's own shutdown with TensorFlow loaded takes about a second more,
    which every worker process and every stage of a study would pay."""
    import logging
    import numbers
    if code is None:
        code = 0
    elif not isinstance(code, numbers.Integral) or isinstance(code, bool):
        print(code, file=sys.stderr)  # what sys.exit does with a non-integer
        code = 1
    # The TFLite children's zygote (pie.models.tflite_child), if one was started: ended
    # and reaped here, so no process outlives the stage and its CPU time is the stage's.
    child_module = sys.modules.get("pie.models.tflite_child")
    if child_module is not None:
        child_module.close_zygote()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(int(code))


def _workdir(flag_values):
    return flag_values["workdir"].value if "workdir" in flag_values else None


def tidy_workdir(flag_values):
    """Rolls back the --force runs killed in the stage's --workdir (their journals),
    and removes the `.tmp-*` files killed runs left there."""
    _tidy(_workdir(flag_values))


def _tidy(workdir):
    if workdir and os.path.isdir(workdir):
        for line in journal.recover(workdir):
            print(line, file=sys.stderr)
        from pie.io import records  # pandas: only once a stage runs
        for path in records.remove_stale_temporaries(workdir):
            print(f"removed {path}, left by a killed run", file=sys.stderr)


def forced(flag_values):
    """The undo journal of a stage run with --force: its outputs change only when it
    succeeds (pie.io.journal); a no-op without --force."""
    force = "force" in flag_values and flag_values["force"].value is True
    return journal.transaction(_workdir(flag_values), force)


def _parse_flags(argv):
    """Flag errors (unknown enum value, bad type) are bad input too: one line, exit 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])


class Settings:
    """A stage's parsed flags, frozen: `settings.workdir`, `settings.present("epochs")`
    (given on the command line or as a keyword), and `settings.flags_text` (its flags
    as `--name=value` lines, usable with --flagfile). Built once from the flags
    (`settings_of`) and passed down: nothing below the stage's `main` reads FLAGS."""

    def __init__(self, values, present, flags_text, serialized=None):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_present", frozenset(present))
        object.__setattr__(self, "flags_text", flags_text)
        object.__setattr__(self, "_serialized", dict(serialized or {}))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting '{name}'") from None

    def __setattr__(self, name, value):
        raise AttributeError("settings are frozen")

    def __contains__(self, name):
        return name in self._values

    def present(self, name):
        return name in self._present

    def as_dict(self):
        """{flag name: value}."""
        return dict(self._values)

    def serialized(self, name):
        """The flag as the command line gives it (`--name=value`; '' for None)."""
        return self._serialized[name]

    def replace(self, **changes):
        return Settings(dict(self._values, **changes), self._present, self.flags_text,
                        self._serialized)


def _stage_flags(flag_values, module_name=None):
    """The stage's own flags (and those it takes from `pie` modules): those defined by
    `module_name`, or by the `__main__` module on the command line."""
    by_module = flag_values.flags_by_module_dict()
    if module_name:
        main_names = {module_name}
    else:
        main_names = {"__main__", sys.argv[0], getattr(sys.modules["__main__"], "__file__", "")}
    return {flag.name: flag for module, module_flags in by_module.items()
            if module in main_names or module.startswith("pie.")
            for flag in module_flags}


def settings_of(flag_values, module_name=None):
    """The Settings of parsed flags: the command line's (`module_name` None) or one
    call's FlagValues of the stage module `module_name`."""
    chosen = _stage_flags(flag_values, module_name)
    lines = [chosen[name].serialize() for name in sorted(chosen)]
    text = "\n".join(line for line in lines if line) + "\n"
    return Settings({name: flag.value for name, flag in chosen.items()},
                    [name for name, flag in chosen.items() if flag.present], text,
                    {name: flag.serialize() for name, flag in chosen.items()})


def call_stage(module, values):
    """Runs a stage module in this process with `values` as its flags: the Python API
    of the stages (`predictions.run(workdir=..., batch_size=64)`). The flags are parsed
    in a FlagValues of this call only into the stage's Settings, which go to the
    module's `execute(settings)`; nothing global changes, so any number of stages run
    in one process. A value is what the command line would take (lists may be Python
    lists, booleans True/False; None keeps the default); bad input raises
    errors.InputError (UsageError for flags) instead of exiting."""
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    return _call(module, flag_values, [_argument(flag_values, module.__name__, name, value)
                                       for name, value in values.items() if value is not None])


def stage_runner(module_name):
    """The `run(**flags)` of a stage module (`run = cli.stage_runner(__name__)`, after
    its `define_flags`), with the stage's flags as keyword-only parameters (and their
    defaults) in its signature."""
    import inspect

    def run(**values):
        return call_stage(sys.modules[module_name], values)
    run.__doc__ = (f"Runs {module_name} in this process: keyword arguments are its flags, "
                   "e.g. run(workdir='W'); bad input raises errors.InputError (docs/api.md).")
    flag_values = flags.FlagValues()
    sys.modules[module_name].define_flags(flag_values)
    run.__signature__ = inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=flag.default)
        for name, flag in sorted(_stage_flags(flag_values, module_name).items())])
    return run


def call_stage_argv(module, args):
    """call_stage with command-line arguments (`["--workdir=W", "--force"]`)."""
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    return _call(module, flag_values, list(args))


def _call(module, flag_values, args):
    try:
        flag_values([module.__name__, *args])
    except flags.Error as error:
        raise UsageError(str(error).splitlines()[0])
    settings = settings_of(flag_values, module.__name__)
    return run_config(module.execute, settings, module.__name__,
                      force="force" in settings and settings.force is True)


def _argument(flag_values, module_name, name, value):
    """One `--name=value` argument of call_stage, from a Python value."""
    if name not in flag_values:
        allowed = ", ".join(sorted(_stage_flags(flag_values, module_name)))
        raise UsageError(f"{module_name} has no flag '{name}'; allowed: {allowed}")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (list, tuple)):
        value = ",".join(str(item) for item in value)
    return f"--{name}={value}"


def require_workdir(workdir):
    """The workdir of a stage that reads earlier stages' files: given, and a folder."""
    if not workdir:
        raise UsageError("--workdir is required: the folder holding population.csv")
    if not os.path.isdir(workdir):
        raise UsageError(f"--workdir={workdir} is not a folder")


def parse_slice(text, name, index="i", count="n"):
    """`i/n` of a slice flag (--shard, --seed_slice): (i, n) with 0 <= i < n."""
    try:
        first, total = (int(part) for part in text.split("/"))
    except ValueError:
        first, total = -1, 0
    if total < 1 or not 0 <= first < total:
        raise UsageError(f"--{name} must be {index}/{count} with integers 0 <= {index} < "
                         f"{count}, got '{text}'")
    return first, total


def parse_floats(text, name):
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be comma-separated numbers, got '{text}'")
    if not values:
        raise UsageError(f"--{name} is empty")
    return values


def parse_ints(text, name):
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be comma-separated integers, got '{text}'")
    if not values:
        raise UsageError(f"--{name} is empty")
    return values


def parse_names(text, name, allowed, all_value="all"):
    """Comma-separated names from `allowed`; `all` means every one of them."""
    if text.strip() == all_value:
        return list(allowed)
    names = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in names if item not in allowed]
    if unknown or not names:
        raise UsageError(f"unknown --{name} {', '.join(unknown) or '(empty)'}; allowed: "
                         f"{', '.join(allowed)} or {all_value}")
    return names


# ------------------------------------------------------- settings as dataclasses
#
# A stage's settings are one frozen dataclass whose fields are made with `option`
# (default, help, choices). Its command line defines one flag per field
# (`define_flags_of`) and builds the config once (`config_from_flags`); its Python
# API builds the config from keywords (`make_config`). Nothing reads absl's FLAGS
# after that.


def option(default, help, choices=None):
    """A config field with its flag's help text (and allowed values)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def _field_kind(field):
    """(base type, optional) of a field annotated T or Optional[T]."""
    kind = field.type
    args = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Union and type(None) in args:
        (base,) = [arg for arg in args if arg is not type(None)]
        return base, True
    return kind, False


def define_flags_of(config_class, flag_values, module_name=None):
    """One absl flag per field of `config_class`, in `flag_values`; with `module_name`
    (the stage module's `__name__`), they are that module's key flags, which its
    `--help` lists."""
    from absl import flags as absl_flags
    if module_name == "__main__":  # absl names the main module by its file
        module_name = sys.argv[0]
    for field in dataclasses.fields(config_class):
        kind, _ = _field_kind(field)
        meta = field.metadata
        if meta.get("choices"):
            absl_flags.DEFINE_enum(field.name, field.default, meta["choices"], meta["help"],
                                   flag_values=flag_values)
            continue
        define = {bool: absl_flags.DEFINE_bool, int: absl_flags.DEFINE_integer,
                  float: absl_flags.DEFINE_float}.get(kind, absl_flags.DEFINE_string)
        define(field.name, field.default, meta["help"], flag_values=flag_values)
    for field in dataclasses.fields(config_class) if module_name else ():
        flag_values.register_key_flag_for_module(module_name, flag_values[field.name])


def config_from_flags(config_class, flag_values):
    """The config of parsed flags (checked by the config itself)."""
    return config_class(**{field.name: flag_values[field.name].value
                           for field in dataclasses.fields(config_class)})


def make_config(config_class, stage, values):
    """The config of keyword values (the Python API); an unknown name is a UsageError."""
    names = [field.name for field in dataclasses.fields(config_class)]
    unknown = [name for name in values if name not in names]
    if unknown:
        raise UsageError(f"{stage} has no flag '{unknown[0]}'; allowed: "
                         f"{', '.join(sorted(names))}")
    return config_class(**values)


_KIND_NAMES = {int: "an integer", float: "a number", bool: "True or False", str: "text"}


def coerce_fields(config):
    """Checks each field's type, in __post_init__ of a frozen config: numbers given as
    text (as on a command line) are parsed, ints are accepted for floats, lists for
    comma-separated text; anything else is a UsageError naming the field."""
    for field in dataclasses.fields(config):
        kind, optional = _field_kind(field)
        value = getattr(config, field.name)
        if value is None and optional:
            continue
        converted = _coerce(kind, value)
        if converted is None:
            raise UsageError(f"--{field.name} must be {_KIND_NAMES.get(kind, kind)}, got "
                             f"{value!r}")
        choices = field.metadata.get("choices")
        if choices and converted not in choices:
            raise UsageError(f"--{field.name} must be one of {', '.join(choices)}; got "
                             f"{converted!r}")
        object.__setattr__(config, field.name, converted)


def _coerce(kind, value):
    """`value` as `kind`, or None when it is not one."""
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if kind in (int, float):
        accepted = (int,) if kind is int else (int, float)
        if isinstance(value, accepted + (str,)):
            try:
                return kind(value)
            except ValueError:
                return None
        return None
    if kind is str:
        if isinstance(value, (list, tuple)):
            return ",".join(str(item) for item in value)
        return value if isinstance(value, str) else None
    return value


def flags_text(config):
    """A config's fields as sorted `--name=value` lines (`--name`/`--noname` for
    booleans, None left out): a --flagfile giving the same config."""
    lines = []
    for field in sorted(dataclasses.fields(config), key=lambda field: field.name):
        value = getattr(config, field.name)
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{field.name}" if value else f"--no{field.name}")
        else:
            lines.append(f"--{field.name}={value}")
    return "\n".join(lines) + "\n"


def run_config(execute, config, stage, force=False):
    """Runs `execute(config)` in this process as the command line would: killed --force
    runs of the workdir rolled back, the stage's own --force journal, files recorded
    as written by the stage module `stage`, library errors turned into InputError (bad
    input raises instead of exiting)."""
    from pie.io import records
    progress.quiet_libraries()
    workdir = getattr(config, "workdir", None)
    _tidy(workdir)
    try:
        with journal.transaction(workdir, force), records.writing_as(stage):
            return execute(config)
    except Exception as error:
        bad_input = errors.from_library(error)
        if bad_input is None:
            raise
        raise bad_input from error

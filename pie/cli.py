"""What every stage script shares: flag parsing helpers, exit codes, saved flags."""
import sys
import time

from absl import app, flags, logging

from pie import errors

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
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the progress
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; every option is a --flag")
        try:
            return main(argv)
        except user_errors() as error:
            fail(str(error))
    app.run(guarded, flags_parser=_parse_flags)


def _parse_flags(argv):
    """Flag errors (unknown enum value, bad type) are bad input too: one line, exit 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])


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


def resolved_flags():
    """The main script's flags as `--name=value` lines, usable with --flagfile."""
    main_module = sys.modules["__main__"]
    module_flags = flags.FLAGS.get_key_flags_for_module(main_module)
    if not module_flags:  # run as `python -m pkg.script`: flags live under the module name
        module_flags = flags.FLAGS.get_key_flags_for_module(sys.argv[0])
    lines = [flag.serialize() for flag in sorted(module_flags, key=lambda f: f.name)]
    return "\n".join(line for line in lines if line) + "\n"


def format_seconds(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress lines with an ETA from the average time per unit of work so far."""

    def __init__(self, total_units, label):
        self.total = total_units
        self.done = 0
        self.label = label
        self.start = time.time()

    def advance(self, units, message):
        self.done += units
        elapsed = time.time() - self.start
        remaining = max(self.total - self.done, 0)
        eta = elapsed / self.done * remaining if self.done else 0.0
        print(f"{message} | {self.label} {self.done}/{self.total}, "
              f"ETA {format_seconds(eta)}", flush=True)

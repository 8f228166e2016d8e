"""Training a population in worker processes on one machine (`train --workers`).

Each worker is the training stage itself, started as a child process on the
members of some seeds (`--seed_slice=k/N`: seeds k, k+N, ...; a member and the
parent network it is pruned from share a seed, so they stay in one worker), with
its share of the CPU threads (`--threads`). Members are independent: each trains as
it would alone (same seed, batch order, checkpoints and files), and a killed run
resumes member by member.

Why processes: on a CPU a small network's training step is a chain of small ops
that one thread runs almost as fast as two (the demo's network: 5.8 ms a step on
one thread, 5.0 ms on both cores of these machines), so two single-threaded
workers do about 1.7x the work of one process using both cores. Several members
stepped in one traced graph were slower (0.87x): their ops competed for the same
threads. On a GPU one process holds the accelerator: automatic (`--workers=0`)
means one worker there.
"""
import contextlib
import os
import signal
import subprocess
import sys

from pie.io import errors


def resolve(workers, seeds, strategy="default"):
    """How many workers to start: `workers`, at most one per seed that has members to
    train, at least 1. 0 is automatic: one per CPU core with the default strategy on a
    machine without GPUs, else 1 (one process per accelerator)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise errors.UsageError(f"--workers must be an integer >= 0 (0: automatic), "
                                f"got {workers!r}")
    if workers == 0:
        import tensorflow as tf
        workers = 1 if strategy != "default" or tf.config.list_physical_devices("GPU") else (
            os.cpu_count() or 1)
    return max(1, min(workers, seeds))


def threads_each(workers):
    """CPU threads of each of `workers` processes: the cores shared out, at least 1."""
    return max(1, (os.cpu_count() or 1) // workers)


def parse_slice(text):
    """`k/N` of --seed_slice: (k, N) with 0 <= k < N."""
    from pie.io import cli
    return cli.parse_slice(text, "seed_slice", "k", "N")


# Workers started before this process loaded TensorFlow wait for a line on their
# standard input: "go" once this process has checked the run, anything else (or
# its end, when this process failed) to leave quietly.
GATE_ENV = "PIE_WORKER_GATE"
_early = []


def _nvidia_gpu():
    """Whether an NVIDIA driver reports a GPU (read without loading TensorFlow)."""
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False


def early_count(argv):
    """How many workers the command line `argv` asks for, when that is plain from it
    alone: `--workers=N` (0: one per core, without an NVIDIA GPU) and `--seeds=S`
    given as `--name=value`, no flag file, strategy, seed slice or help. 1 otherwise:
    the count is then settled after start-up (see `others`)."""
    values = {}
    for arg in argv:
        name, equals, value = arg.partition("=")
        if (not name.startswith("--") or name.startswith("--help")
                or name in ("--flagfile", "--seed_slice")
                or (name in ("--workers", "--seeds", "--strategy") and not equals)
                or (name == "--strategy" and value != "default")):
            return 1
        values[name] = value
    try:
        workers, seeds = int(values["--workers"]), int(values["--seeds"])
    except (KeyError, ValueError):
        return 1
    if workers == 0:
        workers = 1 if _nvidia_gpu() else (os.cpu_count() or 1)
    return max(1, min(workers, seeds))


def start_early(module, argv):
    """Starts workers 1 .. N-1 of `python -m module *argv` at once, before this
    process loads TensorFlow (seconds), when `early_count(argv)` says N > 1. They
    load it meanwhile, then wait until `others` lets them go."""
    count = early_count(argv)
    if count < 2 or os.environ.get(GATE_ENV):
        return
    kept = [arg for arg in argv if arg.partition("=")[0] not in
            ("--workers", "--threads", "--seed_slice")]
    for worker in range(1, count):
        _early.append(subprocess.Popen(
            _command(module, kept, (worker, count), threads_each(count)),
            stdin=subprocess.PIPE, text=True, env=dict(os.environ, **{GATE_ENV: "1"})))


def _command(module, args, seed_slice, threads):
    """The command line of the worker on `seed_slice` (k, N)."""
    worker, count = seed_slice
    return [sys.executable, "-m", module, *args, f"--seed_slice={worker}/{count}",
            "--workers=1", f"--threads={threads}"]


def discard(early):
    """Ends workers started early that this run does not use: they have done
    nothing but load TensorFlow, so they are killed, not waited for."""
    for process in early:
        process.kill()
        process.wait()


def discard_early():
    """Ends the workers `start_early` started: this run trains in one process."""
    early, _early[:] = list(_early), []
    discard(early)


def await_gate(load_first=None):
    """In a worker started by `start_early`: calls `load_first` (the stage's slow
    imports, TensorFlow, done while the first process checks the run), then waits
    for the go; leaves quietly on anything else."""
    if not os.environ.get(GATE_ENV):
        return
    if load_first is not None:
        load_first()
    # Ctrl-C while waiting is worker 0's to report; this one then reads the end of
    # its input and leaves quietly.
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.stdin.readline().strip() != "go":
        os._exit(0)
    signal.signal(signal.SIGINT, handler)


def _release(processes, go):
    for process in processes:
        try:
            process.stdin.write("go\n" if go else "stop\n")
            process.stdin.close()
        except (BrokenPipeError, ValueError):
            pass  # it has ended already


@contextlib.contextmanager
def others(module, args, workers, seed_slice=(0, 1)):
    """Starts workers 1 .. workers-1 (`python -m module *args` on their seed slices,
    with their threads) while this process trains worker 0's slice, which it gets:
    `with others(...) as (my_slice, wait): ...; codes = wait()`. Their output goes to
    ours. Within a `seed_slice` (k, N) already given, worker j takes (k + jN, NW).

    Leaving the block early (an error in this process, Ctrl-C) stops the other
    workers; a worker that fails leaves the others to finish their members, and
    `wait` gives its exit code. Every member resumes from its own last epoch
    checkpoint on the next run.
    """
    first, count = seed_slice
    threads = threads_each(workers)
    processes = []
    early, _early[:] = list(_early), []
    if early and (len(early) + 1 != workers or seed_slice != (0, 1)):
        discard(early)  # the run needs another split: start afresh
        early = []

    def wait():
        return [process.wait() for process in processes]
    try:
        if early:
            processes.extend(early)
            _release(early, go=True)
        for worker in range(1 + len(early), workers):
            processes.append(subprocess.Popen(_command(
                module, args, (first + worker * count, count * workers), threads)))
        yield (first, count * workers), wait
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait()

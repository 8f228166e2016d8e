"""Model conversions in worker processes, results in task order (`cost --workers`,
`quantize --workers`).

    with ConversionPool(workers=2) as pool:              # 0 = one per core
        results = pool.map(converted, [(name, model_path, tflite_path), ...])

`map(function, tasks)` returns `[function(*task) for task in tasks]`, computed by
`workers` processes: this one, and `workers - 1` spawned ones (pie.io.spawn), each
importing TensorFlow once and kept for every later `map`. `function` must be a module-level
function (a child imports its module) whose arguments and result pickle; one of a
stage run as `python -m pie.stages.X` (its `__main__`) is sent by the module's name.

Why a pool of its own: TFLite conversion is a single-threaded compiler pass (about 10 s
for a ResNet-20 on a slow core), the largest part of the cost stage and a large one
of the quantize stage; two conversions on two cores take the time of one. Both
stages use this one pool, in chunks (`chunks`): convert a chunk here and in the
workers, then do the chunk's serial part in the stage's process (cost times each
member: the workers wait between `map` calls, using no CPU, so timings are
uncontended; quantize evaluates and records each member).
Workers see no GPU: a conversion runs on the CPU, and an accelerator belongs to the
stage's process.

A worker's exception comes back as itself (a `ModelError` with its one line); a
worker that dies (say a native crash of the converter) is a `ModelError` naming the
task (`WorkerDied`). Models are opened by the task's own code (pie.models.loading), in
a worker as in this process.
"""
import concurrent.futures
import importlib
import os
import sys
import threading

from pie.io import errors
from pie.io.spawn import library_context

# The default: one per core, at most this many (each worker holds TensorFlow and a model).
DEFAULT_MAX_WORKERS = 2
# Tasks per worker in one `map` of a stage (`chunks`): what waits between the phases
# (converted files, progress lines) stays a few per worker, and a chunk's last
# conversion rarely leaves a worker idle long.
CHUNK_PER_WORKER = 4


def default_workers():
    return min(DEFAULT_MAX_WORKERS, os.cpu_count() or 1)


def resolve(workers):
    """Processes for `--workers`: 0 = one per CPU core; otherwise the number given."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise errors.UsageError(f"--workers must be an integer >= 0 (0 = one per core), "
                                f"got {workers!r}")
    return workers or os.cpu_count() or 1


def importable(function):
    """`function`, or the same function of its module imported by name when it is
    defined in `__main__` (a child cannot import the parent's `__main__`)."""
    if function.__module__ != "__main__":
        return function
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is None:
        raise ValueError(f"{function.__qualname__} is defined in a script: a worker "
                         "process cannot import it")
    return getattr(importlib.import_module(spec.name), function.__qualname__)


def chunks(items, workers):
    """`items` in consecutive pieces of CHUNK_PER_WORKER per worker."""
    size = CHUNK_PER_WORKER * workers
    return [items[start:start + size] for start in range(0, len(items), size)]


class WorkerDied(errors.ModelError):
    """A worker process ended without a result (the pool cannot be used again)."""


def _init_worker():
    # Before TensorFlow loads in this process: the conversions run on the CPU.
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    import pie  # noqa: F401  (TF_USE_LEGACY_KERAS, the libraries' noise quieted)
    import tensorflow  # noqa: F401  (loaded before the worker says it is ready)
    import tf_keras  # noqa: F401


def _ready():
    return os.getpid()


class ConversionPool:
    """Runs module-level functions over tasks in `workers` processes: this one, and
    `workers - 1` spawned ones (none for 1). They start on the first `map` with more
    than one task."""

    def __init__(self, workers=0):
        self.workers = resolve(workers)
        self.executor = None
        self.started = []  # one future per spawned worker, done once it can convert

    def _executor(self):
        if self.executor is None:
            self.executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers - 1, mp_context=library_context(),
                initializer=_init_worker)
            self.started = [self.executor.submit(_ready) for _ in range(self.workers - 1)]
        return self.executor

    def ready_workers(self):
        """Spawned workers that have started (a task sent before would wait for one)."""
        return sum(future.done() for future in self.started)

    def map(self, function, tasks, names=None, done=None):
        """[function(*task) for task in tasks]; `names` (one per task) name a task whose
        worker died; `done(index)` is called (one call at a time) as each task ends well. Each spawned worker has a feeder thread here that sends it the
        next task once it has started and whenever it is free (workers started already
        get the first tasks); this process takes the next task whenever it is free, so
        the workers' start (TensorFlow's import, seconds) delays nothing. The first
        failure in task order is raised once every task begun has ended; no task
        begins after a failure."""
        tasks = list(tasks)
        done = done or (lambda index: None)
        if self.workers == 1 or len(tasks) < 2:
            results = []
            for index, task in enumerate(tasks):
                results.append(function(*task))
                done(index)
            return results
        names = list(names) if names is not None else [repr(task) for task in tasks]
        sent = importable(function)
        executor = self._executor()
        results, failures, waiting = [None] * len(tasks), {}, list(range(len(tasks)))
        lock = threading.Lock()

        def take():
            with lock:
                return waiting.pop(0) if waiting and not failures else None

        def fail(index, error):
            with lock:
                failures[index] = error

        def finished(index, result):
            with lock:
                results[index] = result
                done(index)

        def feed(started, first):
            concurrent.futures.wait([started])
            index = take() if first is None else first
            while index is not None:
                try:
                    finished(index, executor.submit(sent, *tasks[index]).result())
                except concurrent.futures.process.BrokenProcessPool as error:
                    fail(index, WorkerDied(f"{names[index]}: its conversion process ended "
                                           f"without a result ({errors.first_line(error)})"))
                except BaseException as error:  # the worker's own, raised here below
                    fail(index, error)
                index = take()

        # A worker started already has the first tasks, in order (then this process).
        feeders = [threading.Thread(target=feed, daemon=True, args=(
            started, waiting.pop(0) if started.done() and waiting else None))
            for started in self.started]
        for feeder in feeders:
            feeder.start()
        try:
            while (index := take()) is not None:
                try:
                    finished(index, function(*tasks[index]))
                except BaseException as error:
                    fail(index, error)
        finally:
            with lock:
                waiting.clear()  # on an interrupt too: the feeders end with their task
            for feeder in feeders:
                feeder.join()
        if failures:
            first = failures[min(failures)]
            if isinstance(first, WorkerDied):
                self.close()
            raise first
        return results

    def close(self):
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)
            self.executor, self.started = None, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

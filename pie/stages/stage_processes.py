"""The study's stage processes: each stage its own `python -m` process, several at once
when their inputs allow.

A study's stages after training are mostly one busy core each (a TensorFlow start,
a model traced, a few thousand images); on a machine of several cores, stages whose
inputs are ready run side by side (`run_all`, at most `jobs` at once). A stage starts
only when every planned stage it reads from has finished (pie.commands' `after`);
a stage marked `alone` (the cost stage: its figures are timings) starts only when
nothing else runs, and nothing starts beside it.

What a user reads stays one block per stage: the stage started first streams its
output as it comes; the output of a stage beside it is held and printed, whole, when
its turn to stream comes. Each block ends `== stage NAME done in N s (cpu M s)`: the
CPU seconds are that process's own and its children's (os.wait4), so they stay
comparable whatever ran beside it. A failed stage stops the study: the stages beside
it are stopped (each resumes where it stopped on a rerun) and its exit code is the
study's.
"""
import os
import queue
import subprocess
import sys
import threading
import time

# TensorFlow's C++ start-up lines (oneDNN, CUDA probing) are dropped from the output.
NOISE_PREFIXES = ("WARNING: All log messages before absl", "I0000 ", "W0000 ", "E0000 ")
# Automatic --stage_jobs: one stage per core, at most this many (each holds a
# TensorFlow runtime and its data: about 1 GB).
MAX_AUTOMATIC_JOBS = 4


class StageFailed(Exception):
    def __init__(self, name, code):
        super().__init__(f"stage {name} failed (exit {code})")
        self.code = code


class Job:
    """One planned stage: its commands, [(label, argv)] run one after another (e.g. a
    file the stage reads made first), the stage names it waits for, and whether it
    runs alone."""

    def __init__(self, name, commands, after=(), alone=False):
        if not commands:
            raise ValueError(f"stage {name} has no command")
        self.name = name
        self.commands = [(label, list(argv)) for label, argv in commands]
        self.after = set(after)
        self.alone = alone


def automatic_jobs(cores=None):
    """Stages at once for --stage_jobs=0: one per core, 1 to MAX_AUTOMATIC_JOBS."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTOMATIC_JOBS))


def _shown(command):
    return " ".join(command[2:] if command[1:2] == ["-m"] else command[1:])


class _Running:
    """A job's processes, run in a thread; its lines held until it may print."""

    def __init__(self, job, finished, lock, write):
        self.job = job
        self.code = None
        self.process = None
        self._held = []
        self._live = False
        self._lock = lock
        self._write = write
        self._stopped = False
        self._thread = threading.Thread(target=self._run, args=(finished,), daemon=True)
        self._thread.start()

    def _say(self, line):
        with self._lock:
            if self._live:
                self._write(line)
            else:
                self._held.append(line)

    def go_live(self):
        """From now on its lines print as they come, after those it held."""
        with self._lock:
            for line in self._held:
                self._write(line)
            self._held = []
            self._live = True

    def stop(self):
        with self._lock:
            self._stopped = True
            process = self.process
        if process is not None and process.returncode is None:
            try:
                process.terminate()
            except ProcessLookupError:
                pass

    def _run(self, finished):
        for label, command in self.job.commands:
            self._say(f"== stage {label}: {_shown(command)}\n")
            started = time.time()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            with self._lock:
                if self._stopped:
                    self.code = -15
                    break
                self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True, env=env)
            for line in self.process.stdout:
                if not line.startswith(NOISE_PREFIXES):
                    self._say(line)
            self.process.stdout.close()
            # wait4: this process's own CPU time and its waited-for children's, whatever
            # else runs beside it.
            _, status, usage = os.wait4(self.process.pid, 0)
            self.process.returncode = self.code = os.waitstatus_to_exitcode(status)
            if self.code:
                break
            self._say(f"== stage {label} done in {time.time() - started:.0f} s "
                      f"(cpu {usage.ru_utime + usage.ru_stime:.0f} s)\n")
        finished.put(self)


def run_all(jobs, limit, write=None):
    """Runs `jobs` (in their order of preference), at most `limit` at once, each when
    the jobs it waits for that are in `jobs` have finished. Raises StageFailed with
    the first failed stage's exit code after stopping the others."""
    write = write or _write_stdout
    if limit < 1:
        raise ValueError(f"at most {limit} stages at once: must be at least 1")
    names = {job.name for job in jobs}
    pending = list(jobs)
    done = set()
    running = []  # in order of start: the first streams, the others hold their lines
    finished = queue.Queue()
    lock = threading.Lock()
    failure = None
    unprinted = []  # finished beside the streaming stage, their blocks not yet printed
    while pending or running:
        if failure is None:
            for job in list(pending):
                if len(running) >= limit or any(other.job.alone for other in running):
                    break
                if not (job.after & names) <= done:
                    continue
                if job.alone and running:
                    continue  # it starts once the stages now running have finished
                pending.remove(job)
                running.append(_Running(job, finished, lock, write))
                if len(running) == 1:
                    running[0].go_live()
                if job.alone:
                    break
        if not running:
            break
        ended = finished.get()
        streaming = running[0]
        running.remove(ended)
        if ended is streaming:
            # The blocks of stages that finished beside it, then the next one streams.
            for other in unprinted:
                other.go_live()
            unprinted = []
            if running:
                running[0].go_live()
        else:
            unprinted.append(ended)  # printed whole once the streaming stage ends
        if ended.code:
            if failure is None:
                failure = ended
                for other in running:
                    other.stop()
            continue
        done.add(ended.job.name)
    for other in unprinted:
        other.go_live()
    if failure is not None:
        raise StageFailed(failure.job.name, failure.code)
    if pending:
        raise StageFailed(pending[0].name, 1)  # waits on a stage that never ran


def _write_stdout(line):
    sys.stdout.write(line)
    sys.stdout.flush()

"""Worker processes that are spawned, never forked, and never run the caller's script.

Stages spawn their workers (pie.shift.pool corrupts images, pie.compress.conversion_pool
converts models): a stage has TensorFlow loaded, and a forked copy of it is unsafe.
multiprocessing's spawn re-runs the parent's `__main__` in each child (a script
without an `if __name__ == "__main__"` guard would train again, and start workers of
its own); these workers are started as if the parent had no main module, so they
import only what their task needs (its module): from a plain script, a notebook or
standard input alike.
"""
import sys
import types
from multiprocessing import context as mp_context
from multiprocessing import popen_spawn_posix


class _LibraryPopen(popen_spawn_posix.Popen):
    """Spawns a child whose start-up data names no main module to re-run: spawn reads
    `sys.modules["__main__"]` while launching, so a bare module stands in for it then."""

    def _launch(self, process_obj):
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            super()._launch(process_obj)
        finally:
            sys.modules["__main__"] = main


class _LibraryProcess(mp_context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj):
        return _LibraryPopen(process_obj)


class _LibraryContext(mp_context.SpawnContext):
    Process = _LibraryProcess


def library_context():
    """A spawn context whose processes import only what their task needs (its module),
    never the caller's script."""
    return _LibraryContext()

"""Corrupting image stacks in worker processes, in bounded pieces.

    with CorruptionPool(workers=0) as workers:           # 0 = every core
        out = workers.corrupt(images, image_ids, "fog", 3, seed=0, scale="auto")

`out` equals `corruptions.corrupt_batch(images, image_ids, "fog", 3, ...)` exactly:
each image's result depends only on its id, so cutting the stack into tasks of
about TASK_BYTES of float32 pixels changes nothing, and the corruptions'
temporaries stay a few times TASK_BYTES per worker whatever the stack size.
Workers are spawned, not forked (the stages have TensorFlow loaded), and import
only this package's numpy / scipy / OpenCV / PIL code; each is one core (no BLAS
or OpenCV thread pool of its own). They never run the caller's script
(pie.io.spawn.library_context).
"""
import concurrent.futures
import os

import numpy as np

from pie.io.spawn import library_context
from pie.shift import corruptions

# Images per corrupt_batch call (one worker task): about this many bytes of float32
# pixels (13 images at 224 px).
TASK_BYTES = 8 << 20


def images_per(budget, image_shape):
    """How many images of `image_shape` fit `budget` bytes as float32 (at least 1)."""
    return max(1, int(budget // (4 * int(np.prod(image_shape)))))


def resolve_workers(workers):
    """0 = every core of this machine; otherwise the number given (>= 1)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0 = every core), got {workers!r}")
    return workers or os.cpu_count() or 1


def _init_worker():
    import cv2
    from threadpoolctl import threadpool_limits
    cv2.setNumThreads(1)
    threadpool_limits(1)


def _corrupt_task(args):
    images, ids, name, severity, seed, scale = args
    return corruptions.corrupt_batch(images, ids, name, severity, seed=seed, scale=scale)


class CorruptionPool:
    """Corrupts image stacks in `workers` processes (1: in this process; 0: one per
    core). Processes start on the first stack that needs more than one task."""

    def __init__(self, workers=0, task_bytes=TASK_BYTES):
        self.workers = resolve_workers(workers)
        self.task_bytes = task_bytes
        self.executor = None

    def _executor(self):
        if self.executor is None:
            self.executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=library_context(),
                initializer=_init_worker)
        return self.executor

    def corrupt(self, images, image_ids, name, severity, seed=0, scale="auto"):
        images = np.asarray(images)
        image_ids = np.asarray(image_ids)
        per_task = images_per(self.task_bytes, images.shape[1:])
        tasks = [(images[start:start + per_task], image_ids[start:start + per_task], name,
                  severity, seed, scale) for start in range(0, len(image_ids), per_task)]
        if not tasks:
            return corruptions.corrupt_batch(images, image_ids, name, severity, seed=seed,
                                             scale=scale)
        if self.workers == 1 or len(tasks) == 1:
            parts = [_corrupt_task(task) for task in tasks]
        else:
            parts = list(self._executor().map(_corrupt_task, tasks))
        return np.concatenate(parts)

    def close(self):
        if self.executor is not None:
            self.executor.shutdown()
            self.executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

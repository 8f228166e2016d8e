r"""Times the analysis stages at ImageNet scale: Parquet predictions against gzip CSV.

    python benchmarks/analysis_scale.py [--images=50000] [--classes=1000] \
        [--members=30] [--sparsities=0.1,0.3,0.5,0.7,0.9] [--repeats=2] [--workdir=DIR] \
        [--keep]

Writes one synthetic population's predictions twice, into two workdirs: as Parquet
files (`pie.io.records.write_predictions`, what the stages write now) and as the
gzip CSV files of older workdirs (`<member_id>.csv.gz`, still read). Then runs,
each as its own process with --force, alternating the two workdirs --repeats
times: per_class_accuracy.aggregate_ckpt_metrics, per_class_accuracy.gen_tstatistic,
pie_dataset_gen.aggregate_predictions (their bytecode compiled once first, as an
install does). Prints each stage's best wall time and peak
RSS (os.wait4) per format, the stages' own log lines (reading against computing),
checks both formats gave the same results, and prints last the headline
`speedup=<CSV total / Parquet total>`. Generating and writing the data is timed
separately and not counted.

The synthetic data: labels cycle through the classes; each image has a difficulty
(about 76% top-1 for dense members); sparser variants lose accuracy, more on some
classes than others; wrong answers go mostly to one confusing class per image, so
populations agree on their mistakes as real ones do.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pie.io import records  # noqa: E402  (after the path set-up, for a source checkout)
from pie.io.workdir import Workdir

flags.DEFINE_integer("images", 50_000, "Eval images.")
flags.DEFINE_integer("classes", 1_000, "Classes.")
flags.DEFINE_integer("members", 30, "Members per population (dense and each sparsity).")
flags.DEFINE_list("sparsities", ["0.1", "0.3", "0.5", "0.7", "0.9"],
                  "Sparsity levels of the magnitude-pruned variants.")
flags.DEFINE_string("workdir", None, "Workdir to use; a temporary one when unset. "
                    "Existing synthetic data there is reused.")
flags.DEFINE_bool("keep", False, "Keep the temporary workdir.")
flags.DEFINE_integer("repeats", 2, "Runs of each stage per format; the best is reported.")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic data.")
FLAGS = flags.FLAGS

STAGES = [
    "per_class_accuracy.aggregate_ckpt_metrics",
    "per_class_accuracy.gen_tstatistic",
    "pie_dataset_gen.aggregate_predictions",
]
# Logit drop per unit of class damage at each sparsity: about 0 to 3 points of top-1.
LOGIT_DROP = {0.0: 0.0, 0.1: 0.002, 0.3: 0.005, 0.5: 0.01, 0.7: 0.025, 0.9: 0.06}


def synthetic_member(rng, image_ids, labels, difficulty, confuser, class_damage,
                     drop, n_classes):
    """One member's predictions frame (contract columns, with top5)."""
    n = len(image_ids)
    logit = difficulty - drop * class_damage[labels] + rng.normal(0, 0.3, n)
    correct = rng.random(n) < 1 / (1 + np.exp(-logit))
    random_wrong = (labels + rng.integers(1, n_classes, n)) % n_classes
    wrong = np.where(rng.random(n) < 0.6, confuser, random_wrong)
    predicted = np.where(correct, labels, wrong)
    prob_predicted = np.where(correct, rng.beta(5, 2, n), rng.beta(2, 3, n))
    prob_label = np.where(correct, prob_predicted,
                          (1 - prob_predicted) * rng.random(n))
    step = rng.integers(1, max(2, n_classes // 5), n)
    top5 = predicted.astype(str)
    for k in range(1, 5):
        top5 = np.char.add(np.char.add(top5, " "),
                           ((predicted + k * step) % n_classes).astype(str))
    return pd.DataFrame({
        "image_id": image_ids, "label": labels, "predicted": predicted,
        "prob_predicted": prob_predicted.astype(np.float32),
        "prob_label": prob_label.astype(np.float32), "top5": top5,
    })


FORMATS = ("csv.gz", "parquet")


def generate(workdirs, n_images, n_classes, n_members, sparsities, seed):
    rng = np.random.default_rng(seed)
    image_ids = np.arange(n_images, dtype=np.int64)
    labels = image_ids % n_classes
    # Image difficulty in logits: mean sigmoid about 0.76.
    difficulty = rng.normal(1.6, 1.5, n_images)
    confuser = (labels + rng.integers(1, n_classes, n_images)) % n_classes
    class_damage = rng.exponential(1.0, n_classes) * 4
    rows = []
    populations = [("dense", 0.0)] + [("magnitude", s) for s in sparsities]
    for method, sparsity in populations:
        drop = LOGIT_DROP.get(sparsity, sparsity / 4)
        for member_seed in range(n_members):
            member_id = f"{method}_{sparsity:g}_seed{member_seed}"
            frame = synthetic_member(rng, image_ids, labels, difficulty, confuser,
                                     class_damage, drop, n_classes)
            frame.insert(0, "member_id", member_id)
            records.write_csv(Workdir(workdirs["csv.gz"]).legacy_predictions_path(member_id),
                              frame)
            records.write_predictions(Workdir(workdirs["parquet"]).predictions_path(member_id),
                                      frame)
            rows.append({
                "member_id": member_id, "method": method, "sparsity": sparsity,
                "measured_sparsity": sparsity, "seed": member_seed,
                "dataset": "synthetic_imagenet", "model": "synthetic",
                "top1": float((frame["label"] == frame["predicted"]).mean()),
                "path": member_id, "model_file": f"{member_id}/model.keras",
            })
        print(f"  wrote {n_members} members of {method} sparsity {sparsity:g}", flush=True)
    for workdir in workdirs.values():
        records.add_manifest_rows(workdir, rows)
        records.write_json(Workdir(workdir).classes,
                           [f"class_{c:04d}" for c in range(n_classes)])


def predictions_bytes(workdir):
    folder = Workdir(workdir).predictions_dir()
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compile_toolkit():
    """Compiles the stages' modules once (into their `__pycache__` folders, ignored by
    git), as an install or a first run does.

    Without it, a Python run with PYTHONDONTWRITEBYTECODE (as on these machines)
    compiles the toolkit again in every stage process, about 0.2 s each, for both
    formats alike. (Not PYTHONPYCACHEPREFIX: it would hide the installed packages'
    bytecode too.)
    """
    for package in ("pie", "per_class_accuracy", "pie_dataset_gen"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", package], cwd=ROOT,
                       check=True)


def run_stage(module, workdir):
    """Runs one stage as its own process; (wall s, CPU s, peak RSS bytes, stderr)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", module, f"--workdir={workdir}", "--force"],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{module} failed ({process.returncode}):\n{stderr}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, stderr


def main(argv):
    del argv
    sparsities = [float(s) for s in FLAGS.sparsities]
    root = FLAGS.workdir or tempfile.mkdtemp(prefix="analysis_scale_")
    workdirs = {name: os.path.join(root, name.replace(".", "_")) for name in FORMATS}
    n_rows = FLAGS.images * FLAGS.members * (1 + len(sparsities))
    print(f"workdirs under {root}: {FLAGS.images} images x {FLAGS.classes} classes x "
          f"{1 + len(sparsities)} populations x {FLAGS.members} members = {n_rows:,} "
          "prediction rows per format")
    try:
        if all(os.path.exists(Workdir(w).manifest) for w in workdirs.values()):
            print("reusing the synthetic data already there")
        else:
            start = time.perf_counter()
            generate(workdirs, FLAGS.images, FLAGS.classes, FLAGS.members, sparsities,
                     FLAGS.seed)
            print(f"generated and wrote the data in {time.perf_counter() - start:.1f} s "
                  "(not counted)")
        for name, workdir in workdirs.items():
            print(f"{name}: {predictions_bytes(workdir) / 2**20:.0f} MiB of predictions files")
        print(f"load average before the stages: {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        compile_toolkit()
        print("compiled the toolkit's bytecode once, as an install does (not counted)")
        best, logs = {}, {}
        for _ in range(FLAGS.repeats):
            for module in STAGES:
                for name in FORMATS:  # alternating, so a change of load hits both formats
                    wall, cpu, rss, log = run_stage(module, workdirs[name])
                    if (module, name) not in best or wall < best[module, name][0]:
                        best[module, name] = (wall, cpu, rss)
                        logs[module, name] = log
        for module in STAGES:
            for name in FORMATS:
                wall, cpu, rss = best[module, name]
                print(f"{module} [{name}]: {wall:.1f} s wall, {cpu:.1f} s CPU, "
                      f"peak RSS {rss / 2**30:.2f} GiB")
                for line in logs[module, name].splitlines():
                    if line[:1] in "IW":
                        print("    " + line.split("] ", 1)[-1])
        totals = {name: sum(best[module, name][0] for module in STAGES) for name in FORMATS}
        peaks = {name: max(best[module, name][2] for module in STAGES) for name in FORMATS}
        for name in FORMATS:
            print(f"total [{name}] (3 stages, each a fresh process, best of {FLAGS.repeats}): "
                  f"{totals[name]:.1f} s wall, peak RSS {peaks[name] / 2**30:.2f} GiB")
        parquet = Workdir(workdirs["parquet"])
        for key in ("per_class_metrics", "tstatistic_summary", "pie_summary"):
            pd.testing.assert_frame_equal(pd.read_csv(Workdir(workdirs["csv.gz"]).file(key)),
                                          pd.read_csv(parquet.file(key)))
        print("both formats gave the same per-class metrics, t-test and PIE summaries")
        print(pd.read_csv(parquet.file("tstatistic_summary")).to_string(index=False))
        print(pd.read_csv(parquet.file("pie_summary")).to_string(index=False))
        print(f"peak_rss_gib={peaks['parquet'] / 2**30:.2f}")
        print(f"speedup={totals['csv.gz'] / totals['parquet']:.2f}")
    finally:
        if not FLAGS.workdir and not FLAGS.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)

r"""Functional similarity of compressed and dense members under input noise.

  python -m robustness_tests.noise_similarity --workdir=W \
      [--eps=0,0.05,...,0.7] [--draws=20] [--images=500] [--seed=0] [--delta=0.5] \
      [--noise_prune_potential=per_parent|population_mean] [--shard=i/n]

Adds uniform noise U[-eps, eps] to every feature of the normalised model inputs
(no clipping) and, per eps, compares each compressed member with the dense member
of the same seed: the share of images where both predict the same label
(`agreement`) and the mean L2 distance of their softmax outputs (`l2`), averaged
over noise draws (Liebenwein et al.). `dense_reference` compares two
independently trained dense members (seeds s_i and s_i+1, cyclic). Both members
of a pair see the same noise: draw d is eps x U_d with U_d ~ U[-1, 1] seeded by
(seed, d), the same for every eps. Writes `W/robustness/noise_similarity.csv` and
`noise_similarity_per_pair.csv`; columns in docs/robustness.md.

The same noisy predictions give the noise prune potential (Lost in Pruning;
pie.analysis.noise_potential): per method, seed, eps and draw, the largest sparsity
whose member's error on the noisy images exceeds its own dense parent's error on the
same noisy images by no more than --delta points (it fails when the excess is >
delta). `noise_prune_potential_per_seed.csv` gives it per seed (over draws),
`noise_prune_potential.csv` over seeds and draws; with
--noise_prune_potential=population_mean the latter compares population-mean errors
instead (the earlier rule).

`--shard=i/n` runs the pairs of manifest members i, i+n, ... (and their dense
references) only; n shards may run at once, and the last to finish writes the
tables from every shard's rows (pie.io.shards).
"""
import time

import numpy as np
import pandas as pd
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.analysis import noise_potential, robustness, stage_io
from pie.io import cli, journal, records, shards
from pie.io.workdir import ROBUSTNESS_DIR, Workdir
from pie.io.progress import Progress
from pie.models import predict

FLAGS = flags.FLAGS
STAGE = "noise_similarity"
OUT_DIR = ROBUSTNESS_DIR
# Lost in Pruning's grid: linspace(0, 0.7, 15), i.e. steps of 0.05.
DEFAULT_EPS = ",".join(f"{eps:g}" for eps in np.round(np.linspace(0.0, 0.7, 15), 10))
EPS_RANGE = (0.0, 1.0)
# Noisy inputs built and run per model call stay under this many bytes.
CHUNK_BYTES = 256 << 20
# Its tables' columns: pie.analysis.noise_potential (the report reads them too).
SUMMARY_COLUMNS = noise_potential.SIMILARITY_COLUMNS
PER_PAIR_COLUMNS = noise_potential.SIMILARITY_PAIR_COLUMNS


def define_flags(flag_values=flags.FLAGS):
    """Flags of the stage script (not defined on import: tests import several stages)."""
    flags.DEFINE_string("workdir", None, "Workdir holding population.csv and dataset.json.",
                        flag_values=flag_values)
    flags.DEFINE_string("eps", DEFAULT_EPS, "Comma-separated noise half-widths in [0, 1], "
                        "in normalised input units (default: linspace(0, 0.7, 15)).",
                        flag_values=flag_values)
    flags.DEFINE_integer("draws", 20, "Noise draws per eps (>= 1); eps 0 needs one.",
                         flag_values=flag_values)
    flags.DEFINE_integer("images", 500, "Eval images used (>= 1; all when larger than the "
                         "split), a seeded random subset.", flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of the image subset and the noise (>= 0).",
                         flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 256, "Images per model call.", flag_values=flag_values)
    flags.DEFINE_float("delta", 0.5, "Noise prune potential tolerance: percentage points of "
                       "error above the dense population's on the same noisy images, >= 0.",
                       flag_values=flag_values)
    flags.DEFINE_string("noise_prune_potential", "per_parent", "Noise prune potential rule: "
                        "per_parent (each pruned member against its own dense parent, Lost in "
                        "Pruning) or population_mean (population-mean errors).",
                        flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Recompute even when the outputs are up to date.",
                      flag_values=flag_values)
    shards.define_flag(flag_values)


def check_arguments(workdir, eps_values, draws, images, seed, batch_size, delta=0.5,
                    rule="per_parent"):
    cli.require_workdir(workdir)
    if rule not in noise_potential.RULES:
        raise cli.UsageError(f"unknown --noise_prune_potential '{rule}'; allowed: "
                             f"{', '.join(noise_potential.RULES)}")
    low, high = EPS_RANGE
    bad = [eps for eps in eps_values if not (np.isfinite(eps) and low <= eps <= high)]
    if bad:
        raise cli.UsageError(f"--eps values must be in [{low:g}, {high:g}], got {bad}")
    if not (np.isfinite(delta) and delta >= 0):
        raise cli.UsageError(f"--delta must be a finite number >= 0 (percentage points), "
                             f"got {delta}")
    for name, value, least in (("draws", draws, 1), ("images", images, 1), ("seed", seed, 0),
                               ("batch_size", batch_size, 1)):
        if value < least:
            raise cli.UsageError(f"--{name} must be >= {least}, got {value}")


def select_images(count, images, seed):
    """Sorted positions of a seeded random subset of `images` eval images (all if fewer)."""
    if images >= count:
        return np.arange(count)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), count]))
    return np.sort(rng.choice(count, size=images, replace=False))


def eval_subset(workdir, images, seed):
    """(normalised inputs, labels, image ids) of the chosen eval images."""
    from pie.data import sources
    source = sources.load_for_workdir(workdir)
    raw, labels, ids = source.eval_arrays()
    chosen = select_images(len(ids), images, seed)
    return np.asarray(source.normalize(raw[chosen]), np.float32), labels[chosen], ids[chosen]


def noise_units(eps_values, draws):
    """(eps position, eps, draw) of every noisy copy; without noise one draw suffices."""
    return [(k, eps, draw) for k, eps in enumerate(eps_values)
            for draw in range(1 if eps == 0 else draws)]


def noisy_outputs(models, inputs, eps_values, draws, seed, batch_size):
    """Yields (eps, {member_id: (predicted (draws, N), probs (draws, N, C))}) per eps.

    The noisy copies of every eps and draw are stacked, across eps, into model calls
    of about CHUNK_BYTES: each member runs once per chunk, not once per eps (a call
    has a fixed cost). Draw d's noise U_d is the same for every eps and member. An
    eps is yielded as soon as its last draw has run, so only its outputs are held.
    """
    units = noise_units(eps_values, draws)
    last = {k: position for position, (k, _, _) in enumerate(units)}
    chunk = max(1, CHUNK_BYTES // max(inputs.nbytes, 1))
    collected = {}
    for first in range(0, len(units), chunk):
        part = units[first:first + chunk]
        noise = {}  # one draw's noise serves every eps of the chunk
        noisy = np.empty((len(part),) + inputs.shape, np.float32)
        for slot, (_, eps, draw) in enumerate(part):
            if draw not in noise:
                noise[draw] = robustness.uniform_noise(inputs.shape, seed, draw)
            noisy[slot] = inputs + np.float32(eps) * noise[draw]
        del noise
        noisy = noisy.reshape((-1,) + inputs.shape[1:])
        keys = np.array([k for k, _, _ in part])
        for member_id, model in models.items():
            probs = predict.softmax(np.asarray(model.logits(noisy, batch_size), np.float64))
            probs = probs.reshape(len(part), len(inputs), -1)
            for k in np.unique(keys):
                outputs = collected.setdefault(k, {}).setdefault(member_id, ([], []))
                outputs[0].append(probs[keys == k].argmax(axis=-1))
                outputs[1].append(probs[keys == k])
        for k in sorted(k for k in collected if last[k] < first + len(part)):
            yield eps_values[k], {member_id: (np.concatenate(labels), np.concatenate(probs))
                                  for member_id, (labels, probs) in collected.pop(k).items()}


def pair_rows(pairs, outputs, eps):
    """Per pair: agreement and L2 per draw, averaged over draws (arrays, no row loop)."""
    first = np.stack([outputs[m][0] for m in pairs["member_id"]])  # (pairs, draws, N)
    second = np.stack([outputs[m][0] for m in pairs["reference_id"]])
    agreement = robustness.agreement(first, second)  # (pairs, draws)
    l2 = robustness.softmax_l2(np.stack([outputs[m][1] for m in pairs["member_id"]]),
                               np.stack([outputs[m][1] for m in pairs["reference_id"]]))
    rows = pairs[["method", "sparsity", "seed", "member_id", "reference_id"]].copy()
    rows["eps"] = float(eps)
    rows["agreement"] = agreement.mean(axis=1)
    rows["agreement_draw_std"] = agreement.std(axis=1)
    rows["l2"] = l2.mean(axis=1)
    rows["l2_draw_std"] = l2.std(axis=1)
    rows["draws"] = agreement.shape[1]
    rows["images"] = first.shape[2]
    return rows


def summarise(per_pair):
    summary = robustness.summarise_pairs(
        per_pair, ["method", "sparsity", "eps", "draws", "images"], ["agreement", "l2"])
    summary = summary.sort_values(["method", "sparsity", "eps"], kind="stable")
    return summary.reset_index(drop=True)[SUMMARY_COLUMNS]


def in_run_order(accuracy, eps_values):
    """Draw accuracies in the order of an unsharded run: eps as given, then member_id
    and draw (shards' rows come shard by shard)."""
    position = {float(eps): k for k, eps in reversed(list(enumerate(eps_values)))}
    ordered = accuracy.assign(eps_position=accuracy["eps"].map(position)).sort_values(
        ["eps_position", "member_id", "draw"], kind="stable")
    return ordered.drop(columns="eps_position").reset_index(drop=True)


def draw_accuracy(outputs, rows, labels, eps):
    """Top-1 of every member on every noise draw: one row per member x draw."""
    info = rows.set_index("member_id")
    frames = []
    for member_id, (predicted, _) in outputs.items():
        top1 = (predicted == labels[None]).mean(axis=1)
        frames.append(pd.DataFrame({
            "member_id": member_id, "method": info.loc[member_id, "method"],
            "sparsity": float(info.loc[member_id, "sparsity"]),
            "seed": int(info.loc[member_id, "seed"]), "eps": float(eps),
            "draw": np.arange(len(top1)), "top1": top1, "images": len(labels)}))
    return pd.concat(frames, ignore_index=True)


@journal.forced  # with force=True, outputs change only when the run succeeds
def run(workdir, eps_values, draws=20, images=500, seed=0, batch_size=256, force=False,
        delta=0.5, rule="per_parent", shard=shards.UNSHARDED):
    """Writes the noise-similarity tables; returns False when they were up to date (or
    another shard writes them)."""
    check_arguments(workdir, eps_values, draws, images, seed, batch_size, delta, rule)
    manifest = records.read_manifest(workdir)
    stage_io.require_dense(manifest, workdir)
    predict.check_model_files(workdir, manifest)
    pairs, rows, inputs = robustness.pairs_to_run(workdir, manifest)
    wd = Workdir(workdir)
    stamp = wd.stamp(OUT_DIR, STAGE)
    outputs = [wd.file("noise_similarity"), wd.file("noise_similarity_per_pair"),
               wd.file("noise_prune_potential"), wd.file("noise_prune_potential_per_seed")]
    options = {"eps": [float(e) for e in eps_values], "draws": draws, "images": images,
               "seed": seed, "delta": float(delta), "noise_prune_potential": rule}
    if not force and stage_io.is_up_to_date(workdir, stamp, inputs, outputs, options):
        print(f"noise_similarity: {outputs[0]} up to date, skipping (--force to redo)",
              flush=True)
        return False
    # This shard's members: their pairs (with their references) and draw accuracies.
    own = {row["member_id"] for row in shards.select(manifest.to_dict("records"), shard)}
    pairs_run = pairs[pairs["member_id"].isin(own)]
    needed = own | set(pairs_run["member_id"]) | set(pairs_run["reference_id"])
    rows_run = rows[rows["member_id"].isin(needed)]
    per_pair, accuracy = [], []
    if len(rows_run):
        x, labels, _ = eval_subset(workdir, images, seed)
        models = {row["member_id"]: predict.load_member(workdir, row)
                  for row in rows_run.to_dict("records")}
        print(f"noise_similarity: {len(pairs_run)} pairs of {len(models)} members"
              f"{shards.describe(shard)}, {len(x)} images, {len(eps_values)} eps x {draws} "
              "draws", flush=True)
        progress = Progress(len(eps_values), "eps")
        started = time.time()
        for eps, noisy in noisy_outputs(models, x, eps_values, draws, seed, batch_size):
            if len(pairs_run):
                per_pair.append(pair_rows(pairs_run, noisy, eps))
            accuracy.append(draw_accuracy({member_id: made for member_id, made
                                           in noisy.items() if member_id in own},
                                          rows, labels, eps))
            agreement = (f": agreement {per_pair[-1]['agreement'].min():.3f}.."
                         f"{per_pair[-1]['agreement'].max():.3f}" if len(pairs_run) else "")
            progress.advance(1, f"eps {eps:g}{agreement} ({time.time() - started:.1f}s)")
            started = time.time()
    part = {"per_pair": shards.concat(per_pair, PER_PAIR_COLUMNS),
            "accuracy": shards.concat(accuracy, noise_potential.ACCURACY_COLUMNS)}
    key = {"options": options, "inputs": stage_io.fingerprint(workdir, inputs)}
    with shards.gathered(wd.path(OUT_DIR), STAGE, shard, key, part) as parts:
        if parts is None:
            print(shards.kept_line(STAGE, shard, outputs[0]), flush=True)
            return False
        per_pair = shards.concat(parts["per_pair"], PER_PAIR_COLUMNS).sort_values(
            ["method", "sparsity", "seed", "eps"], kind="stable")
        accuracy = in_run_order(shards.concat(parts["accuracy"],
                                              noise_potential.ACCURACY_COLUMNS), eps_values)
        records.write_csv(outputs[0], summarise(per_pair), SUMMARY_COLUMNS)
        records.write_csv(outputs[1], per_pair, PER_PAIR_COLUMNS)
        per_seed, potential = noise_potential.tables(
            accuracy, noise_potential.dense_parents(manifest), delta, rule)
        records.write_csv(outputs[2], potential, noise_potential.COLUMNS)
        records.write_csv(outputs[3], per_seed, noise_potential.PER_SEED_COLUMNS)
        stage_io.write_stamp(workdir, stamp, inputs, outputs, options)
    print(f"noise_similarity: wrote {outputs[0]}", flush=True)
    return True


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    eps_values = cli.parse_floats(settings.eps, "eps")
    if run(settings.workdir, eps_values, settings.draws, settings.images, settings.seed,
           settings.batch_size, settings.force, settings.delta,
           settings.noise_prune_potential, shards.parse(settings.shard)):
        stage_io.write_stage_flags(settings.workdir, OUT_DIR, STAGE, records.CLEAN,
                                   shards.flags_text(settings.flags_text))
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)

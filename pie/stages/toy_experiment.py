r"""Toy study of unit-pruning criteria (Yeom et al., "Pruning by Explaining").

For each seed: draw the toy training data, train a 2 -> W -> W -> W -> K ReLU
network (dropout 0.5 after the first hidden layer), then for every number n of
reference samples per class score all hidden units with each criterion on n
samples per class drawn from the training set, remove the W lowest-scored of the
3W hidden units in one shot (no fine-tuning) and record the accuracy before and
after on the training data and on a noisy test set.

    python -m pie.stages.toy_experiment --dataset=moons \
        --criteria=lrp,taylor,grad,weight --samples_per_class=1,2,5,10,20,50,100,200 \
        --seeds=50 --noisy_test=0.3 --out=/tmp/toy_moons

Outputs in --out: results.csv (dataset, criterion, samples_per_class, seed,
scenario, stage, accuracy), summary.csv (mean and std per group),
rank_analysis.csv (agreement between the criteria's unit orderings),
accuracy_<dataset>.png, boundaries_<dataset>.png, flags.txt, and the stamp
.toy_experiment.stamp.json listing each table (rows, bytes, SHA-256) and figure
(bytes, SHA-256): the report embeds only what it lists. Finished seeds are kept in
seeds/; a rerun continues with the missing ones.
"""
import dataclasses
import itertools
import os
import time

import numpy as np
import pandas as pd
from absl import flags

from pie.compress import criteria as unit_criteria
from pie.data import toy_data
from pie.io import cli, journal, records
from pie.io.workdir import FILES

import tensorflow as tf  # noqa: E402  (after `pie`, which selects Keras 2)
import tf_keras  # noqa: E402
from scipy import stats  # noqa: E402

# Its tables' columns: pie.data.toy_data (the report reads them too, without TensorFlow).
RESULT_COLUMNS = toy_data.RESULT_COLUMNS
RANK_COLUMNS = toy_data.RANK_COLUMNS
SCENARIOS = ("train", "noisy_test")
DEFAULT_TRAIN_SIZE = {"moons": 2000, "circles": 2000, "spirals": 4000}
# Adam at 3e-3 with cosine decay: ~100% training accuracy on moons/circles at the
# default width. Shorter or slower training leaves networks that lose several
# points under every criterion (see docs/pruning_criteria.md).
DEFAULT_EPOCHS = {"moons": 8, "circles": 8, "spirals": 12}
HIDDEN_LAYERS = 3
DROPOUT_RATE = 0.5
REFERENCE_WIDTH = 1000  # the study's width; rank_k is given for it and scaled
BOUNDARY_GRID = 120
# The stage's module: its files are recorded in its stamp, also when run_experiment
# is called from Python.
STAGE = FILES["toy_results"].writer


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Settings of one toy run. None means the dataset's default."""

    dataset: str = "moons"
    criteria: tuple = ("lrp", "taylor", "grad", "weight")
    samples_per_class: tuple = (1, 2, 5, 10, 20, 50, 100, 200)
    seeds: int = 50
    noisy_test: float = 0.3
    width: int = 1000
    epochs: int = None
    batch_size: int = 100
    learning_rate: float = 3e-3
    train_size: int = None
    test_size: int = 500
    rank_k: tuple = (125, 250, 500, 1000)
    boundary_samples_per_class: int = 10
    plots: bool = True

    def resolved(self):
        """Validated copy with the dataset defaults filled in."""
        classes = toy_data.num_classes(self.dataset)  # validates the name
        config = dataclasses.replace(
            self,
            criteria=tuple(self.criteria),
            samples_per_class=tuple(int(n) for n in self.samples_per_class),
            rank_k=tuple(int(k) for k in self.rank_k),
            epochs=DEFAULT_EPOCHS[self.dataset] if self.epochs is None else self.epochs,
            train_size=(DEFAULT_TRAIN_SIZE[self.dataset] if self.train_size is None
                        else self.train_size))
        if not config.criteria or len(set(config.criteria)) != len(config.criteria):
            raise ValueError(f"criteria must be distinct names, got {list(config.criteria)}")
        for name in config.criteria:
            unit_criteria.get_criterion(name)
        for field in ("seeds", "width", "epochs", "batch_size", "train_size", "test_size",
                      "boundary_samples_per_class"):
            value = getattr(config, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        for field in ("train_size", "test_size"):
            if getattr(config, field) % classes:
                raise ValueError(
                    f"{field} must be a multiple of {classes} for {config.dataset} "
                    f"(balanced classes), got {getattr(config, field)}")
        per_class = config.train_size // classes
        if not config.samples_per_class or any(
                not 1 <= n <= per_class for n in config.samples_per_class):
            raise ValueError(
                f"samples_per_class must be integers in [1, {per_class}] (training points "
                f"per class), got {list(config.samples_per_class)}")
        if not 1 <= config.boundary_samples_per_class <= per_class:
            raise ValueError(
                f"boundary_samples_per_class must be in [1, {per_class}], got "
                f"{config.boundary_samples_per_class}")
        if not config.rank_k or any(k < 1 for k in config.rank_k):
            raise ValueError(f"rank_k must be positive integers, got {list(config.rank_k)}")
        if not (np.isfinite(config.noisy_test) and config.noisy_test >= 0):
            raise ValueError(f"noisy_test must be a noise sigma >= 0, got {config.noisy_test!r}")
        if not (np.isfinite(config.learning_rate) and config.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {config.learning_rate!r}")
        return config

    @property
    def pruned_units(self):
        """A third of the 3 * width hidden units (1,000 of 3,000 in the study)."""
        return self.width

    @property
    def scaled_rank_k(self):
        """rank_k is given for width 1000; scaled to this width, at least 1."""
        total = HIDDEN_LAYERS * self.width
        return tuple(sorted({min(total, max(1, round(k * self.width / REFERENCE_WIDTH)))
                             for k in self.rank_k}))

    def identity(self):
        """The settings that define the results (not how many seeds, not plots)."""
        fields = dataclasses.asdict(self)
        for name in ("seeds", "plots", "boundary_samples_per_class"):
            fields.pop(name)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def derived_seed(seed, stream):
    """An independent uint32 seed for one purpose (data, init, ...) of one run seed."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


_DATA, _TEST, _TEST_NOISE, _INIT, _ORDER, _DROPOUT = range(6)


# ------------------------------------------------------------------------- network


def build_network(width, classes):
    """2 -> width -> width -> width -> classes, ReLU, dropout after the first layer."""
    dense = tf_keras.layers.Dense
    return tf_keras.Sequential([
        tf_keras.Input((2,)),
        dense(width, activation="relu", name="hidden_1"),
        tf_keras.layers.Dropout(DROPOUT_RATE, name="dropout"),
        dense(width, activation="relu", name="hidden_2"),
        dense(width, activation="relu", name="hidden_3"),
        dense(classes, name="logits"),
    ], name="toy_mlp")


def _dense_layers(model):
    return [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Dense)]


class Trainer:
    """Trains one network per seed, reusing the model, optimizer and traced step.

    Weights are drawn with numpy (Glorot uniform, zero bias) and dropout masks
    with stateless ops keyed by (seed, step), so a seed's network does not depend
    on what ran before it in the process.
    """

    def __init__(self, config, classes):
        self.config = config
        self.model = build_network(config.width, classes)
        self.steps_per_epoch = -(-config.train_size // config.batch_size)
        schedule = tf_keras.optimizers.schedules.CosineDecay(
            config.learning_rate, config.epochs * self.steps_per_epoch)
        self.optimizer = tf_keras.optimizers.Adam(schedule)
        self._step = tf.function(self._train_step, input_signature=[
            tf.TensorSpec((None, 2), tf.float32), tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((2,), tf.int64)])

    def _train_step(self, x, y, dropout_seed):
        first, *rest = _dense_layers(self.model)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            hidden = first(x)
            keep = tf.random.stateless_uniform(tf.shape(hidden), dropout_seed) >= DROPOUT_RATE
            hidden = tf.where(keep, hidden / (1.0 - DROPOUT_RATE), 0.0)
            for layer in rest:
                hidden = layer(hidden)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, hidden))
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def _initialise(self, seed):
        rng = np.random.default_rng(derived_seed(seed, _INIT))
        weights = []
        for layer in _dense_layers(self.model):
            fan_in, fan_out = layer.kernel.shape
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights += [rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32),
                        np.zeros(fan_out, np.float32)]
        self.model.set_weights(weights)
        if self.optimizer.variables:
            for variable in self.optimizer.variables:
                variable.assign(tf.zeros_like(variable))

    def train(self, x, y, seed):
        """Trains the network of `seed` on (x, y); returns the model (weights set)."""
        self._initialise(seed)
        rng = np.random.default_rng(derived_seed(seed, _ORDER))
        dropout_stream = derived_seed(seed, _DROPOUT)
        step = 0
        for _ in range(self.config.epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), self.config.batch_size):
                batch = order[start:start + self.config.batch_size]
                self._step(x[batch], y[batch],
                           tf.constant([dropout_stream, step], tf.int64))
                step += 1
        return self.model


class MaskedMLP:
    """Logits of a ReLU MLP with hidden units removed, for many masks, in numpy.

    Removing a unit zeroes its activation. The first hidden layer's activations
    and the second layer's full pre-activations are computed once; a mask then
    costs only the kept part of the later layers (or, for the second layer, the
    correction by the removed first-layer units, whichever is smaller).
    """

    def __init__(self, model, x):
        layers = _dense_layers(model)
        self.names = [layer.name for layer in layers[:-1]]
        self.kernels = [layer.kernel.numpy() for layer in layers]
        self.biases = [layer.bias.numpy() for layer in layers]
        self.first = np.maximum(x @ self.kernels[0] + self.biases[0], 0.0)
        self.second = self.first @ self.kernels[1] + self.biases[1]

    def logits(self, mask=None):
        keeps = [np.ones(len(b), bool) for b in self.biases[:-1]] if mask is None \
            else [np.asarray(mask[name]) for name in self.names]
        kept = [np.flatnonzero(k) for k in keeps]
        removed_first = np.flatnonzero(~keeps[0])
        if len(removed_first) <= len(kept[0]):
            z = self.second[:, kept[1]] - self.first[:, removed_first] @ \
                self.kernels[1][np.ix_(removed_first, kept[1])]
        else:
            z = self.first[:, kept[0]] @ self.kernels[1][np.ix_(kept[0], kept[1])] \
                + self.biases[1][kept[1]]
        hidden = np.maximum(z, 0.0)
        for layer in range(2, len(keeps)):
            hidden = np.maximum(
                hidden @ self.kernels[layer][np.ix_(kept[layer - 1], kept[layer])]
                + self.biases[layer][kept[layer]], 0.0)
        return hidden @ self.kernels[-1][kept[-1]] + self.biases[-1]


# ---------------------------------------------------------------------------- run


def make_seed_data(config, seed):
    """Training set and noisy test set of one seed."""
    train_x, train_y = toy_data.make_toy(config.dataset, config.train_size,
                                         seed=derived_seed(seed, _DATA))
    test_x, test_y = toy_data.make_toy(config.dataset, config.test_size,
                                       seed=derived_seed(seed, _TEST))
    noise = np.random.default_rng(derived_seed(seed, _TEST_NOISE)).standard_normal(test_x.shape)
    test_x = (test_x + config.noisy_test * noise).astype(np.float32)
    return train_x, train_y, test_x, test_y


def draw_reference(labels, per_class, seed):
    """Indices of `per_class` training samples of every class, drawn from (seed, n)."""
    rng = np.random.default_rng([seed, per_class])
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                           for c in np.unique(labels)])


def select_mask(config, criterion, scores, seed):
    spec = unit_criteria.get_criterion(criterion)
    if spec.per_layer:
        return unit_criteria.select_pruned_units(
            scores, fraction=config.pruned_units / (HIDDEN_LAYERS * config.width),
            per_layer=True, seed=seed)
    return unit_criteria.select_pruned_units(scores, count=config.pruned_units, seed=seed)


def rank_rows(config, scores, per_class, seed):
    """Spearman, Kendall tau and first-/last-k overlaps for each pair of criteria."""
    values = {c: np.concatenate(list(scores[c].values())) for c in config.criteria}
    rankings = {c: unit_criteria.unit_ranking(scores[c], seed) for c in config.criteria}
    rows = []
    for a, b in itertools.combinations(config.criteria, 2):
        base = dict(dataset=config.dataset, samples_per_class=per_class, seed=seed,
                    criterion_a=a, criterion_b=b)
        rows.append(dict(base, statistic="spearman", k=np.nan,
                         value=stats.spearmanr(values[a], values[b]).statistic))
        rows.append(dict(base, statistic="kendall_tau", k=np.nan,
                         value=stats.kendalltau(values[a], values[b]).statistic))
        for k in config.scaled_rank_k:
            rows.append(dict(base, statistic="first_k_overlap", k=k,
                             value=unit_criteria.first_k_overlap(rankings[a], rankings[b], k)))
            rows.append(dict(base, statistic="last_k_overlap", k=k,
                             value=unit_criteria.last_k_overlap(rankings[a], rankings[b], k)))
    return rows


def _accuracies(evaluator, mask, segments):
    predicted = evaluator.logits(mask).argmax(axis=1)
    return {name: float(np.mean(predicted[part] == labels))
            for name, (part, labels) in segments.items()}


def _seed_paths(out_dir, seed):
    folder = os.path.join(out_dir, "seeds")
    return (os.path.join(folder, f"results_seed{seed:05d}.csv"),
            os.path.join(folder, f"rank_seed{seed:05d}.csv"))


def run_seed(config, trainer, scorer, seed, out_dir, log):
    """Trains, scores, prunes and evaluates one seed; writes its rows atomically."""
    started = time.time()
    train_x, train_y, test_x, test_y = make_seed_data(config, seed)
    model = trainer.train(train_x, train_y, seed)
    evaluator = MaskedMLP(model, np.concatenate([train_x, test_x]))
    segments = {"train": (slice(0, len(train_x)), train_y),
                "noisy_test": (slice(len(train_x), None), test_y)}
    before = _accuracies(evaluator, None, segments)
    cache, rows, ranks = {}, [], []
    for per_class in config.samples_per_class:
        reference = draw_reference(train_y, per_class, seed)
        scores = scorer.score(train_x[reference], train_y[reference])
        for criterion in config.criteria:
            mask = select_mask(config, criterion, scores[criterion], seed)
            key = b"".join(np.packbits(mask[name]).tobytes() for name in sorted(mask))
            if key not in cache:  # data-free criteria give one mask for every n
                cache[key] = _accuracies(evaluator, mask, segments)
            for scenario in SCENARIOS:
                for stage, accuracy in (("before", before[scenario]),
                                        ("after", cache[key][scenario])):
                    rows.append(dict(dataset=config.dataset, criterion=criterion,
                                     samples_per_class=per_class, seed=seed,
                                     scenario=scenario, stage=stage, accuracy=accuracy))
        if len(config.criteria) > 1:
            ranks += rank_rows(config, scores, per_class, seed)
    if seed == 0 and config.plots:
        _boundary_figure(config, model, scorer, train_x, train_y, out_dir)
    results_path, rank_path = _seed_paths(out_dir, seed)
    ranks = pd.DataFrame(ranks, columns=RANK_COLUMNS).astype({"k": "Int64"})
    records.write_csv(rank_path, ranks, RANK_COLUMNS)
    records.write_csv(results_path, pd.DataFrame(rows), RESULT_COLUMNS)
    after = {c: np.mean([r["accuracy"] for r in rows if r["criterion"] == c
                         and r["stage"] == "after" and r["scenario"] == "train"])
             for c in config.criteria}
    log(f"seed {seed}: unpruned train {before['train']:.4f} noisy_test "
        f"{before['noisy_test']:.4f}; pruned train (mean over n) "
        + ", ".join(f"{c} {a:.4f}" for c, a in after.items())
        + f"; {time.time() - started:.1f} s")


def _boundary_figure(config, model, scorer, train_x, train_y, out_dir):
    from pie.stages import toy_plots  # matplotlib only when figures are drawn

    low = train_x.min(axis=0) - 0.3
    high = train_x.max(axis=0) + 0.3
    grid_x, grid_y = np.meshgrid(np.linspace(low[0], high[0], BOUNDARY_GRID),
                                 np.linspace(low[1], high[1], BOUNDARY_GRID))
    points = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)
    evaluator = MaskedMLP(model, points)
    per_class = config.boundary_samples_per_class
    reference = draw_reference(train_y, per_class, 0)
    scores = scorer.score(train_x[reference], train_y[reference])
    panels = []
    for criterion in config.criteria:
        mask = select_mask(config, criterion, scores[criterion], 0)
        predicted = evaluator.logits(mask).argmax(axis=1).reshape(grid_x.shape)
        panels.append((f"{criterion}, pruned {config.pruned_units}", predicted))
    unpruned = evaluator.logits().argmax(axis=1).reshape(grid_x.shape)
    toy_plots.plot_decision_boundaries(
        os.path.join(out_dir, f"boundaries_{config.dataset}.png"),
        f"{config.dataset}, seed 0, {per_class} reference samples per class",
        train_x, train_y, train_x[reference], train_y[reference], grid_x, grid_y,
        unpruned, panels)


def _check_run_config(config, out_dir):
    path = os.path.join(out_dir, "run_config.json")
    identity = config.identity()
    if os.path.exists(path):
        saved = records.read_json(path)
        if saved != identity:
            changed = sorted(k for k in set(saved) | set(identity)
                             if saved.get(k) != identity.get(k))
            raise records.ContractError(
                f"{out_dir} holds a run with other settings ({', '.join(changed)}); "
                "use a new --out or the same settings")
    else:
        records.write_json(path, identity)


def summarise(results):
    """Mean, std and seed count of accuracy per dataset/criterion/n/scenario/stage."""
    keys = ["dataset", "criterion", "samples_per_class", "scenario", "stage"]
    summary = results.groupby(keys)["accuracy"].agg(["mean", "std", "count"]).reset_index()
    return summary.rename(columns={"mean": "accuracy_mean", "std": "accuracy_std",
                                   "count": "seeds"})


def run_experiment(config, out_dir, log=print, flags_text=None):
    """Runs (or continues) the study; returns the results frame.

    `flags_text` (the resolved command-line flags) is saved as flags.txt once the
    folder is known to hold a run with the same settings. Every table and figure
    is recorded in the stamp of this stage in its folder.
    """
    with records.writing_as(STAGE):
        return _run_experiment(config, out_dir, log, flags_text)


def _run_experiment(config, out_dir, log, flags_text):
    config = config.resolved()
    journal.makedirs(out_dir)  # (a linked folder of a workdir is refused)
    _check_run_config(config, out_dir)
    if flags_text is not None:
        records.write_text(os.path.join(out_dir, "flags.txt"), flags_text)
    todo = [s for s in range(config.seeds) if not os.path.exists(_seed_paths(out_dir, s)[0])]
    log(f"{config.dataset}: {config.seeds - len(todo)} of {config.seeds} seeds done, "
        f"{len(todo)} to run")
    summaries = [os.path.join(out_dir, name)
                 for name in ("results.csv", "rank_analysis.csv", "summary.csv")]
    if config.plots:
        summaries.append(os.path.join(out_dir, f"accuracy_{config.dataset}.png"))
    # Files of an older version, which recorded none, are written again to be listed.
    if not todo and all(os.path.exists(path) and records.written_record(path)[0] == STAGE
                        for path in summaries):
        existing = records.read_csv(summaries[0], ["seed"])
        if set(existing["seed"]) == set(range(config.seeds)):
            # Nothing new: leave the files (and the report that reads them) untouched.
            return existing
    if todo:
        trainer = Trainer(config, toy_data.num_classes(config.dataset))
        scorer = unit_criteria.UnitScorer(trainer.model, config.criteria)
        for seed in todo:
            run_seed(config, trainer, scorer, seed, out_dir, log)
    results = pd.concat([records.read_csv(_seed_paths(out_dir, s)[0])
                         for s in range(config.seeds)], ignore_index=True)
    ranks = [records.read_csv(_seed_paths(out_dir, s)[1]) for s in range(config.seeds)]
    ranks = pd.concat(ranks, ignore_index=True) if ranks else pd.DataFrame(columns=RANK_COLUMNS)
    records.write_csv(os.path.join(out_dir, "results.csv"), results, RESULT_COLUMNS)
    records.write_csv(os.path.join(out_dir, "rank_analysis.csv"), ranks, RANK_COLUMNS)
    records.write_csv(os.path.join(out_dir, "summary.csv"), summarise(results))
    if config.plots:
        from pie.stages import toy_plots

        toy_plots.plot_accuracy_curves(
            results, os.path.join(out_dir, f"accuracy_{config.dataset}.png"),
            f"{config.dataset}, {config.seeds} seeds, pruned {config.pruned_units} of "
            f"{HIDDEN_LAYERS * config.width} units")
    return results


# ---------------------------------------------------------------------------- CLI

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    flags.DEFINE_enum("dataset", "moons", sorted(toy_data.TOY_DATASETS), "Toy dataset.",
                      flag_values=flag_values)
    flags.DEFINE_list("criteria", list(ToyConfig.criteria),
                      f"Criteria to compare; allowed: {', '.join(sorted(unit_criteria.CRITERIA))}.",
                      flag_values=flag_values)
    flags.DEFINE_list("samples_per_class", [str(n) for n in ToyConfig.samples_per_class],
                      "Numbers of reference samples per class the criteria score on.",
                      flag_values=flag_values)
    flags.DEFINE_integer("seeds", ToyConfig.seeds, "Number of seeds (0 .. seeds-1): data, "
                         "network and reference draws; each seed trains one network.",
                         flag_values=flag_values)
    flags.DEFINE_float("noisy_test", ToyConfig.noisy_test,
                       "Sigma of the Gaussian noise added to the fresh test points.",
                       flag_values=flag_values)
    flags.DEFINE_string("out", None, "Output folder.", flag_values=flag_values)
    flags.DEFINE_integer("width", ToyConfig.width, "Units per hidden layer (3 hidden layers); "
                         "`width` units (a third) are pruned. Small values give a quick run.",
                         flag_values=flag_values)
    flags.DEFINE_integer("epochs", None, "Training epochs; default per dataset "
                         f"({', '.join(f'{k} {v}' for k, v in DEFAULT_EPOCHS.items())}).",
                         flag_values=flag_values)
    flags.DEFINE_integer("batch_size", ToyConfig.batch_size, "Training batch size.",
                         flag_values=flag_values)
    flags.DEFINE_float("learning_rate", ToyConfig.learning_rate,
                       "Peak Adam learning rate (cosine decay to 0).", flag_values=flag_values)
    flags.DEFINE_integer("train_size", None, "Training points; default 2000 (4000 for spirals).",
                         flag_values=flag_values)
    flags.DEFINE_integer("test_size", ToyConfig.test_size, "Fresh noisy test points.",
                         flag_values=flag_values)
    flags.DEFINE_list("rank_k", [str(k) for k in ToyConfig.rank_k],
                      "k of the first-/last-k overlaps, for width 1000 (scaled with --width).",
                      flag_values=flag_values)
    flags.DEFINE_integer("boundary_samples_per_class", ToyConfig.boundary_samples_per_class,
                         "Reference samples per class of the decision-boundary figure (seed 0).",
                         flag_values=flag_values)
    flags.DEFINE_bool("plots", True, "Draw the figures.", flag_values=flag_values)


def config_from_flags(settings):
    return ToyConfig(
        dataset=settings.dataset, criteria=tuple(settings.criteria),
        samples_per_class=tuple(cli.parse_ints(",".join(settings.samples_per_class),
                                                "samples_per_class")),
        seeds=settings.seeds, noisy_test=settings.noisy_test, width=settings.width,
        epochs=settings.epochs, batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, train_size=settings.train_size,
        test_size=settings.test_size,
        rank_k=tuple(cli.parse_ints(",".join(settings.rank_k), "rank_k")),
        boundary_samples_per_class=settings.boundary_samples_per_class, plots=settings.plots)


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    if not settings.out:
        raise cli.UsageError("--out is required: the output folder")
    try:
        config = config_from_flags(settings).resolved()
    except ValueError as error:  # the settings' checks: bad flags
        if isinstance(error, cli.user_errors()):
            raise
        raise cli.UsageError(str(error)) from None
    started = time.time()
    run_experiment(config, settings.out, flags_text=settings.flags_text)
    print(f"done in {time.time() - started:.1f} s; results in {settings.out}")


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

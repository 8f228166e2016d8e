"""The training stage's settings: one frozen, validated `TrainConfig`.

The command line (`save_checkpoint.train`, `pie train`) defines its flags from
these fields (help texts included) and builds the config once; the Python API
(`save_checkpoint.train.run(workdir=..., seeds=2)`) builds it from keywords. Every
value is checked here, before anything is loaded or written, whatever the workdir
already holds. Nothing under pie/ reads absl's global flag values.
"""
import dataclasses
import math
from typing import Optional

from pie.compress import lineage, methods, precision, schedules, sparsity
from pie.data import augments
from pie.io import cli, errors, records
from pie.models import builders

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
OPTIMIZERS = schedules.OPTIMIZERS  # adam, sgd (Nesterov), momentum
PRECISIONS = precision.PRECISIONS
SCHEDULES = ("polynomial", "constant")
# The largest population one run trains (sparsity levels x seeds): the plan, the
# parents and the progress are built for every member before any trains.
MAX_MEMBERS = 10_000
# --epochs when not given: 8, or 0 with --init_from (the dense members are the
# given model, evaluated, not retrained).
DEFAULT_EPOCHS = 8
# Set for each worker process by --workers, never passed on.
WORKER_FIELDS = ("workers", "threads", "seed_slice")

option = cli.option

# What each field is (pie.compress.recipes; tests/test_recipe.py checks that every
# field is named exactly once). A member's *recipe* is what its trained weights
# depend on: every member's RECIPE_FIELDS, plus PRUNED_RECIPE_FIELDS for members of a
# method other than dense, plus the method's own `option_fields` (of
# METHOD_OPTION_FIELDS). EXECUTION_FIELDS change only speed or the order of float
# sums: recorded in meta.json, never part of the recipe. RUN_FIELDS say which
# members a run trains and where, or only check input.
RECIPE_FIELDS = (
    "dataset", "label_attribute", "label_offset", "augment", "toy_noise", "toy_seed",
    "model", "width", "epochs", "steps_per_epoch", "batch_size", "optimizer",
    "learning_rate", "lr_schedule", "warmup_epochs", "lr_decay_epochs", "lr_decay_factor",
    "weight_decay", "weight_decay_mode", "lr_per_256", "precision", "label_smoothing",
    "init_from")
PRUNED_RECIPE_FIELDS = (
    "method", "protocol", "prune_schedule", "finetune_epochs",
    "reference_samples_per_class", "schedule", "initial_sparsity", "begin_step", "end_step",
    "frequency", "power", "prune_classifier")
METHOD_OPTION_FIELDS = ("m_by_n", "clusters", "parent_method", "student_model",
                        "student_width", "temperature", "alpha")
EXECUTION_FIELDS = ("data_dir", "steps_per_execution", "eval_batch_size", "jit_compile",
                    "strategy", "tpu", "share_graphs", "workers", "threads")
RUN_FIELDS = ("workdir", "sparsities", "seeds", "shard", "seed_slice", "allow_chance")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    workdir: Optional[str] = option(None, "Output folder of the population (created if needed).")
    dataset: str = option("mnist5k", "digits, mnist5k, moons, circles, spirals, "
                          "tfrecord:<dir>, or a tensorflow-datasets name.")
    data_dir: Optional[str] = option(None, "tensorflow-datasets data folder.")
    label_attribute: Optional[str] = option(None, "Binary label attribute (celeb_a).")
    label_offset: Optional[int] = option(
        None, "tfrecord: folders: subtracted from image/class/label to give 0-based class "
        "ids (default: the folder's dataset_info.json, else 1 as in ImageNet).")
    augment: str = option(
        "auto", "Training views: none, flip_crop, inception_crop, or auto (inception_crop "
        "for ImageNet-size images, flip_crop for CIFAR-size, none for digits, mnist and toy "
        "sets). Drawn per (seed, epoch, example); the resolved choice is saved in the "
        "member's flags.txt.", choices=augments.AUGMENTS)
    toy_noise: Optional[float] = option(None, "Noise of the toy 2-D sets (default: the "
                                        "set's own).")
    toy_seed: int = option(0, "Seed of the toy 2-D set's points.")
    model: str = option("small_cnn", "One of: " + ", ".join(builders.MODELS) + ".")
    width: Optional[int] = option(None, "The model's width knob (filters, units, or WRN k).")
    sparsities: str = option("0,0.5,0.9", "Comma-separated target sparsities in [0, 1).")
    seeds: int = option(2, f"Members per sparsity level: seeds 0..seeds-1 (sparsity levels "
                        f"x seeds: at most {MAX_MEMBERS} members).")
    method: str = option(
        "magnitude", "Pruning method of members with sparsity > 0 (pie.compress.methods): "
        "magnitude (tfmot, each layer to the target, during training), wt (one global "
        "weight-magnitude threshold, during training), sipp (global data-informed weight "
        "sensitivity, from the dense member), or a unit criterion (lrp, taylor, grad, "
        "weight, filter_l1: that fraction of neurons/filters removed, from the dense "
        "member); or a method made from a finished member (docs/training.md): m_by_n "
        "(N:M sparsity, at sparsity m/n), qat and cluster (at --sparsities=0), pqat (QAT "
        "keeping a pruned --parent_method member's zeros), distill (a smaller student "
        "of the dense member, at --sparsities=0).")
    m_by_n: str = option(
        "2,4", "--method=m_by_n: m,n = at least m zeros in every n consecutive weights "
        "along each pruned kernel's input channels (tfmot's sparsity_m_by_n); its members "
        "are recorded at sparsity m/n.")
    clusters: int = option(16, "--method=cluster: distinct values per clustered kernel "
                           "(tfmot cluster_weights, k-means++ initialisation).")
    parent_method: str = option(
        "magnitude", "--method=pqat: the pruned population whose members (same sparsity "
        "and seed) are quantization-aware trained, their zeros kept.")
    student_model: Optional[str] = option(
        None, "--method=distill: the student architecture (default: --model).")
    student_width: Optional[int] = option(
        None, "--method=distill: the student's width knob (default: half the teacher's "
        "--width, else half of --model's default width); the student must have fewer "
        "parameters.")
    temperature: float = option(4.0, "--method=distill: softmax temperature T of the soft "
                                "targets (> 0); the soft loss is scaled by T^2.")
    alpha: float = option(0.5, "--method=distill: weight of the hard-label loss, in [0, 1]; "
                          "1 - alpha weighs the soft (teacher) loss.")
    reference_samples_per_class: int = option(
        10, "sipp and unit criteria: training images per class the scores are computed on.")
    finetune_epochs: int = option(
        2, "Members pruned once (sipp, unit criteria, and every pruned member with "
        "--protocol=from_dense or --init_from): epochs of fine-tuning after pruning, "
        "pruned weights or units held at 0.")
    protocol: str = option(
        "scratch", "scratch: every member trains from a fresh initialisation, magnitude and "
        "wt pruning during training (Hooker et al.); from_dense: each seed's dense member "
        "trains first and every pruned member prunes a parent network once and retrains "
        "for --finetune_epochs (Lost in Pruning). See pie/compress/lineage.py.")
    prune_schedule: str = option(
        "oneshot", "Members with a parent network: oneshot (the parent is the seed's dense "
        "member) or iterative (the member of the next lower sparsity: each step prunes the "
        "previous one further).")
    init_from: Optional[str] = option(
        None, "A saved Keras model (zip .keras) to start from, or one per seed with {seed} "
        "in the path: the dense members are that model (trained further only for --epochs "
        "> 0), pruned members prune it and fine-tune for --finetune_epochs. Its input shape "
        "and class count must match the dataset.")
    allow_chance: bool = option(
        False, "Start from an --init_from model that scores at chance on a few eval images "
        "(else an error: another input convention?).")
    schedule: str = option("polynomial", "Pruning schedule.", choices=SCHEDULES)
    initial_sparsity: float = option(0.0, "Polynomial schedule: sparsity at begin_step.")
    begin_step: int = option(-1, "First pruning step (-1: 10% of training).")
    end_step: int = option(-1, "Polynomial schedule: last step (-1: 60% of training).")
    frequency: int = option(-1, "Steps between mask updates (-1: 10 updates).")
    power: float = option(3.0, "Polynomial schedule exponent (3: cubic, as the study).")
    prune_classifier: bool = option(False, "Also prune the final classifier's kernel.")
    epochs: Optional[int] = option(
        None, f"Training epochs per member (default {DEFAULT_EPOCHS}; with --init_from 0, "
        "the dense members are the given model as it is).")
    steps_per_epoch: Optional[int] = option(
        None, "Optional: steps per epoch (default: the training split's size, counted once "
        "and cached, / --batch_size).")
    steps_per_execution: int = option(
        0, "Training steps per call of the traced train function. 0: a whole epoch for "
        "dense and magnitude members (their training is all in the graph, so Python runs "
        "once an epoch), 1 for members held by per-batch callbacks (wt, members pruned "
        "once) and strategies other than 'default'. N >= 1: N steps a call (at most an "
        "epoch) for the members that allow more than one; 1 is Keras's own default. The "
        "weights are the same either way; only speed differs.")
    batch_size: int = option(64, "Global batch size.")
    optimizer: str = option("adam", "adam, sgd with Nesterov momentum 0.9, or momentum: SGD "
                            "with (heavy-ball) momentum 0.9.", choices=OPTIMIZERS)
    learning_rate: float = option(1e-3, "Learning rate (finite, > 0).")
    # The recipe (pie.compress.schedules, pie.compress.precision): with these defaults
    # a member trains exactly as before they existed.
    lr_schedule: str = option(
        "constant", "Learning-rate schedule, evaluated at every step: constant, step (x "
        "--lr_decay_factor after each of --lr_decay_epochs), cosine or polynomial (power 2) "
        "decay to 0 at the end of training (pie.compress.schedules).",
        choices=schedules.SCHEDULES)
    warmup_epochs: float = option(0.0, "Epochs of linear warm-up from 0 to the learning rate "
                                  "(any schedule).")
    lr_decay_epochs: str = option(
        "", "--lr_schedule=step: comma-separated, increasing epochs after which the rate is "
        "multiplied by --lr_decay_factor (30,60,80: from the 31st, 61st, 81st epoch).")
    lr_decay_factor: float = option(0.1, "--lr_schedule=step: factor of each decay step, in "
                                    "(0, 1].")
    weight_decay: float = option(0.0, "Weight decay of the Conv and Dense kernels (never "
                                 "batch-norm gamma/beta or biases); 0: none.")
    weight_decay_mode: str = option(
        "l2", "l2: the gradient of the loss term weight_decay/2 x |kernel|^2 (the study's "
        "form, through momentum); decoupled: w -= lr x weight_decay x w each step "
        "(SGDW/AdamW).", choices=schedules.WEIGHT_DECAY_MODES)
    lr_per_256: bool = option(False, "--learning_rate is per 256 images: the rate used is "
                              "learning_rate x batch_size / 256.")
    precision: str = option(
        "float32", "float32, or Keras mixed precision (16-bit compute, float32 weights and "
        "logits; float16 with loss scaling). Members are saved in float32.",
        choices=PRECISIONS)
    jit_compile: bool = option(False, "Compile the training step with XLA.")
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy loss, in "
                                    "[0, 1).")
    strategy: str = option("default", "tf.distribute strategy.", choices=STRATEGIES)
    tpu: Optional[str] = option(None, "TPU name or address, with --strategy=tpu.")
    shard: str = option("0/1", "i/n: train only the i-th of n slices of the population.")
    eval_batch_size: int = option(256, "Batch size of the final evaluation.")
    share_graphs: bool = option(
        True, "Members of one method train one after another on one built, compiled and "
        "traced model (a pruned member's target sparsity is a variable of its schedule), "
        "set to each member's own seed-initial state first: the weights of training each "
        "member alone, without rebuilding and retracing per member "
        "(pie.compress.population). --noshare_graphs builds every member afresh. Members "
        "with a parent network (--protocol=from_dense, --init_from), models with dropout "
        "and strategies other than 'default' always build afresh.")
    workers: int = option(
        1, "Processes training the population in parallel on this machine, each the "
        "members of some seeds (seed k to worker k mod N) with its share of the CPU cores "
        "(cores / N threads each, --threads); 0: automatic, one per CPU core on a machine "
        "without GPUs with --strategy=default, else 1. Every member trains as it would "
        "alone (pie.compress.workers).")
    seed_slice: str = option(
        "0/1", "k/N: train the members whose seed is k mod N (a member and its parent "
        "network share a seed), then those of other slices that no process has started and "
        "that need no other member (set by --workers for each worker).")
    threads: int = option(0, "TensorFlow CPU threads of this process (0: TensorFlow's "
                          "default, every core). Set by --workers for each worker.")

    def __post_init__(self):
        cli.coerce_fields(self)
        if not self.workdir:
            raise errors.UsageError("--workdir is required")
        self._check_population()
        self._check_recipe()
        self._check_schedule()
        self._check_run()
        for method in methods.registered():
            method.check_config(self)

    # ------------------------------------------------------------ the checks
    def _check_population(self):
        values = cli.parse_floats(self.sparsities, "sparsities")
        for value in values:
            if not math.isfinite(value):
                raise errors.UsageError(f"--sparsities must be finite numbers in [0, 1), got "
                                        f"'{self.sparsities}'")
            sparsity.validate_sparsity(value)
        # Members are named at 6 significant digits (dense_0, magnitude_0.5): two values
        # that name the same member are one; -0.0 is 0.
        keyed = tuple(records.key_sparsity(value) for value in values)
        if len(set(keyed)) != len(keyed):
            raise errors.UsageError(f"--sparsities has duplicates at the precision of member "
                                    f"names (6 significant digits): '{self.sparsities}'")
        if not 1 <= self.seeds <= MAX_MEMBERS:
            raise errors.UsageError(f"--seeds must be in [1, {MAX_MEMBERS}], got {self.seeds}")
        if len(keyed) * self.seeds > MAX_MEMBERS:
            raise errors.UsageError(
                f"the population has {len(keyed)} sparsity levels x {self.seeds} seeds = "
                f"{len(keyed) * self.seeds} members; at most {MAX_MEMBERS} a run")
        object.__setattr__(self, "levels", keyed)
        methods.get(self.method)
        if self.method == methods.DENSE:
            raise errors.UsageError(f"--method names how members with sparsity > 0 are "
                                    f"pruned; allowed: {', '.join(methods.names())}")
        if not methods.get(self.method).trains_members:
            # Methods made from a finished member find their parents themselves: the
            # protocol's parents (and their rules) are the pruned populations'.
            lineage.validate(self.protocol, self.prune_schedule, keyed, self.init_from)

    def _check_recipe(self):
        if self.width is not None and self.width < 1:
            raise errors.UsageError(f"--width must be at least 1, got {self.width}")
        if self.epochs is None:
            object.__setattr__(self, "epochs", 0 if self.init_from else DEFAULT_EPOCHS)
        if self.epochs < (0 if self.init_from else 1):
            raise errors.UsageError(f"--epochs must be at least 1 (0 only with --init_from), "
                                    f"got {self.epochs}")
        for name in ("batch_size", "eval_batch_size", "reference_samples_per_class"):
            _at_least(name, getattr(self, name), 1)
        _at_least("finetune_epochs", self.finetune_epochs, 0)
        if self.steps_per_epoch is not None:
            _at_least("steps_per_epoch", self.steps_per_epoch, 1)
        if self.steps_per_execution < 0:
            raise errors.UsageError(f"--steps_per_execution must be at least 0 (0: "
                                    f"automatic), got {self.steps_per_execution}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise errors.UsageError(f"--learning_rate must be a finite number > 0, got "
                                    f"{self.learning_rate}")
        if not 0 <= self.label_smoothing < 1:  # NaN fails too
            raise errors.UsageError(f"--label_smoothing must be in [0, 1), got "
                                    f"{self.label_smoothing}")
        if self.toy_noise is not None and not (math.isfinite(self.toy_noise)
                                               and self.toy_noise >= 0):
            raise errors.UsageError(f"--toy_noise must be a finite number >= 0, got "
                                    f"{self.toy_noise}")
        _at_least("toy_seed", self.toy_seed, 0)
        if self.label_offset is not None:
            _at_least("label_offset", self.label_offset, 0)
        # The learning-rate schedule and weight decay, validated into one Recipe.
        object.__setattr__(self, "recipe", schedules.validate(
            self.lr_schedule, self.warmup_epochs, self.lr_decay_epochs, self.lr_decay_factor,
            self.weight_decay, self.weight_decay_mode, self.lr_per_256))

    def _check_schedule(self):
        if not 0 <= self.initial_sparsity < 1:
            raise errors.UsageError(f"--initial_sparsity must be in [0, 1), got "
                                    f"{self.initial_sparsity}")
        if not (math.isfinite(self.power) and self.power > 0):
            raise errors.UsageError(f"--power must be a finite number > 0, got {self.power}")
        for name in ("begin_step", "end_step"):
            _at_least(name, getattr(self, name), -1, " (-1: automatic)")
        if self.frequency != -1 and self.frequency < 1:
            raise errors.UsageError(f"--frequency must be at least 1 (-1: automatic), got "
                                    f"{self.frequency}")

    def _check_run(self):
        from pie.compress import workers
        object.__setattr__(self, "shard_slice", parse_shard(self.shard))
        object.__setattr__(self, "seed_range", workers.parse_slice(self.seed_slice))
        if self.workers < 0:
            raise errors.UsageError(f"--workers must be at least 0 (0: automatic), got "
                                    f"{self.workers}")
        if self.workers > 1 and self.strategy != "default":
            raise errors.UsageError(
                f"--workers={self.workers} needs --strategy=default: a {self.strategy} "
                "strategy spreads one member over devices")
        if self.threads < 0:
            raise errors.UsageError(f"--threads must be at least 0 (0: TensorFlow's "
                                    f"default), got {self.threads}")

    def check_inputs(self):
        """The checks that read files or name lists: the dataset and model names, the
        --init_from models, and that the workdir can be written."""
        from pie.compress import training
        from pie.data import sources
        from pie.models import loading
        for seed in range(self.seeds) if self.init_from else ():
            loading.check_keras(lineage.init_path(self.init_from, seed))
        sources.validate_name(self.dataset)
        builders.validate_name(self.model)
        training.check_writable(self.workdir)

    # ------------------------------------------------------------ derived values
    @property
    def method_object(self):
        return methods.get(self.method)

    def model_name(self):
        """The manifest's `model`: the --model architecture, or `init-<file>`."""
        if self.init_from:
            from pie.models import imported
            return imported.model_label("init", self.init_from)
        return self.model

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def flags_text(self):
        """The settings as `--name=value` lines (a --flagfile reproducing the run)."""
        return cli.flags_text(self)

    def worker_args(self):
        """This run's settings as arguments of a worker process (pie.compress.workers)."""
        return [line for line in self.flags_text().splitlines()
                if line[2:].split("=", 1)[0] not in WORKER_FIELDS]


def _at_least(name, value, least, note=""):
    if value < least:
        raise errors.UsageError(f"--{name} must be at least {least}{note}, got {value}")


def parse_shard(text):
    """`i/n` of --shard: (i, n) with 0 <= i < n."""
    return cli.parse_slice(text, "shard")

r"""Train a population: every (sparsity x seed) member, dense and pruned.

  python -m save_checkpoint.train --workdir=W --dataset=mnist5k --model=small_cnn \
      --sparsities=0,0.5,0.9 --seeds=2

Sparsity 0 members (method `dense`) use the same recipe without pruning wrappers.
The others are pruned during training (`magnitude`: tfmot, each layer to the
target; `wt`: one global magnitude threshold over all layers), or prune the
finished dense member of the same seed once and fine-tune (`sipp`: global weight
sensitivity; unit criteria: neurons and filters); see docs/training.md.
`--protocol=from_dense` prunes every member from a parent network instead (its
seed's dense member, or with `--prune_schedule=iterative` the next sparser one),
and `--init_from=PATH` starts from a saved Keras model (pie.compress.lineage). Each finished
member is a folder `W/checkpoints/<method>/sparsity_<s>/seed_<k>/` and a row of
`W/population.csv` (see docs/contracts.md). Rerunning continues an interrupted
member from its last epoch checkpoint and skips finished ones.
"""
import contextlib
import math
import os
import shutil
import sys
import time

from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.compress import workers as worker_processes

if __name__ == "__main__":
    # The other workers of `--workers=N` start now, and load TensorFlow (about 4 s)
    # while this process does; they begin once this one has checked the run.
    worker_processes.start_early("save_checkpoint.train", sys.argv[1:])

from pie.compress import criteria, lineage, population, pruning, training  # noqa: E402
from pie.compress import history, precision, schedules  # noqa: E402  # recipes:
from pie.data import sources, views  # noqa: E402
from pie.io import cli, records  # noqa: E402
from pie.io.workdir import Workdir  # noqa: E402
from pie.io.progress import Progress  # noqa: E402
from pie.models import builders, imported, loading  # noqa: E402

FLAGS = flags.FLAGS
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
OPTIMIZERS = schedules.OPTIMIZERS  # recipes: adam, sgd (Nesterov), momentum


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    flags.DEFINE_string("workdir", None, "Output folder of the population (created if needed).",
                        flag_values=flag_values)
    flags.DEFINE_string("dataset", "mnist5k", "digits, mnist5k, moons, circles, spirals, "
                        "tfrecord:<dir>, or a tensorflow-datasets name.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data folder.",
                        flag_values=flag_values)
    flags.DEFINE_string("label_attribute", None, "Binary label attribute (celeb_a).",
                        flag_values=flag_values)
    flags.DEFINE_integer("label_offset", None, "tfrecord: folders: subtracted from "
                         "image/class/label to give 0-based class ids (default: the folder's "
                         "dataset_info.json, else 1 as in ImageNet).", flag_values=flag_values)
    flags.DEFINE_enum("augment", "auto", views.AUGMENTS,
                      "Training views: none, flip_crop, inception_crop, or auto "
                      "(inception_crop for ImageNet-size images, flip_crop for CIFAR-size, none "
                      "for digits, mnist and toy sets). Drawn per (seed, epoch, example); the "
                      "resolved choice is saved in the member's flags.txt.",
                      flag_values=flag_values)
    flags.DEFINE_float("toy_noise", None, "Noise of the toy 2-D sets (default: the set's own).",
                       flag_values=flag_values)
    flags.DEFINE_integer("toy_seed", 0, "Seed of the toy 2-D set's points.",
                         flag_values=flag_values)
    flags.DEFINE_string("model", "small_cnn", "One of: " + ", ".join(builders.MODELS) + ".",
                        flag_values=flag_values)
    flags.DEFINE_integer("width", None, "The model's width knob (filters, units, or WRN k).",
                         flag_values=flag_values)
    flags.DEFINE_string("sparsities", "0,0.5,0.9", "Comma-separated target sparsities in [0, 1).",
                        flag_values=flag_values)
    flags.DEFINE_integer("seeds", 2, "Members per sparsity level: seeds 0..seeds-1.",
                         flag_values=flag_values)
    flags.DEFINE_string("method", "magnitude", "Pruning method of members with sparsity > 0: "
                        "magnitude (tfmot, each layer to the target, during training), wt "
                        "(one global weight-magnitude threshold, during training), sipp (global "
                        "data-informed weight sensitivity, from the dense member), or a unit "
                        "criterion (lrp, taylor, grad, weight, filter_l1: that fraction of "
                        "neurons/filters removed, from the dense member).",
                        flag_values=flag_values)
    flags.DEFINE_integer("reference_samples_per_class", 10,
                         "sipp and unit criteria: training images per class the scores are "
                         "computed on.", flag_values=flag_values)
    flags.DEFINE_integer("finetune_epochs", 2,
                         "Members pruned once (sipp, unit criteria, and every pruned member "
                         "with --protocol=from_dense or --init_from): epochs of fine-tuning "
                         "after pruning, pruned weights or units held at 0.",
                         flag_values=flag_values)
    flags.DEFINE_string("protocol", "scratch", "scratch: every member trains from a fresh "
                        "initialisation, magnitude and wt pruning during training (Hooker et "
                        "al.); from_dense: each seed's dense member trains first and every "
                        "pruned member prunes a parent network once and retrains for "
                        "--finetune_epochs (Lost in Pruning). See pie/compress/lineage.py.",
                        flag_values=flag_values)
    flags.DEFINE_string("prune_schedule", "oneshot", "Members with a parent network: "
                        "oneshot (the parent is the seed's dense member) or iterative (the "
                        "member of the next lower sparsity: each step prunes the previous "
                        "one further).", flag_values=flag_values)
    flags.DEFINE_string("init_from", None, "A saved Keras model (zip .keras) to start from, "
                        "or one per seed with {seed} in the path: the dense members are that "
                        "model (trained further only for --epochs > 0), pruned members prune "
                        "it and fine-tune for --finetune_epochs. Its input shape and class "
                        "count must match the dataset.", flag_values=flag_values)
    flags.DEFINE_enum("schedule", "polynomial", pruning.SCHEDULES, "Pruning schedule.",
                      flag_values=flag_values)
    flags.DEFINE_float("initial_sparsity", 0.0, "Polynomial schedule: sparsity at begin_step.",
                       flag_values=flag_values)
    flags.DEFINE_integer("begin_step", -1, "First pruning step (-1: 10% of training).",
                         flag_values=flag_values)
    flags.DEFINE_integer("end_step", -1, "Polynomial schedule: last step (-1: 60% of training).",
                         flag_values=flag_values)
    flags.DEFINE_integer("frequency", -1, "Steps between mask updates (-1: 10 updates).",
                         flag_values=flag_values)
    flags.DEFINE_float("power", 3.0, "Polynomial schedule exponent (3: cubic, as the study).",
                       flag_values=flag_values)
    flags.DEFINE_bool("prune_classifier", False, "Also prune the final classifier's kernel.",
                      flag_values=flag_values)
    flags.DEFINE_integer("epochs", 8, "Training epochs per member (with --init_from: 0 unless "
                         "given, the dense members are the given model as it is).",
                         flag_values=flag_values)
    flags.DEFINE_integer("steps_per_epoch", None, "Optional: steps per epoch (default: the "
                         "training split's size, counted once and cached, / --batch_size).",
                         flag_values=flag_values)
    flags.DEFINE_integer("steps_per_execution", 0,
                         "Training steps per call of the traced train function. 0: a whole "
                         "epoch for dense and magnitude members (their training is all in "
                         "the graph, so Python runs once an epoch), 1 for members held by "
                         "per-batch callbacks (wt, members pruned once) and strategies other "
                         "than 'default'. N >= 1: N steps a call (at most an epoch) for the "
                         "members that allow more than one; 1 is Keras's own default. The "
                         "weights are the same either way; only speed differs.",
                         flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 64, "Global batch size.", flag_values=flag_values)
    flags.DEFINE_enum("optimizer", "adam", OPTIMIZERS, "adam, sgd with Nesterov momentum 0.9, "
                      "or momentum: SGD with (heavy-ball) momentum 0.9.",  # recipes:
                      flag_values=flag_values)
    flags.DEFINE_float("learning_rate", 1e-3, "Learning rate.", flag_values=flag_values)
    define_recipe_flags(flag_values)  # recipes:
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy loss.",
                       flag_values=flag_values)
    flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy.",
                      flag_values=flag_values)
    flags.DEFINE_string("tpu", None, "TPU name or address, with --strategy=tpu.",
                        flag_values=flag_values)
    flags.DEFINE_string("shard", "0/1", "i/n: train only the i-th of n slices of the population.",
                        flag_values=flag_values)
    flags.DEFINE_integer("eval_batch_size", 256, "Batch size of the final evaluation.",
                         flag_values=flag_values)
    flags.DEFINE_bool("share_graphs", True,
                      "Members of one method train one after another on one built, "
                      "compiled and traced model (a pruned member's target sparsity is a "
                      "variable of its schedule), set to each member's own "
                      "seed-initial state first: the weights of training each member alone, "
                      "without rebuilding and retracing per member (pie.compress.population). "
                      "--noshare_graphs builds every member afresh. Members with a parent "
                      "network (--protocol=from_dense, --init_from), models with dropout and "
                      "strategies other than 'default' always build afresh.",
                      flag_values=flag_values)
    flags.DEFINE_integer("workers", 1,
                         "Processes training the population in parallel on this machine, "
                         "each a slice of the members (member i to worker i mod N) with its "
                         "share of the CPU cores (--threads); 0: automatic, one per CPU core "
                         "on a machine without GPUs with --strategy=default, else 1. Every "
                         "member trains as it would alone (pie.compress.workers).",
                         flag_values=flag_values)
    flags.DEFINE_string("seed_slice", "0/1", "k/N: train the members whose seed is k mod N "
                        "(a member and its parent network share a seed), then those of "
                        "other slices that no process has started and that need no other "
                        "member (set by --workers for each worker).", flag_values=flag_values)
    flags.DEFINE_integer("threads", 0, "TensorFlow CPU threads of this process (0: "
                         "TensorFlow's default, every core). Set by --workers for each "
                         "worker.", flag_values=flag_values)


def define_recipe_flags(flag_values):  # recipes: schedules, weight decay, precision
    flags.DEFINE_enum("lr_schedule", "constant", schedules.SCHEDULES,
                      "Learning-rate schedule, evaluated at every step: constant, step "
                      "(x --lr_decay_factor after each of --lr_decay_epochs), cosine or "
                      "polynomial (power 2) decay to 0 at the end of training "
                      "(pie.compress.schedules).", flag_values=flag_values)
    flags.DEFINE_float("warmup_epochs", 0.0, "Epochs of linear warm-up from 0 to the "
                       "learning rate (any schedule).", flag_values=flag_values)
    flags.DEFINE_string("lr_decay_epochs", "", "--lr_schedule=step: comma-separated, "
                        "increasing epochs after which the rate is multiplied by "
                        "--lr_decay_factor (30,60,80: from the 31st, 61st, 81st epoch).",
                        flag_values=flag_values)
    flags.DEFINE_float("lr_decay_factor", 0.1, "--lr_schedule=step: factor of each decay "
                       "step, in (0, 1].", flag_values=flag_values)
    flags.DEFINE_float("weight_decay", 0.0, "Weight decay of the Conv and Dense kernels "
                       "(never batch-norm gamma/beta or biases); 0: none.",
                       flag_values=flag_values)
    flags.DEFINE_enum("weight_decay_mode", "l2", schedules.WEIGHT_DECAY_MODES,
                      "l2: the gradient of the loss term weight_decay/2 x |kernel|^2 (the "
                      "study's form, through momentum); decoupled: w -= lr x weight_decay x "
                      "w each step (SGDW/AdamW).", flag_values=flag_values)
    flags.DEFINE_bool("lr_per_256", False, "--learning_rate is per 256 images: the rate "
                      "used is learning_rate x batch_size / 256.", flag_values=flag_values)
    flags.DEFINE_enum("precision", "float32", precision.PRECISIONS,
                      "float32, or Keras mixed precision (16-bit compute, float32 weights "
                      "and logits; float16 with loss scaling). Members are saved in "
                      "float32.", flag_values=flag_values)
    flags.DEFINE_bool("jit_compile", False, "Compile the training step with XLA.",
                      flag_values=flag_values)


def recipe_from_flags():  # recipes:
    return schedules.validate(FLAGS.lr_schedule, FLAGS.warmup_epochs, FLAGS.lr_decay_epochs,
                              FLAGS.lr_decay_factor, FLAGS.weight_decay,
                              FLAGS.weight_decay_mode, FLAGS.lr_per_256)


def parse_shard(text):
    parts = text.split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        raise cli.UsageError(f"--shard must be i/n with integers 0 <= i < n, got '{text}'")
    if count < 1 or not 0 <= index < count:
        raise cli.UsageError(f"--shard must be i/n with integers 0 <= i < n, got '{text}'")
    return index, count


class Trainer:
    """Trains members one by one with one recipe; keeps the population's timing."""

    def __init__(self, source, strategy, steps_per_epoch, members_total, parents=None,
                 share_graphs=False):
        self.source = source
        self.parents = parents or {}  # member_id -> lineage.Parent (or None: fresh start)
        self.strategy = strategy
        self.steps_per_epoch = steps_per_epoch
        self.epochs_done = 0
        self.progress = Progress(members_total, "population epochs")
        self.eval_cache = training.EvalCache(source, FLAGS.eval_batch_size)
        self.shared = None
        if share_graphs and FLAGS.strategy == "default":
            self.shared = population.SharedModels(
                lambda member: self._build_member(member, retargetable=True), self._initial,
                self._plain_view)

    def _schedule(self, target, retargetable=False):
        total = self.steps_per_epoch * FLAGS.epochs
        begin, end, frequency = pruning.auto_schedule_steps(total)
        begin = begin if FLAGS.begin_step < 0 else FLAGS.begin_step
        end = end if FLAGS.end_step < 0 else FLAGS.end_step
        frequency = frequency if FLAGS.frequency < 0 else FLAGS.frequency
        if FLAGS.begin_step >= 0 and FLAGS.end_step < 0:
            end = begin + max(1, (total * 6 // 10 - begin) // frequency) * frequency
        return pruning.make_schedule(
            FLAGS.schedule, target, begin_step=begin, end_step=end, frequency=frequency,
            power=FLAGS.power, initial_sparsity=FLAGS.initial_sparsity, total_steps=total,
            retargetable=retargetable)

    def check_settings(self, sparsities):
        """Builds every schedule once so bad pruning flags fail before any training."""
        if FLAGS.method not in SCHEDULED_METHODS or lineage.has_parents(FLAGS.protocol,
                                                                          FLAGS.init_from):
            return
        for target in sparsities:
            if target > 0:
                self._schedule(target)

    def parent(self, member):
        return self.parents.get(member.member_id)

    def prunes_once(self, member):
        """Pruned once from a finished network (then fine-tuned), not during training."""
        return member.sparsity > 0 and (member.method in ONE_SHOT_METHODS
                                        or self.parent(member) is not None)

    def wrapped(self, member):
        """Carries tfmot's pruning wrappers (magnitude pruning during training)."""
        return member.method == "magnitude" and not self.prunes_once(member)

    def pretrain_epochs(self, member):
        """Epochs before the member is pruned once (0: its parent is already trained)."""
        if member.sparsity > 0 and self.parent(member) is not None:
            return 0
        return FLAGS.epochs

    def parent_file(self, workdir, parent):
        """The model file of a parent: a finished member of this workdir, or --init_from."""
        if parent.path:
            return parent.path
        manifest = records.read_manifest(workdir, required=False)
        rows = manifest[manifest["member_id"] == parent.member_id]
        if rows.empty:
            raise records.ContractError(
                f"parent member {parent.member_id} is not in {workdir.manifest}: train it "
                "first (parents train before their children in one run; with --shard, run "
                "the parent's shard first)")
        return workdir.model_path(rows.iloc[0])

    def _initial(self, member, workdir=None):
        """The plain network the member starts from: its parent network, or a fresh
        build whose weights are a function of its seed."""
        import tf_keras as keras
        keras.utils.set_random_seed(member.seed)
        parent = self.parent(member)
        if parent is not None:
            return loading.load_keras(self.parent_file(workdir, parent))
        return builders.build(FLAGS.model, self.source.input_shape,
                              self.source.num_classes, width=FLAGS.width)

    @staticmethod
    def _plain_view(model):
        """The plain network on `model`'s own layers (no pruning wrappers)."""
        return pruning.strip(model) if pruning.is_wrapped(model) else model

    def _build_member(self, member, workdir=None, retargetable=False):
        """A fresh compiled model of the member and its built optimizer (`retargetable`:
        its pruning schedule's target is a variable, see pruning.make_schedule)."""
        with self.strategy.scope():
            model, optimizer = self._build(member, workdir, retargetable)
            optimizer.build(model.trainable_variables)
        return model, optimizer

    def independent(self, member):
        """Trains from its own seed alone, and no other member starts from it: no
        parent network, not pruned once from its seed's dense member, and not the
        dense member such a member would reuse (so any worker may train it, in any
        order, and the population's lineage does not depend on which)."""
        if member.method == "dense" and FLAGS.method in ONE_SHOT_METHODS:
            return False
        return self.parent(member) is None and member.method not in ONE_SHOT_METHODS

    def shares(self, member):
        """Whether the member trains on a shared model (population.SharedModels)."""
        return self.shared is not None and self.parent(member) is None

    def variant(self, member):
        """Members of one variant train on one shared model: the same method and graph.
        The target sparsity is not part of it: a pruned member's is a variable of its
        schedule, set for each member."""
        # With an initial sparsity, tfmot's schedule rounds (initial - target) once
        # from float64, the variable's float32 subtraction may differ by one ulp:
        # such members keep a graph per target sparsity.
        target = member.sparsity if self.wrapped(member) and FLAGS.initial_sparsity else None
        return (member.method, self.wrapped(member), self.steps_per_execution(member), target)

    def _model_for(self, member, workdir):
        """(model, optimizer, shared): a shared model set to the member's initial state
        (shared is its SharedModel), or a model of its own (shared is None)."""
        if self.shares(member):
            shared = self.shared.get(self.variant(member), member)
            if shared is not None:
                if self.wrapped(member):
                    pruning.retarget(shared.model, member.sparsity)
                return shared.model, shared.optimizer, shared
        model, optimizer = self._build_member(member, workdir)
        return model, optimizer, None

    def _build(self, member, workdir=None, retargetable=False):
        import tf_keras as keras
        model = self._initial(member, workdir)
        if self.wrapped(member):
            model = pruning.wrap_for_pruning(
                model, self._schedule(member.sparsity, retargetable), FLAGS.prune_classifier)
        optimizer = schedules.build_optimizer(  # recipes:
            FLAGS.optimizer, FLAGS.learning_rate, recipe_from_flags(),
            steps_per_epoch=self.steps_per_epoch, epochs=self.epochs(member),
            batch_size=FLAGS.batch_size, loss_scale=precision.needs_loss_scale(FLAGS.precision))
        # Per-example losses: Keras reduces them over the global batch, which is
        # what tf.distribute strategies need.
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=FLAGS.label_smoothing,
            reduction=keras.losses.Reduction.NONE)

        def sparse_loss(labels, logits):
            import tensorflow as tf
            onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32),
                                self.source.num_classes)
            return loss(onehot, logits)
        model.compile(optimizer=optimizer, loss=sparse_loss,
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
                      steps_per_execution=self.steps_per_execution(member),
                      **precision.compile_options(FLAGS.jit_compile))  # recipes:
        return model, optimizer

    def steps_per_execution(self, member):
        """Training steps per call of the traced train function: a whole epoch (or
        --steps_per_execution) for members whose training is all in the graph (dense;
        magnitude, whose wrappers count their own pruning step), so Python runs once
        an epoch instead of once a batch; 1 for members held by per-batch callbacks
        (wt's global threshold, the masks of members pruned once) and for other
        strategies."""
        if (member.method in ("dense", "magnitude") and not self.prunes_once(member)
                and FLAGS.strategy == "default"):
            return min(FLAGS.steps_per_execution or self.steps_per_epoch, self.steps_per_epoch)
        return 1

    def epochs(self, member):
        """Training epochs of a member: members pruned once add their fine-tuning."""
        return self.pretrain_epochs(member) + (FLAGS.finetune_epochs
                                               if self.prunes_once(member) else 0)

    def train(self, member, workdir, label):
        """Trains `member` (`label`: its place in this run's list, as printed)."""
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras
        ckpt_dir = workdir.member_file(member.relpath, "checkpoint")
        weight_mask = member.method not in CRITERIA_METHODS
        mask_path = workdir.member_file(member.relpath,
                                        "weight_mask" if weight_mask else "unit_mask")
        pretrain = self.pretrain_epochs(member)
        parent = self.parent(member)
        parent_id = parent.member_id if parent is not None else None
        started = time.time()
        model, optimizer, shared = self._model_for(member, workdir)
        epoch, manager = self._checkpoint(member, model, optimizer, workdir, label)
        if manager.latest_checkpoint:
            pass  # resumed
        elif parent is not None:
            print(f"[{label}] {member.member_id}: starting from "
                  f"{parent_id or parent.path}", flush=True)
        elif member.method in ONE_SHOT_METHODS:
            parent_id = self._reuse_dense(workdir, member, model)
            if parent_id:
                # Same seed, same recipe: the dense member is the network this one prunes.
                epoch.assign(FLAGS.epochs)
                self.progress.done += FLAGS.epochs
                print(f"[{label}] {member.member_id}: starting from the finished "
                      f"dense member of seed {member.seed}", flush=True)
        log_dir = workdir.member_file(member.relpath, "logs")
        callbacks = [EpochProgress(self, member, label)]
        callbacks.append(history.HistoryCSV(  # recipes:
            workdir.member_file(member.relpath, "history"), FLAGS.prune_classifier))
        if self.wrapped(member):
            callbacks += [tfmot.sparsity.keras.UpdatePruningStep(),
                          tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir)]
        else:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, profile_batch=0))
        if member.method == "wt" and not self.prunes_once(member):
            callbacks.append(pruning.GlobalMagnitudePruning(
                self._schedule(member.sparsity),
                pruning.prunable_layer_names(model, FLAGS.prune_classifier)))
        mask = None
        if os.path.exists(mask_path) and int(epoch.numpy()) >= pretrain:
            mask = training.load_mask(mask_path)
        current, end = int(epoch.numpy()), self.epochs(member)
        # One `fit` per run of epochs with the same callbacks (a member pruned once
        # changes them at `pretrain`), each epoch checkpointed at its end: Keras's
        # per-call set-up (callbacks, TensorBoard writers, data adapter) costs about a
        # quarter of a small member's epoch.
        while current < end:
            if self.prunes_once(member) and current == pretrain and mask is None:
                mask = self._prune_once(member, model)
                training.write_mask(mask_path, mask)
            stop = pretrain if self.prunes_once(member) and current < pretrain else end
            extra = []
            if mask is not None:
                extra = [pruning.WeightMaskCallback(mask) if weight_mask
                         else criteria.UnitMaskCallback(mask)]
            model.fit(self._epochs_of_batches(member, current, stop), epochs=stop,
                      initial_epoch=current, verbose=0, steps_per_epoch=self.steps_per_epoch,
                      callbacks=callbacks + extra + [SaveEachEpoch(epoch, manager)])
            current = stop
        if self.prunes_once(member) and mask is None:  # no fine-tuning epochs
            mask = self._prune_once(member, model)
        unit_mask = mask if member.method in CRITERIA_METHODS else None
        return self._finish(member, model, workdir, started, ckpt_dir, unit_mask,
                            parent_id, parent.path if parent is not None else None, shared)

    def _checkpoint(self, member, model, optimizer, workdir, label):
        """(epoch variable, CheckpointManager) of the member, restored from its last
        epoch checkpoint when it has one."""
        import tensorflow as tf
        ckpt_dir = workdir.member_file(member.relpath, "checkpoint")
        with self.strategy.scope():
            epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
        manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=1)
        if manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).expect_partial()
            print(f"[{label}] {member.member_id}: resuming after epoch "
                  f"{int(epoch.numpy())}", flush=True)
            self.progress.done += int(epoch.numpy())
        return epoch, manager

    def _epochs_of_batches(self, member, first, stop):
        """The member's batches of epochs first .. stop-1, one after another, each
        epoch exactly `steps_per_epoch` batches in its own (seed, epoch) order (one
        dataset for one `fit` over these epochs: the same batches as one `fit` per
        epoch)."""
        return self.source.train_epochs(FLAGS.batch_size, member.seed, range(first, stop),
                                        steps_per_epoch=self.steps_per_epoch,
                                        augment=FLAGS.augment)

    def _reuse_dense(self, workdir, member, model):
        """Loads the finished dense member of the same seed, if this workdir has it; its
        member id (None when there is none)."""
        manifest = records.read_manifest(workdir, required=False)
        dense = manifest[(manifest["method"] == "dense") & (manifest["seed"] == member.seed)
                         & (manifest["model"] == model_name())]
        if dense.empty:
            return None
        path = workdir.model_path(dense.iloc[0])
        saved = loading.load_keras(path)
        if [w.shape for w in saved.get_weights()] != [w.shape for w in model.get_weights()]:
            return None
        model.set_weights(saved.get_weights())
        return dense.iloc[0]["member_id"]

    def _prune_once(self, member, model):
        x, y = training.reference_samples(self.source, FLAGS.reference_samples_per_class,
                                          member.seed)
        if member.method not in CRITERIA_METHODS:
            names = pruning.prunable_layer_names(model, FLAGS.prune_classifier)
            if member.method == "magnitude":  # each layer to the target, by |w|
                mask = {name: pruning.global_keep_masks(
                    {name: model.get_layer(name).kernel.numpy()}, member.sparsity)[name]
                    for name in names}
                pruning.apply_weight_masks(model, mask)
            else:
                mask = training.prune_weights(model, member.method, member.sparsity, names, x)
            removed = 1.0 - (sum(int(m.sum()) for m in mask.values())
                             / sum(m.size for m in mask.values()))
            print(f"{member.member_id}: {member.method} removed {removed:.4f} of the weights "
                  f"(scored on {len(y)} reference images)", flush=True)
            return mask
        mask = criteria.prune_units(model, member.method, member.sparsity, x, y,
                                    seed=member.seed)
        removed = criteria.mask_summary(mask)["overall"]
        print(f"{member.member_id}: {member.method} removed {removed:.4f} of the units "
              f"(scored on {len(y)} reference images)", flush=True)
        return mask

    def _finish(self, member, model, workdir, started, ckpt_dir, unit_mask=None,
                parent_id=None, parent_file=None, shared=None):
        if shared is not None:
            stripped = shared.plain
        else:
            stripped = pruning.strip(model) if self.wrapped(member) else model
        layer_names = pruning.prunable_layer_names(stripped, FLAGS.prune_classifier)
        per_layer, overall = pruning.kernel_sparsity(stripped, layer_names)
        unit_sparsity = {}
        if member.method == "magnitude":
            pruning.check_sparsity(per_layer, member.sparsity)
        elif member.method in GLOBAL_WEIGHT_METHODS:
            pruning.check_overall_sparsity(overall, member.sparsity)
        elif unit_mask is not None:
            unit_sparsity = criteria.mask_summary(unit_mask)
            training.check_unit_sparsity(unit_mask, member.sparsity)
        top1 = training.evaluate_top1(stripped, self.source, FLAGS.eval_batch_size,
                                      predict=shared.predict if shared else None,
                                      batches=self.eval_cache.batches())
        model_file = workdir.member_relfile(member.relpath, "keras_model")
        with records.atomic_path(workdir.path(model_file)) as tmp:
            precision.float32_model(  # recipes: members are saved in float32
                shared.export() if shared else training.uncompiled(stripped)).save(tmp)
        row = {"member_id": member.member_id, "method": member.method,
               "sparsity": member.sparsity, "measured_sparsity": round(overall, 6),
               "seed": member.seed, "dataset": FLAGS.dataset, "model": model_name(),
               "top1": round(top1, 6), "path": member.relpath, "model_file": model_file,
               "parent_id": parent_id or ""}
        if unit_mask is not None:
            row["measured_unit_sparsity"] = round(unit_sparsity["overall"], 6)
        meta = dict(row, target_sparsity=member.sparsity,
                    measured_sparsity_per_layer=per_layer,
                    measured_unit_sparsity_per_layer=unit_sparsity,
                    steps=self.steps_per_epoch * self.epochs(member), epochs=self.epochs(member),
                    steps_per_call=self.steps_per_execution(member),
                    augment=FLAGS.augment,
                    wall_time_s=round(time.time() - started, 2),
                    protocol=FLAGS.protocol, prune_schedule=FLAGS.prune_schedule,
                    **recipe_from_flags().settings(), precision=FLAGS.precision,  # recipes:
                    jit_compile=FLAGS.jit_compile,  # recipes:
                    parent_file=parent_file,
                    versions=training.package_versions(),
                    manifest_row=row)
        records.write_text(workdir.member_file(member.relpath, "flags"), cli.resolved_flags())
        records.write_json(workdir.member_file(member.relpath, "meta"), meta)
        records.add_manifest_rows(workdir, [row])
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return row


def _keras_callback_base():
    import tf_keras as keras
    return keras.callbacks.Callback


class EpochProgress(_keras_callback_base()):
    """One line per epoch, with the population's ETA."""

    def __init__(self, trainer, member, label):
        super().__init__()
        self.trainer, self.member = trainer, member
        self.label = label
        self.epoch_start = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.trainer.progress.advance(
            1, f"[{self.label}] {self.member.member_id} epoch "
               f"{epoch + 1}/{self.trainer.epochs(self.member)} "
               f"loss {logs.get('loss', float('nan')):.4f} "
               f"acc {logs.get('acc', float('nan')):.4f} "
               f"({time.time() - self.epoch_start:.1f}s)")


class SaveEachEpoch(_keras_callback_base()):
    """Checkpoints the member at the end of each epoch (after every other callback):
    a killed run resumes from the last finished epoch."""

    def __init__(self, epoch, manager):
        super().__init__()
        self.epoch, self.manager = epoch, manager

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        self.manager.save()


def finished_row(workdir, member, manifest_ids):
    """The member's manifest row if it finished (recovering a row lost to a crash)."""
    if member.member_id in manifest_ids:
        return True
    meta_path = workdir.member_file(member.relpath, "meta")
    model_path = workdir.member_file(member.relpath, "keras_model")
    if os.path.exists(meta_path) and os.path.exists(model_path):
        # Killed between saving the model and adding its row: add the row now.
        records.add_manifest_rows(workdir, [records.read_json(meta_path)["manifest_row"]])
        return True
    return False


def validate_flags():
    if not FLAGS.workdir:
        raise cli.UsageError("--workdir is required")
    sparsities = cli.parse_floats(FLAGS.sparsities, "sparsities")
    for value in sparsities:
        pruning.validate_sparsity(value)
    # Members are named at 6 significant digits (dense_0, magnitude_0.5): two values
    # that name the same member are one; -0.0 is 0.
    sparsities = [records.key_sparsity(value) for value in sparsities]
    if len(set(sparsities)) != len(sparsities):
        raise cli.UsageError(f"--sparsities has duplicates at the precision of member names "
                             f"(6 significant digits): '{FLAGS.sparsities}'")
    if FLAGS.seeds < 1:
        raise cli.UsageError(f"--seeds must be at least 1, got {FLAGS.seeds}")
    for name in ("batch_size", "eval_batch_size"):
        if FLAGS[name].value < 1:
            raise cli.UsageError(f"--{name} must be at least 1, got {FLAGS[name].value}")
    if FLAGS.init_from and not FLAGS["epochs"].present:
        FLAGS.epochs = 0  # the dense members are the given model: evaluated, not retrained
    if FLAGS.epochs < (0 if FLAGS.init_from else 1):
        raise cli.UsageError(f"--epochs must be at least 1 (0 only with --init_from), got "
                             f"{FLAGS.epochs}")
    if FLAGS.reference_samples_per_class < 1:
        raise cli.UsageError("--reference_samples_per_class must be at least 1, got "
                             f"{FLAGS.reference_samples_per_class}")
    if FLAGS.steps_per_execution < 0:
        raise cli.UsageError(f"--steps_per_execution must be at least 0 (0: automatic), got "
                             f"{FLAGS.steps_per_execution}")
    if FLAGS.workers < 0:
        raise cli.UsageError(f"--workers must be at least 0 (0: automatic), got "
                             f"{FLAGS.workers}")
    if FLAGS.workers > 1 and FLAGS.strategy != "default":
        raise cli.UsageError(f"--workers={FLAGS.workers} needs --strategy=default: a "
                             f"{FLAGS.strategy} strategy spreads one member over devices")
    if FLAGS.threads < 0:
        raise cli.UsageError(f"--threads must be at least 0 (0: TensorFlow's default), got "
                             f"{FLAGS.threads}")
    if FLAGS.finetune_epochs < 0:
        raise cli.UsageError(f"--finetune_epochs must be non-negative, got {FLAGS.finetune_epochs}")
    if FLAGS.method not in METHODS:
        raise cli.UsageError(f"unknown --method '{FLAGS.method}'; allowed: {', '.join(METHODS)}")
    lineage.validate(FLAGS.protocol, FLAGS.prune_schedule, sparsities, FLAGS.init_from)
    shard = parse_shard(FLAGS.shard)
    seed_slice = worker_processes.parse_slice(FLAGS.seed_slice)
    for seed in range(FLAGS.seeds) if FLAGS.init_from else ():
        loading.check_keras(lineage.init_path(FLAGS.init_from, seed))
    sources.validate_name(FLAGS.dataset)
    builders.validate_name(FLAGS.model)
    recipe_from_flags()  # recipes: bad schedule or weight decay flags fail here
    training.check_writable(FLAGS.workdir)
    return sparsities, shard, seed_slice


CRITERIA_METHODS = tuple(criteria.CRITERIA)
# Weight pruning with one global budget: wt during training, sipp from the dense member.
# (training.prune_weights also prunes wt once from a parent network, and magnitude is
# pruned once layer by layer from a parent: pie.compress.lineage.)
GLOBAL_WEIGHT_METHODS = tuple(training.WEIGHT_SCORES)
SCHEDULED_METHODS = ("magnitude", "wt")
WEIGHT_ONE_SHOT = ("sipp",)
ONE_SHOT_METHODS = WEIGHT_ONE_SHOT + CRITERIA_METHODS
METHODS = SCHEDULED_METHODS + WEIGHT_ONE_SHOT + CRITERIA_METHODS
def model_name():
    """The manifest's `model`: the --model architecture, or `init-<file>` (--init_from)."""
    if FLAGS.init_from:
        return imported.model_label("init", FLAGS.init_from)
    return FLAGS.model


def check_init_models(source):
    """Each seed's --init_from model fits the dataset (one error line otherwise), and a
    warning when it scores at chance on a few eval images (wrong preprocessing)."""
    if not FLAGS.init_from:
        return
    inputs, labels = imported.few_eval_images(source)
    for path in dict.fromkeys(lineage.init_path(FLAGS.init_from, seed)
                              for seed in range(FLAGS.seeds)):
        model = imported.load_keras(path)
        input_shape, n_outputs = imported.keras_signature(model, path)
        imported.check_shapes(path, input_shape, n_outputs, source)
        imported.warn_if_chance(path, model(inputs, training=False).numpy(), labels, source)


def main(argv):
    del argv
    sparsities, shard, seed_slice = validate_flags()
    order = lineage.training_order(sparsities, FLAGS.protocol, FLAGS.init_from)
    members = training.plan(order, FLAGS.seeds, FLAGS.method, shard, seed_slice)
    workdir = Workdir(FLAGS.workdir)
    manifest_ids = set(records.read_manifest(workdir, required=False)["member_id"])
    todo = [m for m in members if not finished_row(workdir, m, manifest_ids)]
    workers = worker_processes.resolve(FLAGS.workers, len({m.seed for m in todo}),
                                       FLAGS.strategy)
    if workers > 1:  # this process is worker 0: its threads are set before any op
        training.set_threads(worker_processes.threads_each(workers), required=False)
    else:
        worker_processes.discard_early()
        training.set_threads(FLAGS.threads)
    precision.set_policy(FLAGS.precision)  # recipes: before any model is built
    strategy = training.make_strategy(FLAGS.strategy, FLAGS.tpu)
    source = sources.load(FLAGS.dataset, data_dir=FLAGS.data_dir,
                          label_attribute=FLAGS.label_attribute, toy_noise=FLAGS.toy_noise,
                          toy_seed=FLAGS.toy_seed, label_offset=FLAGS.label_offset,
                          cache_dir=FLAGS.workdir)
    # Saved resolved, so flags.txt says which views the members were trained on.
    FLAGS.augment = source.resolve_augment(FLAGS.augment)
    if FLAGS.steps_per_epoch:
        steps_per_epoch = FLAGS.steps_per_epoch
    elif source.train_size:
        steps_per_epoch = math.ceil(source.train_size / FLAGS.batch_size)
    else:
        raise sources.DataError(f"'{FLAGS.dataset}' has no training images")
    check_init_models(source)
    parents = lineage.parents(sparsities, FLAGS.seeds, FLAGS.method, FLAGS.protocol,
                              FLAGS.prune_schedule, FLAGS.init_from)
    trainer = Trainer(source, strategy, steps_per_epoch, len(members), parents,
                      FLAGS.share_graphs)
    trainer.check_settings(sparsities)

    import tensorflow as tf
    if not FLAGS.jit_compile:  # recipes: XLA has no deterministic max-pool gradient
        tf.config.experimental.enable_op_determinism()
    chief = training.is_chief(strategy)
    if not chief:  # other workers of a multi-worker job write to a scratch folder
        workdir = Workdir(workdir.worker_scratch(strategy.cluster_resolver.task_id))
    os.makedirs(workdir, exist_ok=True)
    sources.save_config(workdir, source, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
                        label_attribute=FLAGS.label_attribute, toy_noise=FLAGS.toy_noise,
                        toy_seed=FLAGS.toy_seed, label_offset=FLAGS.label_offset)
    print(f"population: {len(members)} members in shard {FLAGS.shard}"
          f"{'' if seed_slice == (0, 1) else ', seeds ' + FLAGS.seed_slice}, "
          f"{len(members) - len(todo)} already finished, {len(todo)} to train", flush=True)
    first, count = seed_slice
    with contextlib.ExitStack() as stack:
        wait = list
        if workers > 1:
            print(f"population: training in {workers} worker processes (this one and "
                  f"{workers - 1} more) of {worker_processes.threads_each(workers)} CPU "
                  f"threads each; the members of seed k in worker k mod {workers}", flush=True)
            (first, count), wait = stack.enter_context(worker_processes.others(
                "save_checkpoint.train", worker_args(), workers, seed_slice))
            todo = [m for m in todo if m.seed % count == first]
        train_members(trainer, workdir, todo)
        if count > 1:
            # Workers start and run at different speeds: one that is done helps the
            # others with members nobody has started.
            others = [m for m in training.plan(order, FLAGS.seeds, FLAGS.method, shard)
                      if m.seed % count != first and trainer.independent(m)]
            train_members(trainer, workdir, others[::-1], spare=True)
        failed = [code for code in wait() if code]
    if failed:
        print(f"error: {len(failed)} of {workers - 1} other training workers failed (their "
              "messages are above); rerun to continue", file=sys.stderr)
        return failed[0]
    if not chief:
        # A non-chief worker's copies (checkpoints the job needed, a model equal to
        # the chief's) are not the population's: only the chief's files stay.
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(workdir))
        except OSError:
            pass  # other workers' scratch folders are still there
        print(f"worker {strategy.cluster_resolver.task_id}: done; the chief wrote the "
              f"population", flush=True)
        return 0
    print(f"manifest: {workdir.manifest}", flush=True)
    return 0


def train_members(trainer, workdir, todo, spare=False):
    """Trains the members of `todo` one by one (those another run finished meanwhile
    are skipped), printing each one's result. `spare`: members of other workers,
    each taken only if no process holds its lock (is training it) and it is not
    finished."""
    if not spare:
        trainer.progress.total = sum(trainer.epochs(m) for m in todo)
    for position, member in enumerate(todo, 1):
        label = f"{position}/{len(todo)}"
        # Two identical runs take turns per member: the second waits for the lock,
        # then finds the member finished and skips it.
        with records.locked(workdir.member_file(member.relpath, "train_lock"),
                            wait=not spare) as held:
            if not held:
                continue
            manifest_ids = set(records.read_manifest(workdir, required=False)["member_id"])
            if finished_row(workdir, member, manifest_ids):
                if not spare:
                    print(f"[{label}] {member.member_id}: finished by another run or "
                          "worker, skipping", flush=True)
                    trainer.progress.total -= trainer.epochs(member)  # not ours to count
                continue
            if spare:
                print(f"[+] {member.member_id}: another worker's, not started yet: "
                      "training it here", flush=True)
                trainer.progress.total += trainer.epochs(member)
                label = "+"
            row = trainer.train(member, workdir, label)
        print(f"[{label}] {member.member_id} done: top-1 {row['top1']:.4f}, "
              f"measured sparsity {row['measured_sparsity']:.4f}", flush=True)


# Set for each worker process by --workers, never passed on.
WORKER_FLAGS = ("workers", "threads", "seed_slice")


def worker_args():
    """This run's flags, as `--name=value` arguments for a worker process."""
    # None of WORKER_FLAGS is boolean: a line's name is what stands before "=".
    return [line for line in cli.resolved_flags().splitlines()
            if line and line[2:].split("=", 1)[0] not in WORKER_FLAGS]


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    worker_processes.await_gate()
    cli.run(main)

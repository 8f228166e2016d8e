"""The training stage's work: a population trained member by member from one TrainConfig.

`train_population(config, worker_module)` is the whole stage (save_checkpoint.train
only parses its flags into a config and calls it). `Trainer` trains one member at a
time: its start (a fresh build for its seed, a parent network, or the finished dense
member it prunes), the compression method's wrappers, callbacks and one-shot mask
(pie.compress.methods), epoch checkpoints and resume, evaluation, and its files and
manifest row. The optimizer (the recipe's, pie.compress.schedules) and the loss are built
in `_compile`, one place.
"""
import contextlib
import math
import os
import shutil
import sys
import time

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.compress import history, lineage, methods, population, precision, pruning, schedules
from pie.compress import recipes, training
from pie.compress import workers as worker_processes
from pie.data import sources
from pie.io import records
from pie.io.progress import Progress
from pie.io.workdir import Workdir
from pie.models import builders, imported, loading, predict


class Trainer:
    """Trains members one by one with one recipe (`config`); keeps the population's timing."""

    def __init__(self, config, source, strategy, steps_per_epoch, members_total, parents=None,
                 planned_recipes=None):
        self.config = config
        # {population key: (digest, settings)}: this run's recipes (recipes.check_run).
        self.planned_recipes = dict(planned_recipes or {})
        self.source = source
        self.parents = parents or {}  # member_id -> lineage.Parent (or None: fresh start)
        self.strategy = strategy
        self.steps_per_epoch = steps_per_epoch
        self.progress = Progress(members_total, "population epochs")
        self.eval_cache = training.EvalCache(source, config.eval_batch_size)
        self.shared = None
        if config.share_graphs and config.strategy == "default":
            self.shared = population.SharedModels(
                lambda member: self._build_member(member, retargetable=True), self._initial,
                self._plain_view)

    # ------------------------------------------------------------ what a member is
    def method(self, member):
        return methods.get(member.method)

    def parent(self, member):
        return self.parents.get(member.member_id)

    def recipe(self, member):
        """(digest, settings) of the member's recipe (pie.compress.recipes)."""
        key = records.variant_key(member.method, member.sparsity)
        if key not in self.planned_recipes:
            self.planned_recipes.update(recipes.plan(self.config, [member]))
        return self.planned_recipes[key]

    def recipe_meta(self, member):
        """meta.json's record of the member's recipe and execution settings."""
        meta = {"recipe_settings": self.recipe(member)[1],
                "execution": recipes.execution_settings(self.config)}
        if self.config.init_from:
            meta["init_from_sha256"] = records.file_sha256(
                lineage.init_path(self.config.init_from, member.seed))
        return meta

    def prunes_once(self, member):
        """Pruned once from a finished network (then fine-tuned), not during training."""
        return self.method(member).prunes_once(member.sparsity, self.parent(member) is not None)

    def wrapped(self, member):
        """Carries wrappers while training (magnitude pruning: tfmot's)."""
        return self.method(member).wraps(member.sparsity, self.parent(member) is not None)

    def pretrain_epochs(self, member):
        """Epochs before the member is pruned once (0: its parent is already trained)."""
        if member.sparsity > 0 and self.parent(member) is not None:
            return 0
        return self.config.epochs

    def epochs(self, member):
        """Training epochs of a member: members pruned once add their fine-tuning."""
        if self.method(member).trains_members:
            return self.method(member).member_epochs(self.config)
        return self.pretrain_epochs(member) + (self.config.finetune_epochs
                                               if self.prunes_once(member) else 0)

    def independent(self, member):
        """Trains from its own seed alone, and no other member starts from it: no
        parent network, not pruned once from its seed's dense member, and not the
        dense member such a member would reuse (so any worker may train it, in any
        order, and the population's lineage does not depend on which)."""
        once = self.config.method_object.when == methods.ONCE
        if member.method == methods.DENSE and once:
            return False
        return self.parent(member) is None and self.method(member).when != methods.ONCE

    def steps_per_execution(self, member):
        """Training steps per call of the traced train function: a whole epoch (or
        --steps_per_execution) for members whose training is all in the graph (dense;
        magnitude, whose wrappers count their own pruning step), so Python runs once
        an epoch instead of once a batch; 1 for members held by per-batch callbacks
        (wt's global threshold, the masks of members pruned once) and for other
        strategies."""
        if (self.method(member).in_graph and not self.prunes_once(member)
                and self.config.strategy == "default"):
            return min(self.config.steps_per_execution or self.steps_per_epoch,
                       self.steps_per_epoch)
        return 1

    # ------------------------------------------------------------ schedules, models
    def _schedule(self, target, retargetable=False):
        config = self.config
        total = self.steps_per_epoch * config.epochs
        # The derived schedule's line only when it is the one used: explicit steps
        # (e.g. --smoke's compressed ones) would be contradicted by it.
        derived = config.begin_step < 0 and config.end_step < 0 and config.frequency < 0
        begin, end, frequency = pruning.auto_schedule_steps(total, log=derived)
        begin = begin if config.begin_step < 0 else config.begin_step
        end = end if config.end_step < 0 else config.end_step
        frequency = frequency if config.frequency < 0 else config.frequency
        if config.begin_step >= 0 and config.end_step < 0:
            end = begin + max(1, (total * 6 // 10 - begin) // frequency) * frequency
        return pruning.make_schedule(
            config.schedule, target, begin_step=begin, end_step=end, frequency=frequency,
            power=config.power, initial_sparsity=config.initial_sparsity, total_steps=total,
            retargetable=retargetable)

    def check_settings(self, sparsities):
        """Builds every schedule once so bad pruning flags fail before any training."""
        if (self.config.method_object.when != methods.DURING_TRAINING
                or lineage.has_parents(self.config.protocol, self.config.init_from)):
            return
        for target in sparsities:
            if target > 0:
                self._schedule(target)

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
        # Auto-generated layer names count up per process: reset, so every member's
        # model file names its layers alike however many were built before it (a
        # resumed run saves the same model as an uninterrupted one).
        keras.backend.reset_uids()
        parent = self.parent(member)
        if parent is not None:
            return loading.load_keras(self.parent_file(workdir, parent))
        return builders.build(self.config.model, self.source.input_shape,
                              self.source.num_classes, width=self.config.width)

    @staticmethod
    def _plain_view(model):
        """The plain network on `model`'s own layers (no pruning wrappers)."""
        return pruning.strip(model) if pruning.is_wrapped(model) else model

    def _build_member(self, member, workdir=None, retargetable=False):
        """A fresh compiled model of the member and its built optimizer (`retargetable`:
        its pruning schedule's target is a variable, see pruning.make_schedule)."""
        with self.strategy.scope():
            model = self._initial(member, workdir)
            if self.wrapped(member):
                model = self.method(member).wrap(
                    model, self._schedule(member.sparsity, retargetable),
                    self.config.prune_classifier)
            optimizer = self._compile(model, member)
            optimizer.build(model.trainable_variables)
        return model, optimizer

    def _optimizer(self, member):
        """The optimizer of a member: the recipe's learning-rate schedule over the
        member's own epochs, its weight decay, and float16's loss scaling
        (pie.compress.schedules; the defaults give a plain Adam or SGD)."""
        config = self.config
        return schedules.build_optimizer(
            config.optimizer, config.learning_rate, config.recipe,
            steps_per_epoch=self.steps_per_epoch, epochs=self.epochs(member),
            batch_size=config.batch_size, loss_scale=precision.needs_loss_scale(config.precision))

    def _compile(self, model, member):
        """Compiles `model` with the recipe's optimizer and loss; returns the optimizer."""
        import tf_keras as keras
        optimizer = self._optimizer(member)
        # Per-example losses: Keras reduces them over the global batch, which is
        # what tf.distribute strategies need.
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=self.config.label_smoothing,
            reduction=keras.losses.Reduction.NONE)
        num_classes = self.source.num_classes

        def sparse_loss(labels, logits):
            import tensorflow as tf
            onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
            return loss(onehot, logits)
        model.compile(optimizer=optimizer, loss=sparse_loss,
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
                      steps_per_execution=self.steps_per_execution(member),
                      **precision.compile_options(self.config.jit_compile))
        return optimizer

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
        target = (member.sparsity if self.wrapped(member) and self.config.initial_sparsity
                  else None)
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

    # ------------------------------------------------------------ training
    def train(self, member, workdir, label):
        """Trains `member` (`label`: its place in this run's list, as printed); its row."""
        if self.method(member).trains_members:  # made from a finished member
            return self.method(member).train_member(self, member, workdir, label)
        tfmot = pruning.tfmot
        import tf_keras as keras
        config, method = self.config, self.method(member)
        ckpt_dir = workdir.member_file(member.relpath, "checkpoint")
        mask_path = workdir.member_file(member.relpath, "weight_mask"
                                        if method.mask_kind == methods.WEIGHT_MASK
                                        else "unit_mask")
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
        elif method.when == methods.ONCE and member.sparsity > 0:
            parent_id = self._reuse_dense(workdir, member, model)
            if parent_id:
                # Same seed, same recipe: the dense member is the network this one prunes.
                epoch.assign(config.epochs)
                self.progress.done += config.epochs
                print(f"[{label}] {member.member_id}: starting from the finished "
                      f"dense member of seed {member.seed}", flush=True)
        log_dir = workdir.member_file(member.relpath, "logs")
        callbacks = [EpochProgress(self, member, label), NonFiniteLoss(member),
                     history.HistoryCSV(workdir.member_file(member.relpath, "history"),
                                        config.prune_classifier)]
        if self.wrapped(member):
            callbacks += [tfmot.sparsity.keras.UpdatePruningStep(),
                          tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir)]
        else:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, profile_batch=0))
        if not self.prunes_once(member) and member.sparsity > 0:
            callbacks += method.callbacks(
                model, self._schedule(member.sparsity) if method.when == methods.DURING_TRAINING
                and not self.wrapped(member) else None,
                pruning.prunable_layer_names(model, config.prune_classifier))
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
                extra = [pruning.WeightMaskCallback(mask)
                         if method.mask_kind == methods.WEIGHT_MASK
                         else _unit_mask_callback(mask)]
            model.fit(self._epochs_of_batches(member, current, stop), epochs=stop,
                      initial_epoch=current, verbose=0, steps_per_epoch=self.steps_per_epoch,
                      callbacks=callbacks + extra + [SaveEachEpoch(epoch, manager)])
            current = stop
        if self.prunes_once(member) and mask is None:  # no fine-tuning epochs
            mask = self._prune_once(member, model)
        return self._finish(member, model, workdir, started, ckpt_dir, mask,
                            parent_id, parent.path if parent is not None else None, shared)

    def _checkpoint(self, member, model, optimizer, workdir, label):
        """(epoch variable, CheckpointManager) of the member, restored from its last
        epoch checkpoint when it has one."""
        import tensorflow as tf
        ckpt_dir = workdir.member_file(member.relpath, "checkpoint")
        with self.strategy.scope():
            epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
        # The state file names the files a restore reads and a save deletes: only
        # plain names inside ckpt/ pass (a workdir is untrusted input).
        records.check_checkpoint_state(ckpt_dir)
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
        return self.source.train_epochs(self.config.batch_size, member.seed,
                                        range(first, stop),
                                        steps_per_epoch=self.steps_per_epoch,
                                        augment=self.config.augment)

    def _reuse_dense(self, workdir, member, model):
        """Loads the finished dense member of the same seed, if this workdir has it; its
        member id (None when there is none)."""
        manifest = records.read_manifest(workdir, required=False)
        dense = manifest[(manifest["method"] == methods.DENSE)
                         & (manifest["seed"] == member.seed)
                         & (manifest["model"] == self.config.model_name())]
        if dense.empty:
            return None
        path = workdir.model_path(dense.iloc[0])
        saved = loading.load_keras(path)
        if [w.shape for w in saved.get_weights()] != [w.shape for w in model.get_weights()]:
            return None
        model.set_weights(saved.get_weights())
        return dense.iloc[0]["member_id"]

    def _prune_once(self, member, model):
        """The method's one-shot mask of `model` (applied), on reference samples."""
        method = self.method(member)
        reference = training.reference_samples(
            self.source, self.config.reference_samples_per_class, member.seed)
        names = pruning.prunable_layer_names(model, self.config.prune_classifier)
        mask = method.one_shot_mask(model, member.sparsity, reference, member.seed, names)
        if method.mask_kind == methods.UNIT_MASK:
            from pie.compress import criteria
            removed, what = criteria.mask_summary(mask)["overall"], "units"
        else:
            removed, what = 1.0 - (sum(int(m.sum()) for m in mask.values())
                                   / sum(m.size for m in mask.values())), "weights"
        print(pruning.removed_line(member.member_id, member.method, removed,
                                   len(reference[1]), what), flush=True)
        return mask

    def _finish(self, member, model, workdir, started, ckpt_dir, mask=None,
                parent_id=None, parent_file=None, shared=None):
        config, method = self.config, self.method(member)
        if shared is not None:
            stripped = shared.plain
        else:
            stripped = pruning.strip(model) if self.wrapped(member) else model
        check_finite(member, stripped)
        layer_names = pruning.prunable_layer_names(stripped, config.prune_classifier)
        per_layer, overall = pruning.kernel_sparsity(stripped, layer_names)
        measured = {}
        if member.sparsity > 0:
            measured = method.check(per_layer, overall, member.sparsity, mask)
        unit_sparsity = measured.get("measured_unit_sparsity", {})
        logits, labels, ids = training.eval_logits(
            stripped, self.source, config.eval_batch_size,
            predict=shared.predict if shared else None, batches=self.eval_cache.batches())
        model_file = workdir.member_relfile(member.relpath, "keras_model")
        row = {"member_id": member.member_id, "method": member.method,
               "sparsity": member.sparsity, "measured_sparsity": round(overall, 6),
               "seed": member.seed, "dataset": config.dataset, "model": config.model_name(),
               "top1": None, "path": member.relpath, "model_file": model_file,
               "parent_id": parent_id or "", "recipe": self.recipe(member)[0]}
        if unit_sparsity:
            row["measured_unit_sparsity"] = round(unit_sparsity["overall"], 6)
        meta = dict(row, target_sparsity=member.sparsity,
                    measured_sparsity_per_layer=per_layer,
                    measured_unit_sparsity_per_layer=unit_sparsity,
                    steps=self.steps_per_epoch * self.epochs(member), epochs=self.epochs(member),
                    steps_per_call=self.steps_per_execution(member),
                    augment=config.augment,
                    wall_time_s=round(time.time() - started, 2),
                    protocol=config.protocol, prune_schedule=config.prune_schedule,
                    **config.recipe.settings(), precision=config.precision,
                    jit_compile=config.jit_compile,
                    parent_file=parent_file, **self.recipe_meta(member),
                    versions=training.package_versions(),
                    manifest_row=row)
        with records.atomic_path(workdir.path(model_file)) as tmp:
            # Saved in float32 whatever --precision it trained in: every later stage
            # loads and predicts it in float32.
            precision.float32_model(
                shared.export() if shared else training.uncompiled(stripped)).save(tmp)
        # The member's clean predictions, written after its model file (so the
        # predictions stage finds them current) from the pass that gives its top-1.
        row["top1"] = round(predict.write_member(
            workdir, member.member_id, logits, labels, ids, "test",
            stage=predict.PREDICTIONS_STAGE), 6)
        meta["top1"] = row["top1"]
        records.write_text(workdir.member_file(member.relpath, "flags"), config.flags_text())
        # The checkpoints go before the member is finished (meta.json, its row): a
        # finished member never keeps ckpt/; a kill just before meta.json costs a
        # retraining of this member (the same weights), never a stale ckpt/.
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        records.write_json(workdir.member_file(member.relpath, "meta"), meta)
        records.add_manifest_rows(workdir, [row])
        return row


def _unit_mask_callback(mask):
    from pie.compress import criteria
    return criteria.UnitMaskCallback(mask)


def check_finite(member, model):
    """A member whose weights are not all finite is refused, not recorded."""
    import numpy as np
    if not all(np.isfinite(weights).all() for weights in model.get_weights()):
        raise training.TrainingError(
            f"member {member.member_id}: its weights are not finite (the loss diverged): "
            "nothing recorded; lower --learning_rate")


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


class NonFiniteLoss(_keras_callback_base()):
    """Stops a member whose loss is NaN or infinite at the end of the epoch, before
    the epoch is checkpointed: one error line naming the member, nothing recorded."""

    def __init__(self, member):
        super().__init__()
        self.member = member

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise training.TrainingError(
                f"member {self.member.member_id}: the loss is {loss} at epoch {epoch + 1} "
                "(training diverged): nothing recorded; lower --learning_rate")


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
    """The member's manifest row if it finished (recovering a row lost to a crash);
    a finished member's left-over `ckpt/` (a kill while it was cleaned) goes."""
    meta_path = workdir.member_file(member.relpath, "meta")
    model_path = workdir.member_file(member.relpath, "keras_model")
    finished = member.member_id in manifest_ids
    if not finished and os.path.exists(meta_path) and os.path.exists(model_path):
        # Killed between saving the model and adding its row: add the row now.
        records.add_manifest_rows(workdir, [records.read_json(meta_path)["manifest_row"]])
        finished = True
    if finished:
        shutil.rmtree(workdir.member_file(member.relpath, "checkpoint"), ignore_errors=True)
    return finished


def check_init_models(config, source):
    """Each seed's --init_from model fits the dataset (one error line otherwise) and
    does not score at chance on a few eval images (another input convention: one error
    line; a warning with --allow_chance)."""
    if not config.init_from:
        return
    inputs, labels = imported.few_eval_images(source)
    for path in dict.fromkeys(lineage.init_path(config.init_from, seed)
                              for seed in range(config.seeds)):
        model = imported.load_keras(path)
        input_shape, n_outputs = imported.keras_signature(model, path)
        imported.check_shapes(path, input_shape, n_outputs, source)
        imported.check_chance(path, model(inputs, training=False).numpy(), labels, source,
                              config.allow_chance)


def train_population(config, worker_module):
    """The training stage: every member of `config`'s population (this shard and seed
    slice) trained or found finished; `worker_module` is the stage's module, started
    as `python -m` for the other workers of --workers. The exit code."""
    config.check_inputs()
    sparsities = list(config.levels)
    order = lineage.training_order(sparsities, config.protocol, config.init_from)
    members = training.plan(order, config.seeds, config.method, config.shard_slice,
                            config.seed_range)
    workdir = Workdir(config.workdir)
    manifest_ids = set(records.read_manifest(workdir, required=False)["member_id"])
    todo = [m for m in members if not finished_row(workdir, m, manifest_ids)]
    config.method_object.check_parents(config, workdir, todo)
    workers = worker_processes.resolve(config.workers, len({m.seed for m in todo}),
                                       config.strategy)
    if workers > 1:  # this process is worker 0: its threads are set before any op
        training.set_threads(worker_processes.threads_each(workers), required=False)
    else:
        worker_processes.discard_early()
        training.set_threads(config.threads)
    # The dtype policy of every model built (set before any is), restored after the
    # run: a Python API call leaves the process's policy as it found it.
    with precision.policy(config.precision):
        return _train_planned(config, worker_module, sparsities, order, members, todo,
                              workers, workdir)


def _train_planned(config, worker_module, sparsities, order, members, todo, workers, workdir):
    """train_population once the plan is made and the threads are set: the exit code."""
    strategy = training.make_strategy(config.strategy, config.tpu)
    source = sources.load(config.dataset, data_dir=config.data_dir,
                          label_attribute=config.label_attribute, toy_noise=config.toy_noise,
                          toy_seed=config.toy_seed, label_offset=config.label_offset,
                          cache_dir=config.workdir)
    # Saved resolved, so flags.txt says which views the members were trained on.
    config = config.replace(augment=source.resolve_augment(config.augment))
    # A population is trained with one recipe: another one stops here, nothing written.
    planned_recipes = recipes.check_run(config, members)
    if config.seed_range == (0, 1):  # once: not again in each --workers worker
        print(sources.found_line(source), flush=True)
    if config.steps_per_epoch:
        steps_per_epoch = config.steps_per_epoch
    elif source.train_size:
        steps_per_epoch = math.ceil(source.train_size / config.batch_size)
    else:
        raise sources.DataError(f"'{config.dataset}' has no training images")
    check_init_models(config, source)
    parents = lineage.parents(sparsities, config.seeds, config.method, config.protocol,
                              config.prune_schedule, config.init_from)
    trainer = Trainer(config, source, strategy, steps_per_epoch, len(members), parents,
                      planned_recipes)
    trainer.check_settings(sparsities)

    import tensorflow as tf
    if not config.jit_compile:  # XLA has no deterministic max-pool gradient
        tf.config.experimental.enable_op_determinism()
    chief = training.is_chief(strategy)
    if not chief:  # other workers of a multi-worker job write to a scratch folder
        workdir = Workdir(workdir.worker_scratch(strategy.cluster_resolver.task_id))
    sources.check_first_batch(source, config.batch_size, config.augment)
    os.makedirs(workdir, exist_ok=True)
    sources.save_config(workdir, source, dataset=config.dataset, data_dir=config.data_dir,
                        label_attribute=config.label_attribute, toy_noise=config.toy_noise,
                        toy_seed=config.toy_seed, label_offset=config.label_offset)
    print(f"population: {len(members)} members in shard {config.shard}"
          f"{'' if config.seed_range == (0, 1) else ', seeds ' + config.seed_slice}, "
          f"{len(members) - len(todo)} already finished, {len(todo)} to train", flush=True)
    first, count = config.seed_range
    with contextlib.ExitStack() as stack:
        wait = list
        if workers > 1:
            print(f"population: training in {workers} worker processes (this one and "
                  f"{workers - 1} more) of {worker_processes.threads_each(workers)} CPU "
                  f"threads each; the members of seed k in worker k mod {workers}", flush=True)
            (first, count), wait = stack.enter_context(worker_processes.others(
                worker_module, config.worker_args(), workers, config.seed_range))
            todo = [m for m in todo if m.seed % count == first]
        train_members(trainer, workdir, todo)
        if count > 1:
            # Workers start and run at different speeds: one that is done helps the
            # others with members nobody has started.
            others = [m for m in training.plan(order, config.seeds, config.method,
                                               config.shard_slice)
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


def _train_or_remove(trainer, member, workdir, label):
    """Trains `member`; on bad input found late (a diverged loss, a missed sparsity)
    its folder goes: nothing of a refused member stays (an interrupt keeps it, to
    resume)."""
    from pie.io import errors
    folder = workdir.path(member.relpath)
    try:
        return trainer.train(member, workdir, label)
    except errors.InputError:
        shutil.rmtree(folder, ignore_errors=True)
        parent = os.path.dirname(folder)
        while parent != workdir.root and parent.startswith(workdir.root):
            try:
                os.rmdir(parent)  # only while empty: other members' folders stay
            except OSError:
                break
            parent = os.path.dirname(parent)
        raise


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
            row = _train_or_remove(trainer, member, workdir, label)
        print(f"[{label}] {member.member_id} done: top-1 {row['top1']:.4f}, "
              f"measured sparsity {row['measured_sparsity']:.4f}", flush=True)

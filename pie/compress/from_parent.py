"""Methods whose members are made from a finished member of the workdir (its parent).

m_by_n, qat, pqat, cluster and distill (issue 28) each start from a finished member
of the same seed (the dense member, or a pruned one for pqat), change or train a
network from it with tfmot or a loss of their own, and record the result under
their own method name with `parent_id` set to that member. `FromParent` is their
shared part: finding and loading the parent, the fine-tuning `fit` on the seed's
batches, and recording a member whose model is a Keras file (the trainer's
`_finish`) or an int8 `.tflite` converted from it (`finish_tflite`).

Such members have no epoch checkpoints: an interrupted one is made again. The
modules that load TensorFlow are imported where a member is made: the registry of
methods imports this module when the training stage's flags are checked.
"""
import shutil
import time

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.compress import methods, precision
from pie.io import errors, records


def qat_mode():
    """QAT members' conversion: Optimize.DEFAULT on a QAT model gives int8 weights and
    int8 activations with the ranges learned in training (float input and output)."""
    from pie.compress import quantize
    return quantize.Mode("qat_int8", quantize.DENSE_SOURCE, sparse=False, weights="int8",
                         full_int8=False)


class FromParent(methods.Method):
    """A method that makes each member from a finished member of the same seed."""
    when = methods.ONCE
    trains_members = True
    # Its members are the .tflite conversion of the trained Keras model.
    exports_tflite = False
    parent_label = "the dense member"

    def parent_row(self, config, member, manifest):
        """The manifest row of the member's parent (a dict), or None."""
        rows = manifest[(manifest["method"] == methods.DENSE)
                        & (manifest["seed"].astype(int) == member.seed)
                        & (manifest["model"] == config.model_name())]
        return rows.iloc[0].to_dict() if len(rows) else None

    def parent_population(self, config, member):
        """The key of the population the member's parent belongs to (its recipe
        digest is part of the member's, pie.compress.recipes)."""
        return records.variant_key(methods.DENSE, 0)

    def planned_parent(self, config, member):
        """Whether this run trains the member's parent before it (the dense member)."""
        return 0 in config.levels

    def check_parents(self, config, workdir, members):
        manifest = records.read_manifest(workdir, required=False)
        for member in members:
            if member.method != self.name or self.planned_parent(config, member):
                continue
            if self.parent_row(config, member, manifest) is None:
                raise errors.UsageError(self.missing_parent(config, member))

    def missing_parent(self, config, member):
        return (f"--method={self.name} starts each member from {self.parent_label} of its "
                f"seed: the workdir has none for seed {member.seed} (model "
                f"{config.model_name()}); train it first (--sparsities=0)")

    def check_float32(self, config, what):
        """tfmot's quantization-aware and clustering wrappers take float32 layers only:
        under a mixed policy they fail deep in training, so the run is refused first."""
        if config.method == self.name and config.precision != precision.FLOAT32:
            raise errors.UsageError(f"--method={self.name} trains {what}, which take float32 "
                                    f"layers only: train it with --precision=float32, got "
                                    f"--precision={config.precision}")

    def member_epochs(self, config):
        return config.finetune_epochs

    def derive(self, trainer, member, parent_model, parent_row):
        """The member's trained Keras model, made from its parent's model."""
        raise NotImplementedError

    def extra_fields(self, config, member, model, parent_row):
        """Fields of the member's meta.json (what makes it this method)."""
        return {}

    def train_member(self, trainer, member, workdir, label):
        import tf_keras as keras
        from pie.models import loading
        started = time.time()
        manifest = records.read_manifest(workdir)
        parent = self.parent_row(trainer.config, member, manifest)
        if parent is None:
            raise errors.UsageError(self.missing_parent(trainer.config, member))
        keras.utils.set_random_seed(member.seed)
        keras.backend.reset_uids()
        # Saved in float32: trained, like every member, in --precision.
        parent_model = precision.in_policy(loading.load_keras(workdir.model_path(parent)))
        print(f"[{label}] {member.member_id}: {self.name} from {parent['member_id']}",
              flush=True)
        model = self.derive(trainer, member, parent_model, parent)
        ckpt_dir = workdir.member_file(member.relpath, "checkpoint")
        if self.exports_tflite:
            row = finish_tflite(trainer, member, model, workdir, started, parent)
        else:
            row = trainer._finish(member, model, workdir, started, ckpt_dir,
                                  parent_id=parent["member_id"])
        extra = self.extra_fields(trainer.config, member, model, parent)
        if extra:
            meta_path = workdir.member_file(member.relpath, "meta")
            records.write_json(meta_path, dict(records.read_json(meta_path), **extra))
        return row


def fine_tune(trainer, member, model, epochs, callbacks=()):
    """Trains `model` for `epochs` on the member's seed's batches of the epochs after
    the recipe's (--epochs onward: the batches its parent's training would have seen
    next), compiled with the recipe's optimizer and loss."""
    from pie.compress import trainer as trainer_module
    if epochs < 1:
        return model
    trainer._compile(model, member)
    first = trainer.config.epochs
    model.fit(trainer._epochs_of_batches(member, first, first + epochs), epochs=epochs,
              verbose=0, steps_per_epoch=trainer.steps_per_epoch,
              callbacks=[trainer_module.EpochProgress(trainer, member, member.member_id),
                         trainer_module.NonFiniteLoss(member)] + list(callbacks))
    return model


def quantized_kernels(model):
    """{layer name: float kernel} of a QAT model (quantize wrappers unwrapped)."""
    kernels = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        # The wrapper swaps the layer's `kernel` for its fake-quantized tensor while
        # it is called: the variable itself is read.
        variables = [v for v in layer.weights if v.name.split("/")[-1].startswith("kernel")]
        if hasattr(inner, "kernel") and variables:
            kernels[inner.name] = variables[0].numpy()
    return kernels


def finish_tflite(trainer, member, model, workdir, started, parent):
    """Records a member whose model is the int8 .tflite of the trained Keras `model`
    (kept beside it as model.keras); its clean predictions come from the .tflite."""
    import numpy as np
    from pie.compress import pruning, quantize, training
    from pie.compress import trainer as trainer_module
    from pie.models import loading, predict
    config = trainer.config
    trainer_module.check_finite(member, model)
    content = quantize.convert(model, qat_mode())
    model_file = workdir.member_relfile(member.relpath, "tflite_model")
    keras_file = workdir.member_relfile(member.relpath, "keras_model")
    # The QAT model's layers (quantize wrappers, quantizers) are tfmot's: its scope
    # lets Keras rebuild them; loading the file needs the same scope.
    with pruning.tfmot.quantization.keras.quantize_scope():
        with records.atomic_path(workdir.path(keras_file)) as tmp:
            training.uncompiled(model).save(tmp)
    with records.atomic_path(workdir.path(model_file)) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(content)
    kernels = quantized_kernels(model)
    names = [name for name in pruning.prunable_layer_names(
        loading.load_keras(workdir.model_path(parent)), config.prune_classifier)
        if name in kernels]
    zeros = sum(int(np.count_nonzero(kernels[name] == 0)) for name in names)
    total = sum(kernels[name].size for name in names)
    top1 = predict.record_clean_predictions(workdir, member.member_id,
                                            predict.TFLiteMember(workdir.path(model_file)),
                                            trainer.source, config.eval_batch_size)
    row = {"member_id": member.member_id, "method": member.method, "sparsity": member.sparsity,
           "measured_sparsity": round(zeros / total if total else 0.0, 6), "seed": member.seed,
           "dataset": config.dataset, "model": config.model_name(), "top1": round(top1, 6),
           "path": member.relpath, "model_file": model_file,
           "parent_id": parent["member_id"], "recipe": trainer.recipe(member)[0]}
    meta = dict(row, target_sparsity=member.sparsity, keras_file=keras_file,
                file_bytes=len(content), epochs=trainer.epochs(member),
                wall_time_s=round(time.time() - started, 2), parent_top1=parent["top1"],
                **trainer.recipe_meta(member),
                versions=training.package_versions(), manifest_row=row)
    records.write_text(workdir.member_file(member.relpath, "flags"), config.flags_text())
    shutil.rmtree(workdir.member_file(member.relpath, "checkpoint"), ignore_errors=True)
    records.write_json(workdir.member_file(member.relpath, "meta"), meta)
    records.add_manifest_rows(workdir, [row])
    return row

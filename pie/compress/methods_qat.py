"""`--method=qat` and `--method=pqat`: quantization-aware training, members int8 .tflite.

  qat   from the dense member of each seed: tfmot `quantize_model` (fake-quantized
        int8 weights and activations in training), fine-tuned --finetune_epochs;
        recorded at sparsity 0 under `qat`.
  pqat  from the pruned member of --parent_method at the same sparsity and seed:
        `quantize_apply(quantize_annotate_model(parent),
        Default8BitPrunePreserveQuantizeScheme())`, which keeps the parent's zeros
        through fine-tuning (checked: a PruningError otherwise); recorded at the
        parent's sparsity under `pqat`.

A member's `model_file` is the int8 .tflite converted from the QAT model
(Optimize.DEFAULT: int8 weights and activations, float input and output); the QAT
Keras model is kept beside it (`model.keras`, meta.json's `keras_file`).
"""
import numpy as np

from pie.compress import from_parent, methods
from pie.io import errors, records


class QuantizationAware(from_parent.FromParent):
    name = "qat"
    description = "quantization-aware training (tfmot quantize_model) from the dense member"
    keeps_zero_level = True
    in_graph = True
    exports_tflite = True

    def check_config(self, config):
        self.check_float32(config, "tfmot's quantization-aware layers")
        if config.method == self.name and config.levels != (0.0,):
            raise errors.UsageError(f"--method={self.name} removes no weights: train it with "
                                    f"--sparsities=0, got '{config.sparsities}'")

    def planned_parent(self, config, member):
        return False

    def quantized(self, parent_model):
        from pie.compress import pruning
        return pruning.tfmot.quantization.keras.quantize_model(parent_model)

    def derive(self, trainer, member, parent_model, parent_row):
        model = self.quantized(parent_model)
        return from_parent.fine_tune(trainer, member, model, self.member_epochs(trainer.config))


class PruningPreservingQAT(QuantizationAware):
    name = "pqat"
    option_fields = ("parent_method",)
    description = ("pruning-preserving quantization-aware training from a pruned member "
                   "(--parent_method), its zeros kept")
    keeps_zero_level = False
    in_graph = False
    parent_label = "a pruned member"

    def check_config(self, config):
        self.check_float32(config, "tfmot's quantization-aware layers")
        if config.method != self.name:
            return
        if config.parent_method in (methods.DENSE, self.name) or any(
                level == 0 for level in config.levels):
            raise errors.UsageError(
                f"--method=pqat quantizes pruned members: --sparsities must be the pruned "
                f"parents' (> 0) and --parent_method a pruning method, got "
                f"--sparsities='{config.sparsities}' --parent_method={config.parent_method}")

    def parent_population(self, config, member):
        return records.variant_key(config.parent_method, member.sparsity)

    def parent_row(self, config, member, manifest):
        rows = manifest[(manifest["method"] == config.parent_method)
                        & (manifest["sparsity"].map(records.key_sparsity)
                           == records.key_sparsity(member.sparsity))
                        & (manifest["seed"].astype(int) == member.seed)
                        & (manifest["model"] == config.model_name())
                        & manifest["model_file"].astype(str).str.endswith(".keras")]
        return rows.iloc[0].to_dict() if len(rows) else None

    def missing_parent(self, config, member):
        return (f"--method=pqat keeps the zeros of a pruned parent: the workdir has no "
                f"{config.parent_method} member at sparsity {member.sparsity:g} of seed "
                f"{member.seed}; train it first (--method={config.parent_method}) or name "
                f"its method with --parent_method")

    def quantized(self, parent_model):
        from pie.compress import pruning
        tfmot = pruning.tfmot
        annotated = tfmot.quantization.keras.quantize_annotate_model(parent_model)
        return tfmot.quantization.keras.quantize_apply(
            annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())

    def derive(self, trainer, member, parent_model, parent_row):
        from pie.compress import pruning
        names = pruning.prunable_layer_names(parent_model, trainer.config.prune_classifier)
        zeros = {name: parent_model.get_layer(name).kernel.numpy() == 0 for name in names}
        model = super().derive(trainer, member, parent_model, parent_row)
        kernels = from_parent.quantized_kernels(model)
        for name, was_zero in zeros.items():
            if np.any(kernels[name][was_zero] != 0):
                raise errors.PruningError(f"member {member.member_id}: layer {name} lost "
                                          f"zeros of its pruned parent in training")
        return model


methods.register(QuantizationAware())
methods.register(PruningPreservingQAT())

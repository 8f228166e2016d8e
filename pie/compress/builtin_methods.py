"""The toolkit's own compression methods, registered by pie.compress.methods.

  dense      sparsity-0 members: the recipe without pruning
  magnitude  tfmot's low-magnitude pruning, each layer to the target, during training
             (pruned once: each layer by |w|)
  wt         one global |w| threshold over every prunable kernel, during training
  sipp       torchprune's SiPPNet weight sensitivity, once from the dense member
  sipp_mean  the earlier mean-over-samples sensitivity, once from the dense member
  lrp, taylor, grad, weight, filter_l1
             unit criteria (pie.compress.criteria): that fraction of neurons and
             filters removed once from the dense member

pie.compress.pruning and pie.compress.criteria (TensorFlow, tfmot) are imported by
the methods' work, not here: the registry, and the flag checks that read it, never
load TensorFlow.
"""
from pie.compress import criteria_names
from pie.compress.methods import (DURING_TRAINING, ONCE, UNIT_MASK, WEIGHT_MASK, DENSE,
                                  Method)


class Dense(Method):
    name = DENSE
    description = "no pruning (sparsity-0 members)"
    when = DURING_TRAINING
    in_graph = True
    needs_data = False


class GlobalWeights(Method):
    """Weight pruning with one global budget over every prunable kernel."""
    mask_kind = WEIGHT_MASK

    def scores(self, model, layer_names, x):
        raise NotImplementedError

    def one_shot_mask(self, model, sparsity, reference, seed, layer_names):
        from pie.compress import pruning
        x, _ = reference
        masks = pruning.global_keep_masks(self.scores(model, layer_names, x), sparsity)
        pruning.apply_weight_masks(model, masks)
        return masks

    def check(self, per_layer, overall, sparsity, mask):
        from pie.compress import pruning
        pruning.check_overall_sparsity(overall, sparsity)
        return {}


class Magnitude(Method):
    name = "magnitude"
    description = ("tfmot, each layer to the target, during training (pruned once: each "
                   "layer by |w|)")
    when = DURING_TRAINING
    in_graph = True
    needs_data = False

    def wraps(self, sparsity, has_parent):
        return not self.prunes_once(sparsity, has_parent)

    def wrap(self, model, schedule, include_classifier):
        from pie.compress import pruning
        return pruning.wrap_for_pruning(model, schedule, include_classifier)

    def one_shot_mask(self, model, sparsity, reference, seed, layer_names):
        from pie.compress import pruning
        mask = {name: pruning.global_keep_masks(
            {name: pruning.kernel_of(model, name).numpy()}, sparsity)[name]
            for name in layer_names}
        pruning.apply_weight_masks(model, mask)
        return mask

    def check(self, per_layer, overall, sparsity, mask):
        from pie.compress import pruning
        pruning.check_sparsity(per_layer, sparsity)
        return {}


class GlobalMagnitude(GlobalWeights):
    name = "wt"
    description = "one global weight-magnitude threshold, during training"
    when = DURING_TRAINING
    needs_data = False

    def scores(self, model, layer_names, x):
        from pie.compress import pruning
        del x  # data-free
        return {name: pruning.kernel_of(model, name).numpy() for name in layer_names}

    def callbacks(self, model, schedule, layer_names):
        from pie.compress import pruning
        return [pruning.GlobalMagnitudePruning(schedule, layer_names)]


class Sensitivity(GlobalWeights):
    name = "sipp"
    description = ("torchprune's SiPPNet sensitivity (max over reference samples), from the "
                   "dense member")

    def scores(self, model, layer_names, x):
        from pie.compress import criteria
        return criteria.sipp_sensitivity(model, layer_names, x)


class MeanSensitivity(GlobalWeights):
    name = "sipp_mean"
    description = "the earlier mean-over-samples weight sensitivity, from the dense member"

    def scores(self, model, layer_names, x):
        from pie.compress import criteria
        return criteria.weight_sensitivity(model, layer_names, x)


class UnitCriterion(Method):
    """A criterion of pie.compress.criteria: the lowest-scored units removed."""
    mask_kind = UNIT_MASK

    def __init__(self, name):
        self.name = name
        self.description = criteria_names.get_criterion(name).description
        self.needs_data = criteria_names.get_criterion(name).needs_data

    def one_shot_mask(self, model, sparsity, reference, seed, layer_names):
        from pie.compress import criteria
        x, y = reference
        return criteria.prune_units(model, self.name, sparsity, x, y, seed=seed)

    def check(self, per_layer, overall, sparsity, mask):
        from pie.compress import criteria
        from pie.compress import training
        training.check_unit_sparsity(mask, sparsity)
        return {"measured_unit_sparsity": criteria.mask_summary(mask)}


ALL = [Dense(), Magnitude(), GlobalMagnitude(), Sensitivity(), MeanSensitivity()] + [
    UnitCriterion(name) for name in criteria_names.CRITERIA]

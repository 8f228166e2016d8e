"""`--method=cluster`: weight clustering (tfmot `cluster_weights`), k values per kernel.

Each member starts from the dense member of its seed: the kernels of its prunable
layers with more than --clusters weights are wrapped by `cluster_weights`
(--clusters centroids, k-means++ initialisation), fine-tuned for --finetune_epochs
(the centroids train, each weight keeps its cluster), and `strip_clustering` gives
the member: a plain Keras model whose clustered kernels hold at most --clusters
distinct values. Recorded at sparsity 0 under `cluster`.
"""
import numpy as np

from pie.compress import from_parent, methods
from pie.io import errors


def distinct_values(kernel):
    return int(np.unique(np.asarray(kernel)).size)


class Clustering(from_parent.FromParent):
    name = "cluster"
    option_fields = ("clusters",)
    description = "weight clustering (tfmot cluster_weights, k-means++), from the dense member"
    keeps_zero_level = True
    in_graph = True

    def check_config(self, config):
        if config.clusters < 2:
            raise errors.UsageError(f"--clusters must be at least 2, got {config.clusters}")
        self.check_float32(config, "tfmot's clustered layers")
        if config.method == self.name and config.levels not in ((0.0,),):
            raise errors.UsageError(f"--method={self.name} removes no weights: train it with "
                                    f"--sparsities=0, got '{config.sparsities}'")

    def clustered_names(self, model, config):
        from pie.compress import pruning
        return [name for name in pruning.prunable_layer_names(model, config.prune_classifier)
                if model.get_layer(name).kernel.shape.num_elements() > config.clusters]

    def derive(self, trainer, member, parent_model, parent_row):
        from pie.compress import pruning
        import tf_keras as keras
        clustering = pruning.tfmot.clustering.keras
        config = trainer.config
        names = set(self.clustered_names(parent_model, config))

        def clone(layer):
            if layer.name in names:
                return clustering.cluster_weights(
                    layer, number_of_clusters=config.clusters,
                    cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS)
            return layer
        wrapped = keras.models.clone_model(parent_model, clone_function=clone)
        from_parent.fine_tune(trainer, member, wrapped, self.member_epochs(config))
        stripped = clustering.strip_clustering(wrapped)
        for name in sorted(names):
            if distinct_values(stripped.get_layer(name).kernel.numpy()) > config.clusters:
                raise errors.PruningError(f"member {member.member_id}: layer {name} has more "
                                          f"than {config.clusters} distinct values")
        return stripped

    def extra_fields(self, config, member, model, parent_row):
        return {"clusters": config.clusters,
                "distinct_values_per_layer": {
                    name: distinct_values(model.get_layer(name).kernel.numpy())
                    for name in self.clustered_names(model, config)}}


methods.register(Clustering())

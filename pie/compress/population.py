"""Population training on shared graphs: one built, compiled and traced model per variant.

Training a member costs more than its steady epochs: building the network (and
cloning it with tfmot's pruning wrappers), tracing Keras's train function and
letting TensorFlow optimise its graph on the first call, tracing the evaluation,
and rebuilding an uncompiled copy to save. For the members of one *variant* (same
method, same sparsity: the same graph; only the seed differs) all of that is the
same work. `SharedModels` does it once per variant and trains the variant's
members on that model one after another. Before each member, every variable is
set to what a freshly built member of that seed holds: the layers' weights from
a new build with the member's seed, the optimizer's slots and step, the pruning
wrappers' masks, thresholds and step as built. Same initial weights, same batch
order, same ops: the member ends with the weights it gets when trained alone.

Members stay independent: each writes its own checkpoint after every epoch (the
shared model has the object graph of a freshly built one, so either path resumes
the other's checkpoints) and its own files.

Not shared (each member builds its own model): models with random layers
(dropout draws would continue from the previous member's random state instead of
starting from the member's seed) and tf.distribute strategies other than the
default one.
"""
import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


def has_random_layers(model):
    """Whether any layer draws random numbers while training (dropout, noise)."""
    from tf_keras.src.engine.base_layer import BaseRandomLayer
    return any(isinstance(layer, BaseRandomLayer) for layer in model.submodules)


class SharedModel:
    """One variant's model, re-initialised for each of its members.

    `model` is the compiled training model (possibly with pruning wrappers),
    `optimizer` its optimizer (built), `plain` the plain network whose layers
    are the same objects as `model`'s (the stripped view of a wrapped model, or
    `model` itself): its weights are the ones a fresh build of the architecture
    has, in the same order.
    """

    def __init__(self, model, optimizer, plain):
        import tensorflow as tf
        self.model, self.optimizer, self.plain = model, optimizer, plain
        # As built: the wrappers' masks (ones), thresholds (0) and step (-1), the
        # optimizer's zero slots and step 0. Nothing here depends on the seed.
        self._built_state = model.get_weights()
        self._optimizer_state = [v.numpy() for v in optimizer.variables]
        self._export = None
        self.members = 0
        # One traced inference function for every member's evaluation.
        self.predict = tf.function(lambda x: plain(x, training=False), reduce_retracing=True)

    def reset(self, initial):
        """Sets every variable to a fresh member's: `initial` is the plain network
        freshly built with the member's seed (its weights are copied, not kept)."""
        self.model.set_weights(self._built_state)
        self.plain.set_weights(initial.get_weights())
        for variable, value in zip(self.optimizer.variables, self._optimizer_state):
            variable.assign(value)
        self.model.reset_metrics()
        self.members += 1

    def export(self):
        """An uncompiled plain model holding the current member's weights, to save.

        Built once per variant; each member's weights are copied into it.
        """
        import tf_keras as keras
        if self._export is None:
            self._export = keras.Model.from_config(self.plain.get_config())
        self._export.set_weights(self.plain.get_weights())
        return self._export


class SharedModels:
    """Shared models keyed by variant: as many per variant as members train at once.

    `build(member)` returns (compiled model, built optimizer) of a fresh member;
    `initial(member)` the plain network freshly built with the member's seed;
    `plain_view(model)` the plain network sharing `model`'s layers.
    """

    def __init__(self, build, initial, plain_view):
        self._build, self._initial, self._plain_view = build, initial, plain_view
        self._variants = {}
        self.unshareable = set()

    def get(self, key, member):
        """The variant's shared model, set to `member`'s initial state, or None when
        the variant cannot share (the member then trains on a model of its own)."""
        models = self.get_many(key, [member])
        return models[0] if models else None

    def get_many(self, key, members):
        """One shared model per member (the i-th set to the i-th member's initial
        state), or None when the variant cannot share."""
        if key in self.unshareable:
            return None
        slots = self._variants.setdefault(key, [])
        for position, member in enumerate(members):
            if position < len(slots):
                slots[position].reset(self._initial(member))
                continue
            model, optimizer = self._build(member)  # already this member's initial state
            if has_random_layers(model):
                self.unshareable.add(key)
                del self._variants[key]
                return None
            shared = SharedModel(model, optimizer, self._plain_view(model))
            shared.members = 1
            slots.append(shared)
        return slots[:len(members)]


class GroupStep:
    """Trains several compiled models side by side: one traced function runs one
    training step of each (Keras's own `train_step`, so the same ops as `fit`), each
    on its own batch. TensorFlow runs the models' independent ops in parallel and
    Python dispatches one call per step for all of them. One trace per set of models,
    kept for the next members that reuse them (SharedModels).
    """

    def __init__(self):
        self._functions = {}

    def _function(self, models):
        import tensorflow as tf
        key = tuple(id(model) for model in models)
        if key not in self._functions:
            def step(batches):
                for model, batch in zip(models, batches):
                    model.train_step(batch)
            self._functions[key] = tf.function(step)
        return self._functions[key]

    def run_epoch(self, models, datasets, steps=None):
        """One epoch of every model on its own dataset of (inputs, labels) batches;
        each model's epoch metrics ({'loss': .., 'acc': ..}), as fit's logs."""
        import tensorflow as tf
        step = self._function(models)
        batches = tf.data.Dataset.zip(tuple(datasets))
        if steps:
            batches = batches.take(steps)
        for model in models:
            model.reset_metrics()
        for batch in batches:
            step(batch)
        return [{name: float(value) for name, value in model.get_metrics_result().items()}
                for model in models]


def plan_groups(members, size, groupable, variant):
    """Members in training order, as groups of at most `size` members of one variant
    (`variant(member)`) that are `groupable(member)`; every other member alone.
    Order within a variant is kept."""
    groups, open_groups = [], {}
    for member in members:
        if size < 2 or not groupable(member):
            groups.append([member])
            continue
        key = variant(member)
        group = open_groups.get(key)
        if group is None or len(group) >= size:
            group = open_groups[key] = []
            groups.append(group)
        group.append(member)
    return groups

"""The unit criteria's names and what each needs, without TensorFlow.

pie.compress.criteria scores the units; the method registry (pie.compress.methods,
one method per criterion) and the training stage's flag checks read only these, so
a refused flag never loads TensorFlow. `criteria.CRITERIA` is this module's.
"""


class Criterion:
    """A named unit-scoring rule.

    Attributes:
      name: registry key.
      needs_data: whether scoring needs reference samples `(x, y)`.
      per_layer: True when the same fraction is pruned in every layer (scores
        are only comparable within a layer); False for one global ranking.
      description: one line for help strings and docs.
    """

    def __init__(self, name, needs_data, per_layer, description):
        self.name = name
        self.needs_data = needs_data
        self.per_layer = per_layer
        self.description = description

    def __repr__(self):
        return f"Criterion({self.name!r})"


CRITERIA = {
    "weight": Criterion("weight", False, False,
                        "mean absolute incoming weight, L1-normalised per layer"),
    "grad": Criterion("grad", True, False,
                      "|mean dLoss/dz| over samples, L2-normalised per layer"),
    "taylor": Criterion("taylor", True, False,
                        "|mean z * dLoss/dz| over samples, L2-normalised per layer"),
    "lrp": Criterion("lrp", True, False,
                     "LRP z+ relevance from the true-class logit, summed over samples, "
                     "divided by the layer total"),
    "filter_l1": Criterion("filter_l1", False, True,
                           "L1 norm of each filter or neuron, same fraction pruned per layer"),
}


def get_criterion(name):
    """The registered `Criterion` called `name`."""
    if name not in CRITERIA:
        raise ValueError(
            f"unknown criterion {name!r}; allowed: {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]

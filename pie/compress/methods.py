"""Compression methods of the training stage: one interface, one registry.

A method is what `train --method=NAME` prunes members with. Everything the
trainer (pie.compress.trainer) asks of a method is on `Method`:

  when        `during_training`: prunes while the member trains from a fresh start,
              following the pruning schedule (magnitude, wt); else `once`: prunes a
              finished parent network once, then fine-tunes (sipp, unit criteria).
              Under --protocol=from_dense or --init_from every method prunes once.
  mask_kind   `weight` (kernel weights held at 0) or `unit` (neurons and filters).
  wrap        training-time model change (magnitude: tfmot's pruning wrappers).
  callbacks   training-time Keras callbacks (wt: the global threshold per step).
  one_shot_mask  the mask of pruning a finished network once (and applying it).
  check       the measured sparsity meets the target (a PruningError otherwise).
  check_config   fails on bad values of the method's own flags (every registered
              method checks every TrainConfig, so a bad flag fails whatever --method).
  option_fields  the TrainConfig fields of the method's own options (part of its
              members' recipe, pie.compress.recipes).
  keeps_zero_level  members at sparsity 0 are the method's own (qat, cluster,
              distill remove no weights), not the dense population.
  trains_members  the method makes each member itself from a finished member of the
              workdir (pie.compress.from_parent): `check_parents` before anything is
              written, `member_epochs`, `train_member`.

Reference samples (`per_class` training images of every class, drawn for the
member's seed) are handed to `one_shot_mask`; a method with `needs_data = False`
ranks weights without them (magnitude, wt) and its log line names none.
Conversions (TFLite quantization) are the other kind of compression: their
registry is pie.compress.quantize.MODES.

A new method is one module: subclass `Method`, `register(MyMethod())`, and import
the module before the training stage parses its flags (docs/architecture.md has a
worked example, built by tests/test_method_registry.py). Worker processes
(`train --workers=N`) start as `python -m save_checkpoint.train`: they know the
methods registered here and in modules that the stage imports.
"""
from pie.io import errors

DURING_TRAINING = "during_training"
ONCE = "once"
WEIGHT_MASK = "weight"
UNIT_MASK = "unit"


class Method:
    """A compression method; subclasses set the class attributes and override what
    differs from these defaults (no pruning, no callbacks)."""
    name = None
    description = ""
    when = ONCE
    mask_kind = WEIGHT_MASK
    # Training needs no per-batch Python (all in the graph): many steps a call.
    in_graph = False
    keeps_zero_level = False
    trains_members = False
    # Scores weights on the reference samples; False: data-free (by |w| alone).
    needs_data = True
    # The TrainConfig fields of this method's own options (config.METHOD_OPTION_FIELDS):
    # part of its members' recipe (pie.compress.recipes).
    option_fields = ()

    def check_config(self, config):
        """Fails (UsageError) on bad values of this method's own flags in `config`."""

    def check_parents(self, config, workdir, members):
        """Fails (UsageError) when a member's parent is missing (trains_members only)."""

    def member_epochs(self, config):
        """Training epochs of one member (trains_members only)."""
        return config.epochs

    def train_member(self, trainer, member, workdir, label):
        """Makes, records and returns the manifest row of `member` (trains_members)."""
        raise NotImplementedError

    def prunes_once(self, sparsity, has_parent):
        """Pruned once from a finished network (then fine-tuned), not during training."""
        return sparsity > 0 and (self.when == ONCE or has_parent)

    def wraps(self, sparsity, has_parent):
        """Whether `wrap` changes the training model (tfmot's wrappers)."""
        return False

    def wrap(self, model, schedule, include_classifier):
        """The model trained (pruning during training): `model` itself by default."""
        return model

    def callbacks(self, model, schedule, layer_names):
        """Keras callbacks pruning during training (none by default)."""
        return []

    def one_shot_mask(self, model, sparsity, reference, seed, layer_names):
        """Prunes the finished `model` once to `sparsity` in place; returns the mask
        ({layer: bool keep array} for weights, criteria's unit mask for units).
        `reference` = (x, y) training images of every class; `seed` the member's."""
        raise errors.PruningError(f"method '{self.name}' does not prune a finished network")

    def check(self, per_layer, overall, sparsity, mask):
        """Fails (PruningError) when the measured sparsity misses the target; returns
        the extra manifest fields (e.g. measured_unit_sparsity)."""
        return {}

    def __repr__(self):
        return f"<method {self.name}>"


_REGISTRY = {}


def register(method):
    """Adds `method` (a Method instance) under its name; a name is registered once."""
    _register_built_in()
    if not isinstance(method, Method):
        raise TypeError(f"register() takes a Method instance, got {method!r}")
    if not method.name or not isinstance(method.name, str):
        raise ValueError("a method needs a non-empty string `name`")
    if method.when not in (DURING_TRAINING, ONCE):
        raise ValueError(f"method '{method.name}': `when` must be '{DURING_TRAINING}' or "
                         f"'{ONCE}', got {method.when!r}")
    if method.mask_kind not in (WEIGHT_MASK, UNIT_MASK):
        raise ValueError(f"method '{method.name}': `mask_kind` must be '{WEIGHT_MASK}' or "
                         f"'{UNIT_MASK}', got {method.mask_kind!r}")
    if method.name in _REGISTRY and _REGISTRY[method.name] is not method:
        raise ValueError(f"a method named '{method.name}' is registered already")
    _REGISTRY[method.name] = method
    ordered = sorted(_REGISTRY.values(), key=_rank)  # stable: others as registered
    _REGISTRY.clear()
    _REGISTRY.update((each.name, each) for each in ordered)
    return method


def _rank(method):
    """Built-in first, then the shipped methods in SHIPPED_MODULES' order, then the
    others: the same order whichever method module was imported first (each imports
    only light modules, so any of them can be the one that fills the registry)."""
    if method.name in BUILT_IN:
        return 0
    module = type(method).__module__
    shipped = [f"pie.compress.{name}" for name in SHIPPED_MODULES]
    return 1 + (shipped.index(module) if module in shipped else len(shipped))


def unregister(name):
    """Removes a method added by `register` (tests; the built-in ones stay)."""
    _register_built_in()
    if name in BUILT_IN:
        raise ValueError(f"'{name}' is a built-in method")
    _REGISTRY.pop(name, None)


def names(pruning_only=True):
    """Registered method names, built-in first (`dense` left out when pruning_only)."""
    _register_built_in()
    return [name for name in _REGISTRY if not (pruning_only and name == DENSE)]


def registered():
    """Every registered Method, built-in first."""
    _register_built_in()
    return list(_REGISTRY.values())


def data_free():
    """Names of the registered methods that prune without reference samples."""
    return [method.name for method in registered() if not method.needs_data]


def get(name):
    """The registered method `name`; a UsageError naming the allowed ones otherwise."""
    _register_built_in()
    if name not in _REGISTRY:
        raise errors.UsageError(f"unknown --method '{name}'; allowed: {', '.join(names())}")
    return _REGISTRY[name]


DENSE = "dense"
BUILT_IN = set()


# The methods people ship (issue 28), one module each; each registers itself.
SHIPPED_MODULES = ("methods_m_by_n", "methods_qat", "methods_cluster", "methods_distill")


def _register_built_in():
    """The toolkit's own methods, registered first, then the shipped methods' modules
    imported (each registers itself), on the registry's first use (not on import:
    pie.compress.builtin_methods imports this module)."""
    if BUILT_IN:
        return
    import importlib
    from pie.compress import builtin_methods
    BUILT_IN.update(method.name for method in builtin_methods.ALL)
    for method in builtin_methods.ALL:
        _REGISTRY[method.name] = method
    for module in SHIPPED_MODULES:
        importlib.import_module(f"pie.compress.{module}")

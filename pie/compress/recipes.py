"""One recipe per population: what a member's trained weights depend on.

A member's *recipe* is the settings its weights are a function of (with its seed):
the TrainConfig fields config.py names RECIPE_FIELDS (every member),
PRUNED_RECIPE_FIELDS (members of a method other than dense) and the method's own
`option_fields`; `--init_from` enters as its file's SHA-256. Members made from a
finished member (pie.compress.from_parent, pie.stages.quantize) add their parent
population's recipe digest; imported members record what is known (the declared
method and sparsity; each file's digest stays in its meta.json). Settings that
change only speed or the order of float sums (config.EXECUTION_FIELDS) are
recorded in meta.json (`execution`) but are not part of the recipe.

Each member's meta.json holds its recipe (`recipe_settings`) and the manifest's
`recipe` column its short digest. A training run whose recipe for a population
differs from the recorded one stops before anything is written
(`check_run`), naming the differing flags; the analysis stages refuse a manifest
whose population mixes recipes (`check_one_per_population`). Members without a
recorded recipe (workdirs from before it existed) are unknown, never refused.

`recipes(workdir)` is the public reader: {population: recipe settings or None}.
"""
import hashlib
import json

from pie.io import errors, records
from pie.io.workdir import Workdir

COLUMN = records.RECIPE_COLUMN  # the manifest column of the digest
DIGEST_CHARS = 12  # as records.RECIPE_DIGEST checks
UNKNOWN = "unknown"  # a parent population whose recipe is not recorded
WORDS_LIMIT = 400  # characters of a recipe in words (values come from a workdir)


def digest(settings):
    """The short digest of a recipe's settings (canonical JSON, SHA-256)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def init_from_value(init_from):
    """--init_from in a recipe: its file's SHA-256; a per-seed pattern is named as
    given (each member's meta.json holds its own file's digest, `init_from_sha256`)."""
    from pie.compress import lineage
    if not init_from:
        return None
    if lineage.SEED_FIELD in init_from:
        return f"per-seed files {init_from}"
    return "sha256:" + records.file_sha256(init_from)


def member_settings(config, method_name, init_from=None, parent=None):
    """The recipe of `config`'s members of `method_name` (`init_from`: its
    init_from_value; `parent`: the parent population's digest, made-from methods)."""
    from pie.compress import config as config_module, methods
    settings = {name: getattr(config, name) for name in config_module.RECIPE_FIELDS}
    settings["init_from"] = init_from
    # The learning-rate schedule as validated (--lr_decay_epochs parsed: '30, 60' is '30,60').
    settings.update(config.recipe.settings())
    if method_name != methods.DENSE:
        settings.update((name, getattr(config, name))
                        for name in config_module.PRUNED_RECIPE_FIELDS)
        settings["method"] = method_name
        settings.update((name, getattr(config, name))
                        for name in methods.get(method_name).option_fields)
    if parent is not None:
        settings["parent_recipe"] = parent
    return settings


def imported_settings(dataset, method, sparsity):
    """The recipe of imported members: what is known (the declared method and
    sparsity; each file's SHA-256 is in its own meta.json, `source_sha256`)."""
    return {"imported": True, "dataset": dataset, "method": method,
            "sparsity": float(sparsity)}


def quantized_settings(mode, representative_images, parent):
    """The recipe of a post-training quantized member (pie.stages.quantize): the
    conversion and its source population's digest (`parent`, or UNKNOWN)."""
    return {"quantize": mode, "representative_images": representative_images,
            "parent_recipe": parent}


def row_digest(row):
    """A manifest row's recipe digest, or UNKNOWN."""
    value = row.get(COLUMN)
    return value if isinstance(value, str) and value else UNKNOWN


def execution_settings(config):
    """The settings that change only speed or float summation order (meta.json)."""
    from pie.compress import config as config_module
    return {name: getattr(config, name) for name in config_module.EXECUTION_FIELDS}


# ------------------------------------------------------------------ the manifest


def recorded_digests(manifest):
    """{population key: sorted recorded digests} (members without one left out)."""
    if COLUMN not in manifest.columns or manifest.empty:
        return {}
    known = manifest[manifest[COLUMN].notna() & (manifest[COLUMN].astype(str) != "")]
    found = {}
    for method, sparsity, value in zip(known["method"], known["sparsity"], known[COLUMN]):
        found.setdefault(records.variant_key(method, sparsity), set()).add(str(value))
    return {key: sorted(values) for key, values in found.items()}


def check_one_per_population(manifest, path):
    """Fails (ContractError, one line) when a population's members record different
    recipes: they were trained differently and are not one population."""
    for key, values in recorded_digests(manifest).items():
        if len(values) > 1:
            raise records.ContractError(
                f"{path}: population {key} mixes {len(values)} training recipes "
                f"({', '.join(values)}): its members were not trained alike (a hand-merged "
                "or imported workdir?); keep one recipe per population")


def _population_rows(manifest, key):
    """The manifest rows of population `key`."""
    keys = [records.variant_key(method, sparsity)
            for method, sparsity in zip(manifest["method"], manifest["sparsity"])]
    return manifest[[each == key for each in keys]]


def settings_of(workdir, rows, value):
    """The recipe settings of digest `value`, read from the meta.json of a member of
    `rows` (a population's manifest rows) that records it; None when none does (an
    older or hand-edited workdir)."""
    workdir = Workdir(workdir)
    for row in rows[rows[COLUMN].astype(str) == value].to_dict("records"):
        try:
            meta = records.read_json(workdir.member_file(str(row["path"]), "meta"))
        except errors.InputError:
            continue
        settings = meta.get("recipe_settings") if isinstance(meta, dict) else None
        if isinstance(settings, dict) and digest(settings) == value:
            return settings
    return None


def recipes(workdir):
    """{population (variant key, e.g. `dense_0`): its recipe settings (a dict), or
    None when unknown (not recorded, or its members record different recipes)}, for
    every population of the workdir's manifest, in manifest order."""
    manifest = records.read_manifest(workdir, required=False)
    digests = recorded_digests(manifest)
    keys = [records.variant_key(method, sparsity)
            for method, sparsity in zip(manifest["method"], manifest["sparsity"])]
    found = {}
    for key in dict.fromkeys(keys):
        values = digests.get(key, [])
        found[key] = (settings_of(workdir, manifest[[each == key for each in keys]],
                                  values[0]) if len(values) == 1 else None)
    return found


# ------------------------------------------------------------------ a training run


def plan(config, members):
    """{population key: (digest, settings)} of the populations `members` (this
    run's) belong to; parents of made-from methods are this run's populations or
    the workdir's recorded ones."""
    from pie.compress import methods
    init_from = init_from_value(config.init_from)
    manifest = records.read_manifest(config.workdir, required=False)
    recorded = recorded_digests(manifest)
    planned = {}
    # Populations with a parent population after those without (their parents).
    for member in sorted(members, key=lambda m: methods.get(m.method).trains_members):
        key = records.variant_key(member.method, member.sparsity)
        if key in planned:
            continue
        method = methods.get(member.method)
        parent = None
        if method.trains_members:
            parent_key = method.parent_population(config, member)
            if parent_key in planned:
                parent = planned[parent_key][0]
            else:
                values = recorded.get(parent_key, [])
                parent = values[0] if len(values) == 1 else UNKNOWN
        settings = member_settings(config, member.method, init_from, parent)
        planned[key] = (digest(settings), settings)
    return planned


def check_run(config, members):
    """This run's recipes ({population key: (digest, settings)}), after checking
    them against the populations the workdir already has: a population trained
    with another recipe is a UsageError naming the differing flags and both values."""
    planned = plan(config, members)
    manifest = records.read_manifest(config.workdir, required=False)
    recorded = recorded_digests(manifest)
    for key, (value, settings) in planned.items():
        others = [other for other in recorded.get(key, []) if other != value]
        if others:
            before = settings_of(config.workdir, _population_rows(manifest, key), others[0])
            raise errors.UsageError(
                f"population {key} of {Workdir(config.workdir).manifest} was trained with "
                f"another recipe: {differences(before, settings, others[0], value)}; train "
                "this recipe into another workdir, or rerun with the population's flags")
    return planned


def _flag(name, value):
    from pie.compress import config as config_module
    known = (config_module.RECIPE_FIELDS + config_module.PRUNED_RECIPE_FIELDS
             + config_module.METHOD_OPTION_FIELDS)
    if name not in known:
        return f"{name}={value}"
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}=" + ("(unset)" if value is None else str(value))


def differences(before, now, before_digest, now_digest):
    """'--model=mlp there, --model=small_cnn in this run; ...': the settings that
    differ (the digests when the recorded settings are unknown)."""
    if not isinstance(before, dict):
        return (f"recipe {before_digest} there (its settings are not in the members' "
                f"meta.json), {now_digest} in this run")
    names = sorted(set(before) | set(now), key=lambda name: (name not in now, name))
    changed = [name for name in names if before.get(name) != now.get(name)]
    return "; ".join(f"{_flag(name, before.get(name))} there, "
                     f"{_flag(name, now.get(name))} in this run" for name in changed)


# ------------------------------------------------------------------ in words


def words(settings):
    """A recipe in words, e.g. 'small_cnn, mnist5k, 12 epochs, batch 64, adam lr
    0.001, magnitude, polynomial prune schedule'; values are shown as text."""
    if not isinstance(settings, dict):
        return "recipe not recorded"
    get = settings.get
    if get("imported"):
        text = (f"imported files ({get('method')} at sparsity {get('sparsity')}, "
                f"{get('dataset')})")
        return text[:WORDS_LIMIT]
    parts = []
    if get("quantize"):
        parts.append(f"{get('quantize')} conversion")
        if get("representative_images"):
            parts.append(f"{get('representative_images')} representative images")
    if get("model") is not None:
        parts.append(f"{get('model')}" + (f" width {get('width')}" if get("width") else ""))
        parts.append(f"{get('dataset')}")
        parts.append(f"{get('epochs')} epochs")
        parts.append(f"batch {get('batch_size')}")
        parts.append(f"{get('optimizer')} lr {get('learning_rate')}"
                     + (" per 256" if get("lr_per_256") else ""))
    if get("lr_schedule") not in (None, "constant"):
        parts.append(f"{get('lr_schedule')} lr schedule")
    if get("warmup_epochs"):
        parts.append(f"{get('warmup_epochs')} warm-up epochs")
    if get("weight_decay"):
        parts.append(f"weight decay {get('weight_decay')} ({get('weight_decay_mode')})")
    if get("label_smoothing"):
        parts.append(f"label smoothing {get('label_smoothing')}")
    if get("augment") not in (None, "none"):
        parts.append(f"augment {get('augment')}")
    if get("precision") not in (None, "float32"):
        parts.append(f"{get('precision')}")
    if get("init_from"):
        parts.append(f"from {get('init_from')}")
    if get("method"):
        parts.append(_method_words(settings))
    if get("parent_recipe"):
        parts.append(f"parent recipe {get('parent_recipe')}")
    return ", ".join(parts)[:WORDS_LIMIT]


def _method_words(settings):
    from pie.compress import config as config_module
    get = settings.get
    text = f"{get('method')}"
    options = [f"{name} {get(name)}" for name in config_module.METHOD_OPTION_FIELDS
               if name in settings and get(name) is not None]
    if options:
        text += f" ({', '.join(options)})"
    if get("protocol") not in (None, "scratch"):
        text += f", {get('protocol')} {get('prune_schedule')}"
    if get("init_from") or get("protocol") not in (None, "scratch"):
        text += f", {get('finetune_epochs')} fine-tuning epochs"
    if get("schedule") is not None:
        steps = ", ".join(f"{name} {get(name)}" for name in ("begin_step", "end_step",
                                                             "frequency")
                          if get(name) not in (None, -1))
        text += f", {get('schedule')} prune schedule" + (f" ({steps})" if steps else "")
    return text


def population_words(workdir):
    """{population key: its recipe in words}, in manifest order."""
    return {key: words(settings) for key, settings in recipes(workdir).items()}

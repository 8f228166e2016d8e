"""The sections of the report, in a registry keyed by name.

Each section is one small function that turns input files under the workdir into
*blocks* the template renders (figures, tables, image galleries, headline
cards, notes). A section declares the files it needs (`inputs`: without them it
shows "not measured" and the command that produces them) and the files it uses
when present (`optional`). Sections never run a model and never write anything.
"""
import base64
import collections
import dataclasses
import os
from typing import Callable, Tuple

import numpy as np
import pandas as pd

from pie import commands
from pie.analysis import (noise_floor, noise_potential, per_class, pie_labels, robustness,
                          sis, stats, subgroups)
from pie.compress import recipes
from pie.data import toy_data
from pie.io import csv_text, records
from pie.io.workdir import FILES, Workdir
from pie.report import plots
from pie.stages import cost as cost_stage

DASH = "—"  # a value whose input is missing
NOT_APPLICABLE = "n/a"  # a value that does not apply (or is undefined)
PIE_GRID_SIZE = 24
MAX_HEATMAP_COLUMNS = 40  # more distributions: severities averaged per corruption

# Which command writes each input (`{W}` is the workdir): its stage's, from the
# stage table.
PRODUCERS = {"/".join(part for part in (entry.folder, entry.name) if part):
             commands.command(entry.stages[0]) for entry in FILES.values() if entry.stages}

# The columns of each input: its writer's, defined once in the module it names.
COLUMNS = {
    "per_class/tstatistic.csv": per_class.TSTATISTIC_COLUMNS,
    "per_class/tstatistic_summary.csv": per_class.SUMMARY_COLUMNS,
    "pie/pie.csv": pie_labels.PIE_COLUMNS,
    "pie/pie_summary.csv": pie_labels.SUMMARY_COLUMNS,
    "noise_floor/noise_floor.csv": noise_floor.NOISE_FLOOR_COLUMNS,
    "robustness/accuracy.csv": robustness.ACCURACY_COLUMNS,
    "robustness/excess_error.csv": robustness.EXCESS_ERROR_COLUMNS,
    "robustness/prune_potential.csv": robustness.PRUNE_POTENTIAL_COLUMNS,
    "robustness/prune_potential_summary.csv": robustness.PRUNE_POTENTIAL_SUMMARY_COLUMNS,
    "robustness/noise_prune_potential.csv": robustness.NOISE_PRUNE_POTENTIAL_COLUMNS,
    "robustness/excess_error_fit.csv": robustness.EXCESS_ERROR_FIT_COLUMNS,
    "robustness/excess_error_per_seed.csv": robustness.EXCESS_ERROR_SEED_COLUMNS,
    "robustness/noise_similarity.csv": noise_potential.SIMILARITY_COLUMNS,
    "robustness/informative_features.csv": sis.INFORMATIVE_FEATURES_COLUMNS,
    "quantization/cost.csv": cost_stage.COST_COLUMNS,
    "per_class/subgroups.csv": subgroups.SUBGROUP_COLUMNS,
    "toy/results.csv": toy_data.RESULT_COLUMNS,
}
# The stages' tables are read only when their writer lists them in its stamp (with
# their digest): a report embeds what the toolkit wrote, not a file dropped or edited
# into W. Files of W itself (manifest, dataset.json, classes.json, groups.csv) are
# the user's to edit and are validated when read instead.
LISTED_INPUTS = {f"{entry.folder}/{entry.name}": entry.writer for entry in FILES.values()
                 if entry.folder and entry.name.endswith(".csv")}
TOY_STAGE = FILES["toy_results"].writer
TEXT_COLUMNS = ("member_id", "method", "class_name", "distribution", "dataset", "criterion",
                "record_key", "filename", "scenario", "stage", "attribute", "group", "rule",
                "shifted_min_distribution",
                "ceiling_classes", "differences_per_seed", "note", "measure",
                "effect_ci_method", "ci_method", "correction")


# --------------------------------------------------------------------------- context


class Context:
    """What every section reads: the workdir, its manifest and variants, cached tables."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.manifest = records.read_manifest(workdir)
        if self.manifest.empty:
            raise records.ContractError(
                f"{Workdir(workdir).manifest} has no members: nothing to report")
        self.manifest["key"] = [records.variant_key(m, s) for m, s in
                                zip(self.manifest["method"], self.manifest["sparsity"])]
        self.variants = variant_table(self.manifest)
        # Each population's training recipe in words (the header), in variant order.
        known = recipes.population_words(workdir)
        self.recipe_words = [(label, known.get(key, recipes.words(None)))
                             for key, label in zip(self.variants["key"], self.variants["label"])]
        self.colors = plots.method_colors(self.variants["method"])
        self._tables = {}
        self.warnings = []  # what was left out and why; the build logs them

    def warn(self, text):
        """A note for the report that the build also logs."""
        self.warnings.append(text)
        return note(text)

    def path(self, relative):
        return Workdir(self.workdir).path(relative)

    def exists(self, relative):
        return os.path.exists(self.path(relative))

    def table(self, relative):
        """The CSV `relative` (cached), checked for the columns the report reads,
        with a `key` column (the variant key) when it names method and sparsity."""
        if relative not in self._tables:
            frame = read_table(self.path(relative), COLUMNS.get(relative, ()),
                               LISTED_INPUTS.get(relative))
            if {"method", "sparsity"} <= set(frame.columns):
                frame["key"] = [records.variant_key(m, s) for m, s in
                                zip(frame["method"], frame["sparsity"])]
            self._tables[relative] = frame
        return self._tables[relative]

    def command(self, relative):
        return PRODUCERS.get(relative, "the stage that writes it").format(W=self.workdir)

    def class_names(self):
        path = self.path("classes.json")
        return records.read_class_names(path) if os.path.exists(path) else None


def read_table(path, columns, listed_by=None):
    """A CSV with text columns kept as text (a class named 'NA' stays 'NA').

    With `listed_by` (a stage module), only a file that stage's stamp lists, with
    its digest, is read.
    """
    if not os.path.exists(path):
        raise records.ContractError(f"missing input file {path}")
    if os.path.islink(path):
        raise records.ContractError(f"{path} is a link: the report reads only files the "
                                    "stages wrote")
    records.check_written(path, stage=listed_by)
    try:
        header = pd.read_csv(path, nrows=0).columns
        frame = csv_text.unguard(pd.read_csv(path, keep_default_na=False, na_values=[""],
                                             dtype={c: str for c in TEXT_COLUMNS if c in header}))
    except (OSError, EOFError, ValueError) as error:  # empty, cut, a bad number
        raise records.ContractError(f"{path} is not a readable CSV: "
                                    f"{str(error).strip().splitlines()[0]}: rerun the stage "
                                    "that writes it")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise records.ContractError(
            f"{path} lacks columns {missing}: rerun the stage that writes it")
    return frame


def variant_order(method, sparsity):
    """Dense first, then pruning methods by name and sparsity, then quantized ones."""
    return (method != records.DENSE_METHOD, str(method).startswith("quant_"), str(method),
            float(sparsity))


def variant_table(manifest):
    """One row per variant: key, method, sparsity, label, members, top-1 mean and std.

    `members` counts manifest rows; `top1_n` those with a top-1 (a hand-written or
    imported row may leave it empty: the member still counts).
    """
    manifest = manifest.assign(top1=pd.to_numeric(manifest["top1"], errors="coerce"))
    grouped = manifest.groupby(["method", "sparsity"])
    table = grouped.agg(members=("member_id", "size"), top1_n=("top1", "count"),
                        top1_mean=("top1", "mean"), top1_std=("top1", "std")).reset_index()
    table["key"] = [records.variant_key(m, s) for m, s in zip(table["method"], table["sparsity"])]
    table["label"] = [variant_label(m, s) for m, s in zip(table["method"], table["sparsity"])]
    order = sorted(range(len(table)), key=lambda i: variant_order(
        table["method"].iloc[i], table["sparsity"].iloc[i]))
    return table.iloc[order].reset_index(drop=True)


def variant_label(method, sparsity):
    """`magnitude 0.9`; just the method for unpruned ones (dense, quantized)."""
    return method if float(sparsity) == 0 else f"{method} {float(sparsity):g}"


def most_compressed(keys, variants):
    """The variant among `keys` with the highest sparsity (pruning before quantization)."""
    candidates = variants[variants["key"].isin(set(keys))
                          & (variants["method"] != records.DENSE_METHOD)]
    if candidates.empty:
        return None
    order = sorted(range(len(candidates)), key=lambda i: (
        -float(candidates["sparsity"].iloc[i]),
        variant_order(candidates["method"].iloc[i], candidates["sparsity"].iloc[i])))
    return candidates.iloc[order[0]]


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path, folder, record):
    """`(bytes, None)` of the PNG file `path` inside `folder` that a stage recorded
    as `record`, or `(None, why it is left out)`: a missing file, a link, a file
    whose real path leaves `folder`, one other than the file recorded, or one that
    is not a PNG is never embedded."""
    root = os.path.realpath(folder)
    if os.path.islink(path):
        return None, "is a link, not the file written"
    if not os.path.exists(path):
        return None, "is missing"
    if not os.path.isfile(path) or os.path.commonpath([root, os.path.realpath(path)]) != root:
        return None, "is not a regular file inside its folder"
    with open(path, "rb") as handle:
        content = handle.read()
    problem = records.mismatch(path, record, content)
    if problem:
        return None, f"is not the file written ({record.get('bytes')} bytes; {problem})"
    if not content.startswith(PNG_MAGIC):
        return None, "is not a PNG file"
    return content, None


def toy_figures(workdir):
    """`(path, PNG bytes or None, why it is left out or None)` of every figure under
    W/toy: those the toy study's stamps list, then PNG files there they do not list
    (never embedded). Boundary figures first."""
    wd = Workdir(workdir)
    listed = {}
    for stamp in wd.toy_stamps():
        folder = os.path.dirname(stamp)
        for name, record in records.stamp_records(records.read_stamp(stamp)).items():
            # The stamp is workdir content: a name that is not a plain file name of
            # the stamp's own folder ('../x.png', '/x.png') is no figure of it.
            if name.endswith(".png") and name == os.path.basename(name):
                listed[os.path.join(folder, name)] = record
    found = []
    for path in sorted(set(listed) | set(wd.toy_figures()),
                       key=lambda path: (not os.path.basename(path).startswith("boundaries"),
                                         path)):
        if path in listed:
            content, problem = read_png(path, wd.toy_dir, listed[path])
            problem = problem and f"{problem}: rerun {TOY_STAGE}"
        else:
            content, problem = None, "is not listed in the toy study's stamp"
        found.append((path, content, problem))
    return found


def png_uri(png_bytes):
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def figure(png_bytes, alt):
    return {"kind": "figure", "uri": png_uri(png_bytes), "alt": alt}


def table_block(columns, rows, caption=None):
    return {"kind": "table", "columns": list(columns), "rows": [list(r) for r in rows],
            "caption": caption}


def note(text):
    return {"kind": "note", "text": text}


def percent(value, digits=1, missing=DASH):
    """A fraction as a percentage; `missing` for NaN (not measured, or undefined)."""
    return missing if value is None or not np.isfinite(value) else f"{100 * value:.{digits}f}"


def number(value, fmt="{:.2f}", missing=DASH):
    return missing if value is None or not np.isfinite(value) else fmt.format(value)


# -------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    title: str
    short: str  # the link in the page's navigation bar
    what: str  # one sentence: what it shows and how to read it
    inputs: Tuple[str, ...]  # needed: without them the section says "not measured"
    optional: Tuple[str, ...]  # used when present
    build: Callable
    strict: bool = True  # whether --strict requires its inputs


SECTIONS = collections.OrderedDict()


def section(name, title, short, what, inputs=(), optional=(), strict=True):
    """Registers `build(context) -> list of blocks` as the section `name`."""
    def register(build):
        if name in SECTIONS:
            raise ValueError(f"section {name!r} is registered twice")
        SECTIONS[name] = Section(name, title, short, what, tuple(inputs), tuple(optional),
                                 build, strict)
        return build
    return register


def all_inputs(strict_only=False):
    """Every input file the sections read (with `strict_only`, those --strict requires),
    relative to the workdir, in section order."""
    seen = ["population.csv"]
    for spec in SECTIONS.values():
        if strict_only and not spec.strict:
            continue
        for relative in spec.inputs + spec.optional:
            if relative not in seen:
                seen.append(relative)
    return seen


def render_section(spec, context):
    """The section as the template sees it: title, sentence, missing inputs, blocks."""
    missing = [{"file": relative, "command": context.command(relative)}
               for relative in spec.inputs if not context.exists(relative)]
    blocks = [] if missing else spec.build(context)
    return {"name": spec.name, "title": spec.title, "short": spec.short, "what": spec.what,
            "missing": missing,
            "blocks": blocks}


# --------------------------------------------------------------------------- summary

SummaryColumn = collections.namedtuple("SummaryColumn", "key header source")
SUMMARY_COLUMNS = [
    SummaryColumn("variant", "variant", None),
    SummaryColumn("members", "members", "population.csv"),
    SummaryColumn("top1", "top-1 % (mean ± std)", "population.csv"),
    SummaryColumn("hurt", "classes hurt", "per_class/tstatistic_summary.csv"),
    SummaryColumn("helped", "classes helped (lost less than average)",
                  "per_class/tstatistic_summary.csv"),
    SummaryColumn("detectable", "smallest detectable class change (points, 80% power)",
                  "per_class/tstatistic_summary.csv"),
    SummaryColumn("pie_fraction", "PIEs %", "pie/pie_summary.csv"),
    SummaryColumn("top1_pie_heldout", "top-1 % on PIEs, held-out seed (dense → variant)",
                  "pie/pie_summary.csv"),
    SummaryColumn("top1_pie", "top-1 % on PIEs, in-sample (dense → variant)",
                  "pie/pie_summary.csv"),
    SummaryColumn("top1_non_pie_heldout",
                  "top-1 % on non-PIEs, held-out seed (dense → variant)",
                  "pie/pie_summary.csv"),
    SummaryColumn("corrupted", "corrupted top-1 % (mean)", "robustness/accuracy.csv"),
    SummaryColumn("excess", "excess error (points, mean)", "robustness/excess_error.csv"),
    SummaryColumn("floor", "against the noise floor (h v h members: finding · floor; "
                           "above = over the floor's 95th percentile)",
                  "noise_floor/noise_floor.csv"),
    SummaryColumn("gzip", "gzip KiB (mean)", "quantization/cost.csv"),
    SummaryColumn("latency", "latency ms, batch 1 (mean)", "quantization/cost.csv"),
]


def _is_clean(distribution):
    return distribution.astype(str) == records.CLEAN


def _per_key(frame, column):
    return dict(zip(frame["key"], frame[column]))


def _summary_sources(context):
    """{column key: {variant key: formatted cell}} for every input that exists."""
    cells = collections.defaultdict(dict)
    variants = context.variants
    for row in variants.itertuples():
        cells["members"][row.key] = str(row.members)
        if row.top1_n == 0:
            cells["top1"][row.key] = f"{DASH} (no top1 in population.csv)"
            continue
        std = number(100 * row.top1_std, "{:.1f}") if np.isfinite(row.top1_std) else \
            NOT_APPLICABLE
        cells["top1"][row.key] = f"{percent(row.top1_mean)} ± {std}"
    dense_keys = set(variants.loc[variants["method"] == records.DENSE_METHOD, "key"])
    for key in dense_keys:
        for column in ("hurt", "helped", "detectable", "pie_fraction", "top1_pie",
                       "top1_pie_heldout", "top1_non_pie_heldout", "excess", "floor"):
            cells[column][key] = NOT_APPLICABLE
    if context.exists("per_class/tstatistic_summary.csv"):
        summary = context.table("per_class/tstatistic_summary.csv")
        for row in summary.itertuples():
            cells["hurt"][row.key] = with_uncorrected(
                row.n_classes_hurt, row.n_classes_hurt_uncorrected, row.correction)
            helped = with_uncorrected(row.n_classes_helped, row.n_classes_helped_uncorrected,
                                      row.correction)
            if row.n_helped_lost_recall > 0:  # helped only relative to the average
                helped += f" ({row.n_helped_lost_recall:.0f} lost recall)"
            cells["helped"][row.key] = helped
            cells["detectable"][row.key] = number(row.min_detectable_delta_points, "{:.1f}",
                                                  NOT_APPLICABLE)
    if context.exists("pie/pie_summary.csv"):
        pies = context.table("pie/pie_summary.csv")
        for row in pies.itertuples():
            cells["pie_fraction"][row.key] = percent(row.pie_fraction) + (
                f" ({percent(row.pie_tied_share, 0)}% by a tie)" if row.n_pie > 0 else "")
            cells["top1_pie"][row.key] = (f"{percent(row.baseline_top1_pie)} → "
                                          f"{percent(row.variant_top1_pie)}"
                                          if row.n_pie > 0 else NOT_APPLICABLE)
            cells["top1_pie_heldout"][row.key] = _pair(row.top1_on_pie_heldout_dense,
                                                       row.top1_on_pie_heldout_variant)
            cells["top1_non_pie_heldout"][row.key] = _pair(
                row.top1_on_non_pie_heldout_dense, row.top1_on_non_pie_heldout_variant)
    if context.exists("robustness/accuracy.csv"):
        accuracy = context.table("robustness/accuracy.csv")
        # Each member's mean over the corruptions, then the mean over the variant's members.
        per_member = mean_over_corruptions(accuracy, ["key", "member_id"], "top1")
        for key, value in per_member.groupby("key")["top1"].mean().items():
            cells["corrupted"][key] = percent(value)
    if context.exists("robustness/excess_error.csv"):
        excess = mean_over_corruptions(context.table("robustness/excess_error.csv"), ["key"],
                                       "excess_error_mean")
        for key, value in zip(excess["key"], excess["excess_error_mean"]):
            cells["excess"][key] = number(value, "{:+.2f}")
    if context.exists("noise_floor/noise_floor.csv"):
        for key, rows in floor_table(context).groupby("key", sort=False):
            cells["floor"][key] = floor_cell(rows)
    if context.exists("quantization/cost.csv"):
        cost = context.table("quantization/cost.csv").drop(columns=["key"], errors="ignore")
        cost = cost.merge(context.manifest[["member_id", "key"]], on="member_id", how="inner")
        means = cost.groupby("key")[["gzip_bytes", "latency_ms_batch1"]].mean()
        for key, row in means.iterrows():
            cells["gzip"][key] = number(row["gzip_bytes"] / 1024.0, "{:.1f}")
            cells["latency"][key] = number(row["latency_ms_batch1"], "{:.3f}")
    return cells


def with_uncorrected(count, uncorrected, correction):
    """`0 (2 uncorrected)`: the count under the rule, and without a correction."""
    text = f"{count:.0f}"
    if correction != "none" and np.isfinite(uncorrected):
        text += f" ({uncorrected:.0f} uncorrected)"
    return text


FLOOR_LABELS = {"pie_share": "PIEs", "hurt_classes": "hurt", "helped_classes": "helped",
                "dense_top1_on_disagreement": "dense top-1 on PIEs",
                "excess_error": "excess error"}


def floor_value(measure, value):
    """A noise-floor value in the units the report uses (percent, classes, points)."""
    if measure in ("pie_share", "dense_top1_on_disagreement"):
        return f"{percent(value, missing=NOT_APPLICABLE)}%"
    if measure == "excess_error":
        return number(value, "{:+.2f}", NOT_APPLICABLE)
    return number(value, "{:.2f}", NOT_APPLICABLE)  # classes: means over splits


def floor_table(context):
    """The clean noise-floor rows (a `key` per variant)."""
    table = context.table("noise_floor/noise_floor.csv")
    return table[table["distribution"].astype(str) == records.CLEAN]


def floor_cell(rows):
    """`5 v 5: PIEs 1.7% · 1.6% above; hurt 0.1 · 0.2; ...`, or the n/a reason."""
    defined = rows[rows["floor_mean"].notna() & rows["variant_value"].notna()]
    if defined.empty:
        notes = [n for n in rows["note"].dropna().astype(str) if n]
        return notes[0] if notes else NOT_APPLICABLE
    half = int(defined["members_per_half"].iloc[0])
    parts = [f"{FLOOR_LABELS[r.measure]} {floor_value(r.measure, r.variant_value)} · "
             f"{floor_value(r.measure, r.floor_mean)}" + (" above" if r.exceeds_floor else "")
             for r in defined.itertuples()]
    return f"{half} v {half}: " + "; ".join(parts)


def floor_statement(context):
    """The findings above their noise floor and those within it, in words."""
    if not context.exists("noise_floor/noise_floor.csv"):
        return None
    table = floor_table(context)
    labels = dict(zip(context.variants["key"], context.variants["label"]))
    defined = table[table["floor_mean"].notna() & table["variant_value"].notna()]
    if defined.empty:
        notes = [n for n in table["note"].dropna().astype(str) if n]
        return ("Noise floor " + (notes[0] if notes else "n/a") + ": no finding can be "
                "compared with what seed noise alone shows.")
    first = defined.iloc[0]
    def listed(rows):
        by_variant = collections.OrderedDict()
        for row in rows.itertuples():
            by_variant.setdefault(labels.get(row.key, row.key), []).append(
                FLOOR_LABELS[row.measure])
        return "; ".join(f"{variant}: {', '.join(names)}"
                         for variant, names in by_variant.items()) or "none"
    return (f"Against the noise floor (two halves of the dense population compared with "
            f"each other, {int(first['members_per_half'])} members each, "
            f"{int(first['splits'])} splits; each variant measured at the same size): "
            f"above the floor's 95th percentile: {listed(defined[defined['exceeds_floor']])}. "
            f"Within what seed noise alone shows: "
            f"{listed(defined[~defined['exceeds_floor'].astype(bool)])}.")


def small_population_statement(context):
    """Which populations have fewer than stats.SMALL_POPULATION members, in words."""
    small = context.variants[context.variants["members"] < stats.SMALL_POPULATION]
    if small.empty:
        return None
    return (f"Populations of fewer than {stats.SMALL_POPULATION} members ("
            + ", ".join(f"{row.label}: {row.members}" for row in small.itertuples())
            + "): their tests have little power, so 'no significant class' says little, "
              "and their PIEs are often decided by a tie.")


def _pair(dense, variant):
    """`dense → variant` in percent; n/a when neither is defined (no fold had PIEs)."""
    if not (np.isfinite(dense) or np.isfinite(variant)):
        return NOT_APPLICABLE
    return f"{percent(dense)} → {percent(variant)}"


def mean_std(mean, std, fmt="{:.2f}"):
    """`mean ± std`, just the mean when the std is undefined (one seed)."""
    text = number(mean, fmt)
    return f"{text} ± {fmt.format(std)}" if np.isfinite(std) else text


def prune_potential_block(context):
    """The headline prune potential: one row per pruning method (not per sparsity)."""
    relative = "robustness/prune_potential_summary.csv"
    if not context.exists(relative):
        return note(f"Prune potential not measured: run `{context.command(relative)}`.")
    table = context.table(relative)
    rows = [[row.method, mean_std(row.clean_mean, row.clean_std),
             mean_std(row.shifted_mean, row.shifted_std) if row.n_shifted else NOT_APPLICABLE,
             (f"{number(row.shifted_min)} ({row.shifted_min_distribution})"
              if row.n_shifted else NOT_APPLICABLE),
             row.differences_per_seed if isinstance(row.differences_per_seed, str)
             and row.differences_per_seed else NOT_APPLICABLE,
             difference_text(row._asdict()),
             f"{row.n_seeds:.0f}", f"{row.n_shifted:.0f}"]
            for row in table.itertuples()]
    delta = f"{table['delta'].iloc[0]:g}" if len(table) else "?"
    return table_block(
        ["pruning method", "prune potential clean (mean ± std over seeds)",
         "shifted: mean over distributions (± std over seeds)",
         "shifted: minimum (distribution)", "clean − shifted per seed (seed:difference)",
         "clean − shifted: mean, 95% t interval, paired t-test", "seeds",
         "shifted distributions"], rows,
        caption=f"Prune potential: the largest sparsity whose error stays within delta = "
                f"{delta} points of the dense error, per seed (seed-k members against "
                "dense seed k), then mean ± std over seeds; one value per pruning method. "
                "Shifted: each seed's mean over the corrupted and shifted sets, and the "
                "worst set's seed mean (Liebenwein et al.). Clean − shifted: per seed, its "
                "clean value minus its mean over the shifts, then their mean with the paired "
                "t interval and p-value (approximate below 10 seeds: the values are a few "
                "grid levels)" + ("; monotone: a sparsity passes only when every lower one "
                                  "does" if len(table) and bool(table["monotone"].iloc[0])
                                  else ""))


def mean_over_corruptions(frame, keys, value):
    """Per `keys` group, `value` on the `mean_corruption` rows the robustness stage
    writes (mean over the corruptions every member has), or else the mean over the
    `<corruption>/<severity>` rows. Natural shifts (e.g. imagenet_a) are left out."""
    distribution = frame["distribution"].astype(str)
    stage_mean = frame[distribution == robustness.MEAN_CORRUPTION]
    corruptions = frame[robustness.is_corruption(distribution)]
    computed = corruptions.groupby(keys, as_index=False)[value].mean()
    if stage_mean.empty:
        return computed
    stage_mean = stage_mean.groupby(keys, as_index=False)[value].mean()
    missing = ~computed.set_index(keys).index.isin(stage_mean.set_index(keys).index)
    return pd.concat([stage_mean, computed[missing]], ignore_index=True)


def summary_table(context):
    """Header, rows (one per variant, cells as text) and footnotes of the summary."""
    cells = _summary_sources(context)
    rows = []
    for row in context.variants.itertuples():
        values = {"variant": row.label}
        for column in SUMMARY_COLUMNS[1:]:
            values[column.key] = cells[column.key].get(row.key, DASH)
        rows.append({"key": row.key, "dense": row.method == records.DENSE_METHOD,
                     "cells": [values[c.key] for c in SUMMARY_COLUMNS]})
    # Footnotes are (text, command or None): the template sets commands as code.
    footnotes = []
    missing = collections.OrderedDict()
    for column in SUMMARY_COLUMNS:
        if column.source and not context.exists(column.source):
            missing.setdefault(column.source, []).append(column.header)
    for source, headers in missing.items():
        footnotes.append((f"{DASH} in {', '.join(repr(h) for h in headers)}: {source} is "
                          "missing (not measured); to produce it run",
                          context.command(source)))
    index = {column.key: i for i, column in enumerate(SUMMARY_COLUMNS)}
    absent_rows = [column.header for column in SUMMARY_COLUMNS
                   if column.source and column.source not in missing
                   and any(r["cells"][index[column.key]] == DASH for r in rows)]
    if absent_rows:
        footnotes.append((f"{DASH} in {', '.join(repr(h) for h in absent_rows)}: the file "
                          "exists but has no row for that variant (rerun the stage that "
                          "writes it after adding the variant).", None))
    if context.exists("per_class/tstatistic_summary.csv"):
        rules = context.table("per_class/tstatistic_summary.csv")["rule"].dropna().unique()
        footnotes.append((
            "Classes hurt / helped: significant classes whose recall changed by more (hurt) "
            "or less (helped) than the variant's overall top-1, so a 'helped' class may "
            "still have lost recall (counted in brackets); significance rule: "
            + "; ".join(rules) + " (in brackets: the count without the correction, "
            "p_value <= alpha; classes on which the two populations make fewer errors than "
            "min_errors are 'ceiling' classes, never tested). The smallest detectable class "
            "change is the normalised delta the test finds with 80% probability given the "
            "members and their spread: smaller effects mostly go unseen; n/a where it "
            "would exceed the 200 points the measure can reach.", None))
    if context.exists("pie/pie_summary.csv"):
        footnotes.append((
            "Top-1 on PIEs in-sample: the members that chose the PIEs are scored on them "
            "(inflates the gap); held-out seed: PIEs chosen without one seed's members, "
            "scored on that seed's members, averaged over seeds. PIEs % in brackets: the "
            "share of the PIEs whose flag a tied modal label decided (the tie rule, not "
            "the members).", None))
    for statement in (floor_statement(context), small_population_statement(context)):
        if statement:
            footnotes.append((statement, None))
    footnotes.append((f"{NOT_APPLICABLE}: does not apply (the dense population is the "
                      "baseline), or is undefined (a std over one member, top-1 on PIEs "
                      "without PIEs, power without spread).", None))
    potential = prune_potential_block(context)
    return {"columns": [c.header for c in SUMMARY_COLUMNS], "rows": rows,
            "footnotes": footnotes,
            # Per-method tables printed after the per-variant one (Markdown output).
            "method_tables": [potential] if potential["kind"] == "table" else []}


def markdown_table(summary):
    """The summary table as GitHub Markdown, `|` escaped inside cells."""
    def line(values):
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"
    lines = [line(summary["columns"]), line(["---"] * len(summary["columns"]))]
    lines += [line(row["cells"]) for row in summary["rows"]]
    lines.append("")
    lines += [f"- {text}" + (f" `{command}`" if command else "")
              for text, command in summary["footnotes"]]
    for table in summary.get("method_tables", ()):
        lines += ["", line(table["columns"]), line(["---"] * len(table["columns"]))]
        lines += [line(row) for row in table["rows"]]
        if table.get("caption"):
            lines += ["", table["caption"]]
    return "\n".join(lines) + "\n"


def _headline_cards(context):
    """A few numbers about the most compressed variant, largest type."""
    variants = context.variants
    target = most_compressed(variants["key"], variants)
    dense = variants[variants["method"] == records.DENSE_METHOD]
    if target is None:
        return []
    cards = []
    if not dense.empty:
        cards.append({"value": f"{percent(dense['top1_mean'].iloc[0])} → "
                               f"{percent(target['top1_mean'])} %",
                      "label": f"top-1, dense → {target['label']}"})
    floors = (floor_table(context) if context.exists("noise_floor/noise_floor.csv")
              else None)
    if context.exists("per_class/tstatistic_summary.csv"):
        summary = context.table("per_class/tstatistic_summary.csv")
        row = summary[summary["key"] == target["key"]]
        if len(row):
            cards.append(classes_card(row.iloc[0]))
            cards.append({
                "value": f"{number(row['min_detectable_delta_points'].iloc[0], '{:.1f}', NOT_APPLICABLE)} "
                         "points",
                "label": f"smallest class change the test detects at 80% power with "
                         f"{int(row['n_baseline'].iloc[0])} dense and "
                         f"{int(row['n_variant'].iloc[0])} compressed members"})
    if context.exists("pie/pie_summary.csv"):
        pies = context.table("pie/pie_summary.csv")
        row = pies[pies["key"] == target["key"]]
        if len(row):
            row = row.iloc[0]
            cards.append({"value": f"{percent(row['pie_fraction'])} %",
                          "label": f"of eval images are PIEs ({int(row['n_pie'])}; "
                                   f"{percent(row['pie_tied_share'], 0, NOT_APPLICABLE)}% "
                                   "of them decided by a tie)"})
            cards.append({"value": f"{percent(row['top1_on_pie_heldout_variant'])} %",
                          "label": f"its top-1 on PIEs, held-out seed (dense: "
                                   f"{percent(row['top1_on_pie_heldout_dense'])} %; "
                                   f"in-sample {percent(row['baseline_top1_pie'])} → "
                                   f"{percent(row['variant_top1_pie'])} %)"})
    if floors is not None:
        cards += floor_cards(floors[floors["key"] == target["key"]])
    if context.exists("robustness/prune_potential_summary.csv"):
        potential = context.table("robustness/prune_potential_summary.csv")
        row = potential[potential["method"] == target["method"]]
        if len(row):
            row = row.iloc[0]
            cards.append({"value": mean_std(row["clean_mean"], row["clean_std"]),
                          "label": f"prune potential of {target['method']} (clean, mean ± "
                                   f"std over {int(row['n_seeds'])} seeds; shifted mean "
                                   f"{number(row['shifted_mean'], missing=NOT_APPLICABLE)}, "
                                   f"min {number(row['shifted_min'], missing=NOT_APPLICABLE)}; "
                                   f"{difference_text(row)})"})
    return [{"kind": "cards", "title": f"Most compressed variant: {target['label']}",
             "cards": cards}] if cards else []


def difference_text(row):
    """The paired clean - shifted comparison of a prune potential summary row."""
    if not row["n_paired_seeds"] or not np.isfinite(row["difference_mean"]):
        return "clean − shifted: n/a"
    approximate = ", approximate: few seeds" if row["ci_approximate"] else ""
    return (f"clean − shifted {row['difference_mean']:+.3f} (95% interval "
            f"{number(row['difference_ci_low'], '{:+.3f}', NOT_APPLICABLE)} to "
            f"{number(row['difference_ci_high'], '{:+.3f}', NOT_APPLICABLE)}{approximate}), "
            f"paired t-test p = {number(row['difference_p_value'], '{:.3g}', NOT_APPLICABLE)}, "
            f"lower under shift for {int(row['n_seeds_lower_shifted'])} of "
            f"{int(row['n_paired_seeds'])} seeds")


def floor_cards(rows):
    """'PIEs 4.0% · noise floor 1.6%' and the other findings beside their floor."""
    defined = rows[rows["floor_mean"].notna() & rows["variant_value"].notna()]
    if defined.empty:
        notes = [n for n in rows["note"].dropna().astype(str) if n]
        return [{"value": "noise floor n/a", "label": notes[0] if notes else ""}] if len(
            rows) else []
    half, splits = int(defined["members_per_half"].iloc[0]), int(defined["splits"].iloc[0])
    cards = []
    for row in defined.itertuples():
        cards.append({
            "value": f"{FLOOR_LABELS[row.measure]} {floor_value(row.measure, row.variant_value)}"
                     f" · noise floor {floor_value(row.measure, row.floor_mean)}",
            "label": (f"{'above' if row.exceeds_floor else 'within'} the noise floor (95th "
                      f"percentile {floor_value(row.measure, row.floor_q95)}): a {half}-member "
                      f"half against a dense half, mean of {splits} splits; floor: two dense "
                      "halves")})
    return cards


def classes_card(row):
    """The hurt / helped card: what 'helped' means, and the raw recall change."""
    def change(value):
        return number(100 * value, "{:+.1f}", NOT_APPLICABLE) if np.isfinite(value) else \
            NOT_APPLICABLE
    helped = int(row["n_classes_helped"])
    lost = int(row["n_helped_lost_recall"])
    uncorrected = (f" ({int(row['n_classes_hurt_uncorrected'])} / "
                   f"{int(row['n_classes_helped_uncorrected'])} uncorrected)"
                   if row["correction"] != "none" else "")
    return {"value": f"{int(row['n_classes_hurt'])} / {helped}{uncorrected}",
            "label": f"classes significantly hurt / helped ({row['rule']}; "
                     f"{int(row['n_classes_ceiling'])} ceiling classes not tested); "
                     f"helped = lost less than the "
                     f"average ({lost} of {helped} still lost recall). Raw recall change, "
                     f"mean points: hurt {change(row['recall_change_hurt'])}, helped "
                     f"{change(row['recall_change_helped'])}"}


@section("summary", "Summary: one row per variant", "summary",
         "Each row is a population (all members sharing method and sparsity); read "
         "across a row to see what the variant saves (size, latency) against what it "
         "loses (accuracy, classes, PIEs, robustness), and compare rows with the dense "
         "one.",
         inputs=("population.csv",),
         optional=tuple(dict.fromkeys(c.source for c in SUMMARY_COLUMNS[1:]))
         + ("robustness/prune_potential_summary.csv",))
def summary_section(context):
    table = summary_table(context)
    method_tables = table.pop("method_tables")
    return (_headline_cards(context) + [{"kind": "summary", **table}]
            + (method_tables or [prune_potential_block(context)]))


# ------------------------------------------------------------------------- accuracy


@section("top1", "Top-1 accuracy against sparsity", "top-1",
         "Each line is one method's mean top-1 over its members, the band spans the "
         "best and worst member and dots are single members: a flat line means "
         "compression costs little accuracy overall.",
         inputs=("population.csv",))
def top1_section(context):
    members = context.manifest[["method", "sparsity", "top1"]]
    return [figure(plots.top1_against_sparsity(members, context.colors),
                   "top-1 accuracy against sparsity per method")]


@section("significant_classes", "Classes significantly hurt or helped", "classes",
         "Number of classes whose recall changes more than the overall accuracy does "
         "(a test across members per variant, named with its rule in the table): solid "
         "lines count classes hurt, dashed lines classes helped (lost less than the "
         "average, not necessarily gained); rising lines mean the damage is not spread "
         "evenly. The table says how large a change the test could detect.",
         inputs=("per_class/tstatistic_summary.csv",))
def significant_classes_section(context):
    summary = context.table("per_class/tstatistic_summary.csv")
    labels = dict(zip(context.variants["key"], context.variants["label"]))
    order = {key: i for i, key in enumerate(context.variants["key"])}
    rows = sorted(summary.itertuples(), key=lambda r: order.get(r.key, len(order)))
    return [figure(plots.significant_classes(summary, context.colors),
                   "significant classes against sparsity"),
            table_block(
                ["variant", "members dense / variant", "classes tested", "hurt (uncorrected)",
                 "helped (uncorrected; of which lost recall)",
                 "ceiling classes (too few errors, not tested)",
                 "smallest detectable class change (points, 80% power)", "rule"],
                [[labels.get(r.key, r.key),
                  f"{r.n_baseline:.0f} / {r.n_variant:.0f}"
                  + (f" ({r.n_pairs:.0f} pairs by seed)" if r.n_pairs > 0 else "")
                  + (" (little power)" if r.small_population else ""),
                  f"{r.n_classes_tested:.0f}",
                  f"{r.n_classes_hurt:.0f} ({r.n_classes_hurt_uncorrected:.0f})",
                  f"{r.n_classes_helped:.0f} ({r.n_classes_helped_uncorrected:.0f}; "
                  f"{r.n_helped_lost_recall:.0f})",
                  f"{r.n_classes_ceiling:.0f}" + (f": {r.ceiling_classes}"
                                                  if isinstance(r.ceiling_classes, str)
                                                  and r.ceiling_classes else ""),
                  number(r.min_detectable_delta_points, "{:.1f}", NOT_APPLICABLE), r.rule]
                 for r in rows],
                caption="Power: a class whose normalised change is smaller than the "
                        "detectable one is likely to be missed, so few significant "
                        "classes with few members means little. Helped = lost less "
                        "than the average; classes whose members never vary, and ceiling "
                        "classes (the two populations together make fewer errors than "
                        "min_errors, by default one per member of the smaller population), "
                        f"are not tested. Fewer than {stats.SMALL_POPULATION} members in a "
                        "population: little power")]


@section("class_delta", "Per-class change in the most compressed variant", "per class",
         "Each bar is one class's normalised delta (its recall change minus the overall "
         "top-1 change, in points), sorted: red bars are classes that lost more than "
         "average, blue ones lost less than average (or gained), pale bars are not "
         "significant.",
         inputs=("per_class/tstatistic.csv",))
def class_delta_section(context):
    table = context.table("per_class/tstatistic.csv")
    target = most_compressed(table["key"], context.variants)
    if target is None:
        return [note("no compressed variant in per_class/tstatistic.csv")]
    rows = table[(table["key"] == target["key"]) & table["normalized_delta"].notna()]
    if rows.empty:
        return [note(f"no class of {target['label']} has a defined normalised delta "
                     "(classes without eval images)")]
    blocks = [figure(plots.class_deltas(rows, f"{target['label']} vs dense"),
                     f"normalised delta per class for {target['label']}")]
    worst = rows.sort_values("normalized_delta", kind="stable")
    worst = worst[worst["normalized_delta"] < 0].head(10)
    if len(worst):
        blocks.append(table_block(
            ["class", "normalised delta (points)", "95% interval of its test",
             "raw recall change (points)", "p-value", "significant"],
            [[row.class_name, f"{100 * row.normalized_delta:+.2f}",
              f"{number(row.effect_ci_low_points, '{:+.2f}')} to "
              f"{number(row.effect_ci_high_points, '{:+.2f}')}",
              number(100 * row.recall_change, "{:+.2f}"),
              number(row.p_value, "{:.3g}", NOT_APPLICABLE),
              "yes" if row.significant else ("ceiling" if row.direction == per_class.CEILING
                                             else "no")]
             for row in worst.itertuples()],
            caption=f"The classes {target['label']} hurts most: normalised delta = recall "
                    "change minus the overall top-1 change; interval: the one that inverts the "
                    "test (Welch or paired t; none for the permutation test), so it excludes "
                    "0 exactly when the uncorrected p <= 0.05; significant: under the "
                    "stage's correction"))
    return blocks


# ------------------------------------------------------------------------------ PIE


def load_eval_images(workdir, image_ids, tfrecord_dir=None):
    """{image_id: raw uint8 image} for `image_ids`.

    Reads the PIE TFRecords of the variant when they exist (small: PIEs only),
    otherwise streams the workdir's eval split until every id is found.
    """
    from pie.data import sources  # TensorFlow loads only when images are drawn

    wanted = np.asarray(sorted(set(int(i) for i in image_ids)), np.int64)
    if tfrecord_dir and os.path.isdir(tfrecord_dir):
        source = sources.load(sources.TFRECORD_PREFIX + tfrecord_dir)
    else:
        source = sources.load_for_workdir(workdir)
    found = {}
    for batch in source.eval_raw().batch(512).as_numpy_iterator():
        keep = np.flatnonzero(np.isin(batch["image_id"], wanted))
        found.update(zip(batch["image_id"][keep].tolist(), batch["image"][keep]))
        if len(found) == len(wanted):
            break
    return found


def _class_name(names, class_id):
    class_id = int(class_id)
    return names[class_id] if names and 0 <= class_id < len(names) else str(class_id)


@section("pie_grid", "Pruning Identified Exemplars of the most compressed variant", "PIEs",
         "Eval images where the compressed population's most common prediction differs "
         "from the dense population's: each shows the true label and both modal "
         "predictions (green = right, red = wrong), the ones the dense models got right "
         "first: these are the images compression forgot.",
         inputs=("pie/pie.csv", "dataset.json"),
         optional=("classes.json",))
def pie_grid_section(context):
    dataset = records.read_json(context.path("dataset.json"))
    if dataset.get("family") == "toy":
        return [note("the dataset is a toy set of 2-D points: there are no images to show")]
    pie = context.table("pie/pie.csv")
    target = most_compressed(pie.loc[pie["is_pie"].astype(bool), "key"], context.variants)
    if target is None:
        return [note("no variant has PIEs")]
    rows = pie[(pie["key"] == target["key"]) & pie["is_pie"].astype(bool)].copy()
    rows["forgotten"] = ((rows["baseline_modal_label"] == rows["label"])
                         & (rows["variant_modal_label"] != rows["label"]))
    rows = rows.sort_values(["forgotten", "baseline_agreement", "variant_agreement",
                             "image_id"], ascending=[False, False, False, True],
                            kind="stable").head(PIE_GRID_SIZE)
    tfrecords = os.path.join(Workdir(context.workdir).pie_tfrecords(target["key"]), "pie")
    try:
        images = load_eval_images(context.workdir, rows["image_id"], tfrecords)
    except (ValueError, OSError) as error:
        return [note(f"PIE images unavailable: {error}")]
    names = context.class_names() or dataset.get("class_names")
    items = []
    for image_id, label, dense, variant in zip(rows["image_id"], rows["label"],
                                               rows["baseline_modal_label"],
                                               rows["variant_modal_label"]):
        if int(image_id) not in images:
            continue
        items.append({
            "uri": png_uri(plots.image_png(images[int(image_id)])),
            "image_id": int(image_id),
            "labels": [("true", _class_name(names, label), None),
                       ("dense", _class_name(names, dense), dense == label),
                       ("variant", _class_name(names, variant), variant == label)],
        })
    n_pie = int(pie.loc[pie["key"] == target["key"], "is_pie"].astype(bool).sum())
    return [{"kind": "gallery", "tiles": items,
             "caption": f"{len(items)} of the {n_pie} PIEs of {target['label']}: 'dense' and "
                        f"'variant' are the modal predictions of the dense population and "
                        f"of {target['label']}"}]


# ------------------------------------------------------------------------ subgroups


@section("subgroups", "Groups of images the most compressed variant hurts most", "groups",
         "Each bar is one group of eval images (an attribute value): how much more of the "
         "group's images the compressed population gets wrong than the dense one does, "
         "beyond the change over all images (points); red = the group pays more than "
         "average, pale = not significant (the stage's test across members and its correction).",
         inputs=("per_class/subgroups.csv",), strict=False)
def subgroups_section(context):
    table = context.table("per_class/subgroups.csv")
    target = most_compressed(table["key"], context.variants)
    if target is None:
        return [note("no compressed variant in per_class/subgroups.csv")]
    rows = table[table["key"] == target["key"]].copy()
    rows["label"] = rows["attribute"].astype(str) + " = " + rows["group"].astype(str)
    rows["significant"] = rows["significant"].astype(str).str.lower().isin(("true", "1"))
    # The table's sign: positive = more error than the overall change (the group pays).
    rows["change"] = rows["error_change_vs_overall"]
    blocks = [figure(plots.group_changes(rows, f"{target['label']} vs dense"),
                     f"error change per group for {target['label']}")]
    blocks.append(table_block(
        ["attribute", "group", "share of images %", "share of PIEs %",
         "error % (dense → variant)", "error change vs overall (points)",
         "FPR change (points)", "FNR change (points)", "p-value", "significant"],
        [[row.attribute, row.group, percent(row.share),
          percent(row.pie_share, missing=NOT_APPLICABLE),
          f"{percent(row.dense_error)} → {percent(row.variant_error)}",
          number(100 * row.error_change_vs_overall, "{:+.2f}", NOT_APPLICABLE),
          number(100 * row.fpr_change_vs_overall, "{:+.2f}", NOT_APPLICABLE),
          number(100 * row.fnr_change_vs_overall, "{:+.2f}", NOT_APPLICABLE),
          number(row.p_value, "{:.3f}", NOT_APPLICABLE),
          "yes" if row.significant else ("ceiling" if row.direction == per_class.CEILING
                                         else "no")]
         for row in rows.itertuples()],
        caption=f"{target['label']}: a group whose share of PIEs exceeds its share of "
                f"images is over-represented among the images compression forgot; "
                f"{NOT_APPLICABLE} = undefined (FPR and FNR need a binary task, a PIE share "
                "needs PIEs, a p-value two members per population); significant under "
                f"the stage's correction ({rows['correction'].iloc[0]}); ceiling = too few "
                "errors in the group to test"))
    return blocks


# ----------------------------------------------------------------------- robustness


def _distribution_order(distributions):
    """Clean first, then corruptions in the benchmark's order (noise, blur, weather,
    digital, extra) and by severity, other shifts by name, the means last
    (mean_corruption, then one per severity)."""
    from pie.shift.corruptions import ALL_CORRUPTIONS  # no TensorFlow: numpy/scipy only

    def key(name):
        corruption, _, severity = str(name).partition("/")
        if name == records.CLEAN:
            return (0, 0, "", 0)
        if robustness.is_mean([name])[0]:  # mean_corruption, then mean_severity_<k>
            return (2, 0, str(name), 0)
        index = ALL_CORRUPTIONS.index(corruption) if corruption in ALL_CORRUPTIONS else len(
            ALL_CORRUPTIONS)
        return (1, index, corruption, int(severity) if severity.isdigit() else 0)
    return sorted(set(distributions), key=key)


def _by_corruption(frame):
    """`<corruption>/<severity>` renamed `<corruption>` (to average over severities)."""
    names = frame["distribution"].astype(str)
    shifted = robustness.is_corruption(names)
    return frame.assign(distribution=np.where(shifted, names.str.split("/").str[0], names))


def _variant_pivot(context, frame, value):
    """Variant x distribution matrix of `value` (mean over rows), in report order.

    With more distributions than fit a readable heatmap, each corruption's
    severities are averaged into one column.
    """
    if frame["distribution"].nunique() > MAX_HEATMAP_COLUMNS:
        frame = _by_corruption(frame)
    pivot = frame.pivot_table(index="key", columns="distribution", values=value,
                              aggfunc="mean")
    keys = [k for k in context.variants["key"] if k in pivot.index]
    columns = _distribution_order(pivot.columns)
    labels = context.variants.set_index("key").loc[keys, "label"].tolist()
    return pivot.loc[keys, columns], labels, columns


@section("corruptions", "Accuracy under corruption", "corruptions",
         "Mean top-1 of each variant (rows) on each corrupted eval set (columns: "
         "corruption/severity, or each corruption's mean over severities when there are "
         "many; 'clean' first, then the mean over all corruptions and, when several "
         "severities ran, the mean at each severity): compare a row with the dense row to "
         "see which shifts the compressed models handle worse.",
         inputs=("robustness/accuracy.csv",),
         optional=("robustness/excess_error.csv", "robustness/prune_potential.csv"))
def corruptions_section(context):
    accuracy = context.table("robustness/accuracy.csv")
    matrix, labels, columns = _variant_pivot(context, accuracy, "top1")
    blocks = [figure(plots.heatmap(100 * matrix.to_numpy(float), labels, columns,
                                   "top-1 (%)"), "top-1 per variant and corruption")]
    if context.exists("robustness/excess_error.csv"):
        excess = context.table("robustness/excess_error.csv")
        excess = excess[~_is_clean(excess["distribution"])]
        matrix, labels, columns = _variant_pivot(context, excess, "excess_error_mean")
        blocks.append(note("Excess error: the variant's extra error on the shifted set "
                           "minus the dense population's (points); red = the shift hurts the "
                           "compressed models more than the dense ones."))
        blocks.append(figure(plots.heatmap(matrix.to_numpy(float), labels,
                                           columns, "excess error (points)", cmap="RdBu_r",
                                           center=0.0, fmt="{:+.1f}"),
                             "excess error per variant and corruption"))
    else:
        blocks.append(note("Excess error not measured: run "
                           f"`{context.command('robustness/excess_error.csv')}`."))
    if context.exists("robustness/prune_potential.csv"):
        potential = context.table("robustness/prune_potential.csv")
        potential = potential.assign(cell=[
            f"{mean_std(m, s)} (population means: {number(p)})"
            for p, m, s in zip(potential["prune_potential"],
                               potential["prune_potential_seed_mean"],
                               potential["prune_potential_seed_std"])])
        pivot = potential.pivot(index="distribution", columns="method", values="cell")
        delta = (f" delta = {potential['delta'].iloc[0]:g} points;"
                 if "delta" in potential.columns and len(potential) else "")
        blocks.append(table_block(
            ["distribution"] + list(pivot.columns),
            [[name] + [pivot.loc[name, m] if isinstance(pivot.loc[name, m], str) else DASH
                       for m in pivot.columns]
             for name in _distribution_order(pivot.index)],
            caption="Prune potential per pruning method: the largest sparsity whose error "
                    "stays within delta of the dense error, per seed, mean ± std over seeds "
                    f"(in brackets: from the population means);{delta} higher = more can "
                    "be pruned for free"))
    return blocks


def _fit_distribution(fits):
    """The distribution the excess-error fit is shown for: the mean over corruptions when
    the analysis has it, else the shifted set with the most points."""
    names = set(fits["distribution"])
    if robustness.MEAN_CORRUPTION in names:
        return robustness.MEAN_CORRUPTION
    counts = fits.groupby("distribution")["n_points"].sum().sort_index()
    return counts.idxmax()


@section("excess_error_fit", "Excess error against prune ratio", "excess fit",
         "Each dot is one pruned member's excess error (its extra error under shift minus "
         "the dense model's, in points) at its prune ratio; the line is the least-squares "
         "fit through the origin per method and the band its 95% interval (each seed's "
         "points one cluster): a "
         "steeper line means the method loses more robustness per unit of pruning.",
         inputs=("robustness/excess_error_fit.csv", "robustness/excess_error_per_seed.csv"))
def excess_error_fit_section(context):
    fits = context.table("robustness/excess_error_fit.csv")
    if fits.empty:
        return [note("No pruned member with an excess error: the fit needs pruning methods "
                     "(sparsity > 0) evaluated on a shifted set.")]
    distribution = _fit_distribution(fits)
    points = context.table("robustness/excess_error_per_seed.csv")
    points = points[(points["distribution"] == distribution)
                    & points["method"].isin(set(fits["method"]))
                    & (points["sparsity"] > 0)]
    shown = fits[fits["distribution"] == distribution]
    rows = [[row.method, f"{row.slope:+.2f}",
             f"[{number(row.slope_ci_low, '{:+.2f}')}, {number(row.slope_ci_high, '{:+.2f}')}]"
             + (" approximate" if row.ci_approximate else ""),
             str(int(row.n_points)), str(int(row.n_seeds))] for row in shown.itertuples()]
    level = f"{100 * shown['confidence'].iloc[0]:g}%" if len(shown) else "95%"
    return [figure(plots.excess_error_fit(points, shown, context.colors),
                   f"excess error against prune ratio on {distribution}"),
            table_block(["method", "slope (points per unit sparsity)",
                         f"{level} interval (seeds as clusters)", "points", "seeds"], rows,
                        caption=f"Fit on {distribution}: excess error = slope x prune ratio; "
                                "the interval is the cluster-robust t interval over seeds "
                                "(approximate below 10 seeds); "
                                "robustness/excess_error_fit.csv has every distribution")]


@section("noise_similarity", "Functional similarity under input noise", "noise",
         "How often each compressed model predicts the same label as a dense model (left) "
         "and how far apart their softmax outputs are (right) as uniform noise grows; the "
         "grey line is a second, independently trained dense model: curves below it mean "
         "the compressed model behaves less like the dense one than another dense model "
         "does.",
         inputs=("robustness/noise_similarity.csv",),
         optional=("robustness/noise_prune_potential.csv",))
def noise_similarity_section(context):
    table = context.table("robustness/noise_similarity.csv")
    grouped = table.groupby(["method", "sparsity", "eps"], as_index=False)[
        ["agreement_mean", "l2_mean"]].mean().rename(
        columns={"agreement_mean": "agreement", "l2_mean": "l2"})
    is_reference = grouped["method"] == robustness.DENSE_REFERENCE
    reference = grouped[is_reference]
    curves = grouped[~is_reference].copy()
    curves["label"] = [variant_label(m, s) for m, s in zip(curves["method"], curves["sparsity"])]
    order = {key: i for i, key in enumerate(context.variants["label"])}
    curves = curves.sort_values("label", key=lambda labels: labels.map(order), kind="stable")
    blocks = [figure(plots.noise_similarity(curves, reference if len(reference) else None,
                                            context.colors),
                     "agreement and softmax distance against noise level")]
    if context.exists("robustness/noise_prune_potential.csv"):
        potential = context.table("robustness/noise_prune_potential.csv")
        if len(potential):
            delta = potential["delta"].iloc[0]
            # files without `rule` were written with the population-mean rule
            per_parent = "rule" in potential.columns and (
                potential["rule"].iloc[0] == "per_parent")
            reference, line = (
                ("its own dense parent's error on the same noisy images (each pruned model "
                 "against the network it was pruned from, Lost in Pruning's rule)",
                 "the line is the mean over seeds and draws") if per_parent else
                ("the dense population's mean error on the same noisy images (population "
                 "means)", "the line is the mean over draws"))
            blocks.append(note(
                "Noise prune potential: for each noise draw, the largest prune ratio whose "
                f"error on the noisy images exceeds {reference} by no more than {delta:g} "
                f"points; {line}, the band ± the median absolute deviation. Falling with "
                "eps = pruned models lose their headroom under noise."))
            blocks.append(figure(plots.noise_prune_potential(potential, context.colors),
                                 "noise prune potential against noise level"))
    else:
        blocks.append(note("Noise prune potential not measured: rerun "
                           f"`{context.command('robustness/noise_prune_potential.csv')}`."))
    return blocks


def _selection_note(table):
    """Which method chose the features (the stage's --method, its `selection` column)."""
    def first(column, default=None):
        return table[column].iloc[0] if column in table.columns and len(table) else default
    selection = first("selection", "gradient")
    fraction = first("fraction")
    share = f"the last-removed {fraction:.0%}" if fraction is not None else "the last removed"
    patch = int(first("patch", 1))
    unit = "pixels" if patch == 1 else f"{patch}x{patch} patches"
    features = f" of {int(first('features'))}" if "features" in table.columns else ""
    if selection == "sis":
        no_sis = int(table["no_sis"].sum()) if "no_sis" in table.columns else 0
        return (f"Features: each model's sufficient input subset (Carter et al.) over {unit}, "
                f"the smallest set of last-removed features{features} that alone keeps its "
                f"confidence in its predicted class at or above {first('sis_threshold'):g}; "
                f"{no_sis} image x pair rows had no such subset (whole input below the "
                "threshold) and are left out.")
    if selection == "ranking":
        return (f"Features ranked by backward selection at threshold 0 (Lost in Pruning's "
                f"use of SIS) over {unit}: {share}{features} features, removing at each "
                "step the one whose removal lowers the model's confidence least (a "
                "ranking, not a sufficient subset).")
    return ("Features chosen by the input x gradient proxy (|x · d logit / d x|, the top "
            "share of input elements), not backward selection: rerun with "
            "`--method=sis` (sufficient subsets) or `--method=ranking` (Lost in Pruning's "
            "selection).")


@section("informative_features", "Informative features", "features",
         "Each bar is the overlap (IoU) between the input features that most drive a "
         "compressed model's decisions (the top 10% by default) and those of the dense "
         "model of the same seed; the "
         "grey line is the overlap between two dense models: bars short of it mean the "
         "compressed model looks at different evidence.",
         inputs=("robustness/informative_features.csv",))
def informative_features_section(context):
    table = context.table("robustness/informative_features.csv")
    is_reference = table["method"] == robustness.DENSE_REFERENCE
    labels = dict(zip(context.variants["key"], context.variants["label"]))
    order = {key: i for i, key in enumerate(context.variants["key"])}
    variants = table[~is_reference].assign(
        label=lambda t: [labels.get(k, k) for k in t["key"]],
        order=lambda t: [order.get(k, len(order)) for k in t["key"]]).sort_values(
        "order", kind="stable")
    reference = table[is_reference]
    reference_iou = float(reference["iou_mean"].mean()) if len(reference) else None
    blocks = [note(_selection_note(table))]
    if len(variants):
        blocks.append(figure(plots.overlap_bars(variants, reference_iou, context.colors),
                             "feature overlap with the dense model per variant"))
    def cells(row):
        iou = number(row.iou_mean, "{:.3f}")
        if np.isfinite(row.iou_std):  # undefined over one pair
            iou += f" ± {row.iou_std:.3f}"
        return [iou, percent(row.conf_own_mask), percent(row.conf_other_mask),
                percent(row.reference_conf_own_mask), percent(row.reference_conf_other_mask)]
    rows = [[row.label] + cells(row) for row in variants.itertuples()]
    rows += [["another dense model (reference)"] + cells(row) for row in reference.itertuples()]
    blocks.append(table_block(
        ["variant", "IoU with dense (mean ± std over pairs)", "its confidence, own features %",
         "its confidence, dense model's features %", "dense confidence, own features %",
         "dense confidence, its features %"], rows,
        caption="Confidence = softmax probability of the class the model predicts on the "
                "whole image, when only the named features are kept (the others set to 0); "
                "a model that stays confident on the other's features relies on similar "
                "evidence"))
    return blocks


# ----------------------------------------------------------------------------- cost


@section("cost", "What each variant costs", "cost",
         "Size of each member's model file after gzip (log scale) against its top-1: "
         "points to the left save storage, points lower lose accuracy; the table gives "
         "the means per variant.",
         inputs=("quantization/cost.csv",))
def cost_section(context):
    cost = context.table("quantization/cost.csv").drop(
        columns=["key", "method", "sparsity"], errors="ignore")
    cost = cost.merge(context.manifest[["member_id", "method", "sparsity", "key"]],
                      on="member_id", how="inner")
    if cost.empty:
        return [note("quantization/cost.csv has no row for any member of the manifest")]
    columns = [c for c in ("params", "nonzero_params", "file_bytes", "gzip_bytes",
                           "latency_ms_batch1", "latency_ms_batch32", "top1")
               if c in cost.columns]
    means = cost.groupby("key")[columns].mean()
    formats = {"params": "{:,.0f}", "nonzero_params": "{:,.0f}", "latency_ms_batch1": "{:.3f}",
               "latency_ms_batch32": "{:.3f}"}
    rows = []
    for row in context.variants.itertuples():
        if row.key not in means.index:
            continue
        values = means.loc[row.key]
        cells = []
        for column in columns:
            if column in ("file_bytes", "gzip_bytes"):
                cells.append(number(values[column] / 1024.0, "{:.1f}"))
            elif column == "top1":
                cells.append(percent(values[column]))
            else:
                cells.append(number(values[column], formats.get(column, "{:.3f}")))
        rows.append([row.label] + cells)
    headers = {"file_bytes": "file KiB", "gzip_bytes": "gzip KiB", "top1": "top-1 %",
               "latency_ms_batch1": "latency ms/image (batch 1)",
               "latency_ms_batch32": "latency ms/image (batch 32)",
               "nonzero_params": "non-zero weights", "params": "weights"}
    return [figure(plots.cost_against_accuracy(cost, context.colors),
                   "gzip size against top-1 per member"),
            table_block(["variant"] + [headers[c] for c in columns], rows,
                        caption="Means over each variant's members")]


# ------------------------------------------------------------------------------ toy


@section("toy", "Toy study: which pruning criterion keeps the decision boundary", "toy",
         "Small networks on 2-D toy data, a third of the hidden units removed by each "
         "criterion from a few reference samples per class: the figures show the decision "
         "boundaries before and after pruning and the accuracy left, the tables the mean "
         "accuracy after pruning (the unpruned accuracy first).",
         inputs=("toy/results.csv",))
def toy_section(context):
    results = context.table("toy/results.csv")
    # Figures first, the decision boundaries before the other figures of the study.
    figures = toy_figures(context.workdir)
    blocks = []
    for path, content, problem in figures:
        relative = os.path.relpath(path, context.workdir)
        if content is None:
            blocks.append(context.warn(
                f"{relative} is not a PNG file of the toy study: left out (it {problem})"))
        else:
            blocks.append(figure(content, relative))
    if not figures:
        blocks.append(note("no figures in toy/: rerun the toy study with --plots"))
    scenarios = {"train": 0, "noisy_test": 1}  # training data first, then the shifted test
    groups = sorted(results.groupby(["dataset", "scenario"]),
                    key=lambda item: (item[0][0], scenarios.get(item[0][1], 2), item[0][1]))
    for (dataset, scenario), rows in groups:
        after = rows[rows["stage"] == "after"].pivot_table(
            index="criterion", columns="samples_per_class", values="accuracy", aggfunc="mean")
        unpruned = rows[rows["stage"] == "before"].groupby("seed")["accuracy"].first().mean()
        seeds = rows["seed"].nunique()
        blocks.append(table_block(
            ["criterion", "unpruned"] + [f"n={n}" for n in after.columns],
            [[criterion, percent(unpruned)] + [percent(v) for v in after.loc[criterion]]
             for criterion in after.index],
            caption=f"{dataset}, {scenario.replace('_', ' ')}: top-1 % after pruning, mean "
                    f"over {seeds} seeds, n = reference samples per class"))
    return blocks


@section("training_curves", "Training curves", "curves",
         "Each population's training loss, accuracy, learning rate and sparsity per "
         "epoch, from its members' history.csv: the line is the mean over seeds, the band "
         "spans the lowest and highest member. A recipe that diverges shows here.",
         inputs=("population.csv",), strict=False)
def training_curves_section(context):  # recipes: pie.report.curves
    from pie.report import curves
    rows, missing = curves.read_histories(context.workdir, context.manifest)
    blocks = [] if rows.empty else [figure(curves.training_curves(rows, context.colors),
                                           "training curves per population")]
    blocks.append(table_block(
        ["variant", "members with a history", "epochs", "final loss", "final accuracy",
         "final learning rate"],
        [[r["label"], f"{r['with_history']} of {r['members']}", number(r["epochs"], "{:d}"),
          number(r["loss"], "{:.4f}"), percent(r["accuracy"]),
          number(r["learning_rate"], "{:.3g}")]
         for r in curves.final_epochs(rows, context.variants)],
        caption="the last epoch of each population's training, mean over its members"))
    if missing:
        blocks.append(note(f"{missing} of {len(context.manifest)} members have no readable "
                           "history.csv (trained before it existed, or imported): left out"))
    return blocks


# Sections kept in their own modules register themselves (frontier, pie_explorer).
from pie.report import frontier_section  # noqa: E402,F401

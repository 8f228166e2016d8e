r"""Build the report: one self-contained HTML page of what compression forgot.

    python -m pie.report.build --workdir=W [--format=html|md] [--out=W/report] [--strict] [--force]

Reads the outputs of the other stages under W (see docs/report.md for which
section reads what) and writes `<out>/index.html`: CSS inline, every figure a
base64 PNG data URI, no scripts, so the file opens anywhere without a server or a
network. Beside it: `frontier.csv` (the cost-versus-forgetting table,
pie.analysis.frontier) and `pies.html` (the PIE explorer, pie.report.explorer).
`--format=md` also writes `<out>/summary.md`, the summary table as Markdown. A section whose inputs are missing says so and names the command that
produces them; `--strict` instead fails (exit 2) when any input is missing.
A rerun whose inputs and options are unchanged since the last build skips.
"""
import datetime
import os

from absl import flags

from pie.analysis import stage_io
from pie.io import cli, records
from pie.io.workdir import FILES, Workdir, stamp_in
from pie.report import explorer, frontier_section, sections

FLAGS = flags.FLAGS
FORMATS = ("html", "md")
STAMP_NAME = "report"
HTML_NAME = FILES["report_html"].name
MARKDOWN_NAME = FILES["report_markdown"].name
FRONTIER_NAME = FILES["report_frontier"].name
EXPLORER_NAME = FILES["report_pies"].name


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only: tests import this module beside other stages."""
    flags.DEFINE_string("workdir", None, "Workdir holding population.csv and the stages' "
                        "outputs; the report goes to <workdir>/report unless --out is given.",
                        flag_values=flag_values)
    flags.DEFINE_enum("format", "html", FORMATS, "html: index.html only; md: index.html and "
                      "summary.md (the summary table as Markdown).", flag_values=flag_values)
    flags.DEFINE_string("out", None, "Output folder (default <workdir>/report).",
                        flag_values=flag_values)
    flags.DEFINE_bool("strict", False, "Fail (exit 2) when any input file is missing, instead "
                      "of marking its sections 'not measured' (per-group results, which need "
                      "image attributes, are never required).", flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Rebuild even when the report is newer than its inputs.",
                      flag_values=flag_values)


class ReportError(cli.UsageError):
    """Bad report input or option."""


def input_paths(workdir):
    """Every file the report reads: the sections' inputs, the toy study's stamps and
    figures."""
    workdir = Workdir(workdir)
    paths = [workdir.path(relative) for relative in sections.all_inputs()]
    paths.append(workdir.classes)
    paths += workdir.toy_stamps() + workdir.toy_figures()
    return list(dict.fromkeys(paths))


def missing_inputs(workdir, strict_only=False):
    return [relative for relative in sections.all_inputs(strict_only)
            if not os.path.exists(Workdir(workdir).path(relative))]


def _environment():
    import jinja2
    # Autoescape on: class names and other dataset strings are text, never markup.
    return jinja2.Environment(loader=jinja2.PackageLoader("pie.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def render_html(context, rendered_sections):
    manifest = context.manifest
    title = (f"{', '.join(sorted(manifest['dataset'].astype(str).unique()))}, "
             f"{', '.join(sorted(manifest['model'].astype(str).unique()))}: "
             f"{len(manifest)} members in {len(context.variants)} populations")
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=title, recipes=context.recipe_words, sections=rendered_sections,
        workdir=context.workdir,
        built=datetime.datetime.now().isoformat(timespec="seconds"))


def validate_args(workdir, fmt, out):
    cli.require_workdir(workdir)
    if fmt not in FORMATS:
        raise ReportError(f"--format={fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")
    if out is not None and os.path.exists(out) and not os.path.isdir(out):
        raise ReportError(f"--out={out} exists and is not a folder")


def build_report(workdir, fmt="html", out=None, strict=False, force=False, log=print,
                 flags_text=None):
    """Writes the report; returns the path of index.html.

    Raises ReportError (strict mode: missing inputs) or records.ContractError
    (no manifest, a malformed input) before anything is written.
    """
    validate_args(workdir, fmt, out)
    out = out or Workdir(workdir).report_dir
    missing = missing_inputs(workdir)
    required = missing_inputs(workdir, strict_only=True)
    if strict and required:
        raise ReportError("--strict: missing inputs " + "; ".join(
            f"{relative} (run `{sections.PRODUCERS.get(relative, '?').format(W=workdir)}`)"
            for relative in required))
    html_path = os.path.join(out, HTML_NAME)
    frontier_path = os.path.join(out, FRONTIER_NAME)
    explorer_path = os.path.join(out, EXPLORER_NAME)
    outputs = [html_path, frontier_path, explorer_path] + (
        [os.path.join(out, MARKDOWN_NAME)] if fmt == "md" else [])
    inputs = input_paths(workdir)
    options = {"format": fmt}
    stamp = stamp_in(out, STAMP_NAME)
    if not force and stage_io.is_up_to_date(workdir, stamp, inputs, outputs, options):
        log(f"report up to date, skipping (--force rebuilds): {html_path}")
        return html_path
    context = sections.Context(workdir)
    rendered = []
    for spec in sections.SECTIONS.values():
        warned = len(context.warnings)
        rendered.append(sections.render_section(spec, context))
        state = "not measured" if rendered[-1]["missing"] else "done"
        log(f"section {spec.name}: {state}")
        for text in context.warnings[warned:]:
            log(f"section {spec.name}: {text}")
    html = render_html(context, rendered)
    # Every page and table is made before the first is written: a bad input writes none.
    frontier_table, _ = frontier_section.frontier_from_context(context)
    explorer_page = explorer.explorer_html(context)
    records.write_text(html_path, html)
    frontier_section.write_frontier_csv(frontier_path, frontier_table)
    records.write_text(explorer_path, explorer_page)
    log(f"frontier table written: {frontier_path}; PIE explorer written: {explorer_path}")
    if fmt == "md":
        summary = sections.summary_table(context)
        records.write_text(outputs[-1], sections.markdown_table(summary))
        log(f"summary table written: {outputs[-1]}")
    if flags_text is not None:
        records.write_text(os.path.join(out, "flags.txt"), flags_text)
    stage_io.write_stamp(workdir, stamp, inputs, outputs, options)
    if missing:
        log(f"not measured (inputs missing): {', '.join(missing)}")
    log(f"report written: {html_path} ({len(html) / 1024:.0f} KiB)")
    return html_path


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    build_report(settings.workdir, settings.format, settings.out, settings.strict, settings.force,
                 flags_text=settings.flags_text)


# The Python API: run(workdir="W", ...) with the flags as keywords (docs/api.md).
run = cli.stage_runner(__name__)


if __name__ == "__main__":
    define_flags()
    cli.run(main)

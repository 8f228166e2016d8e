"""The documented file contracts (docs/*.md) name exactly the columns the code writes."""
import os
import re

import pytest

from pie.analysis import per_class, pie_labels, robustness, subgroups
from pie.io import records

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def documented_columns(doc, file_name):
    """Backticked names in the first cell of the table under the heading naming the file."""
    text = open(os.path.join(DOCS, doc)).read()
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    matching = [s for s in sections if file_name in s.splitlines()[0]]
    assert matching, f"{doc} has no section headed with {file_name}"
    columns = []
    for line in matching[0].splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2 and "---" not in line:
            columns += re.findall(r"`([a-z_0-9]+)`", cells[1])
    return columns


@pytest.mark.parametrize("doc, file_name, columns, exact", [
    ("contracts.md", "population.csv", records.MANIFEST_COLUMNS, False),
    ("contracts.md", "<member_id>.parquet", records.PREDICTION_COLUMNS, False),
    ("analysis.md", "per_class_metrics.csv", per_class.METRICS_COLUMNS, True),
    ("analysis.md", "tstatistic.csv", per_class.TSTATISTIC_COLUMNS, True),
    ("analysis.md", "tstatistic_summary.csv", per_class.SUMMARY_COLUMNS, True),
    ("analysis.md", "pie/pie.csv", pie_labels.PIE_COLUMNS, True),
    ("analysis.md", "pie_summary.csv", pie_labels.SUMMARY_COLUMNS, True),
])
def test_documented_columns_match_the_writers(doc, file_name, columns, exact):
    documented = documented_columns(doc, file_name)
    if exact:
        assert documented == list(columns)
    else:  # the contract documents optional columns after the fixed ones
        assert documented[:len(columns)] == list(columns)


def test_robustness_and_subgroup_columns_are_documented():
    text = open(os.path.join(DOCS, "robustness.md")).read()
    for column in (robustness.ACCURACY_COLUMNS + robustness.EXCESS_ERROR_COLUMNS
                   + robustness.PRUNE_POTENTIAL_COLUMNS
                   + robustness.PRUNE_POTENTIAL_SUMMARY_COLUMNS):
        assert f"`{column}`" in text, column
    text = open(os.path.join(DOCS, "subgroups.md")).read()
    for column in subgroups.SUBGROUP_COLUMNS:
        assert f"`{column}`" in text, column


# ---------------------------------------------------------------------------------
# Every flag, file, column and module that README.md or docs/*.md names exists.

ROOT = os.path.dirname(DOCS)
DOC_FILES = ["README.md"] + sorted(os.path.join("docs", name) for name in os.listdir(DOCS)
                                   if name.endswith(".md"))
# Placeholders the docs write in place of a flag's name.
PLACEHOLDER_FLAGS = {"flags", "name"}
# Flags of other programs that the docs' commands pass.
OTHER_PROGRAMS_FLAGS = {"zone": "gcloud", "version": "gcloud", "command": "gcloud",
                        "logdir": "tensorboard", "durations": "pytest", "upgrade": "pip",
                        "array": "sbatch", "parsable": "sbatch", "gres": "sbatch",
                        "time": "sbatch", "dependency": "sbatch", "for": "kubectl",
                        "timeout": "kubectl"}
# absl's own flags, which every stage has.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok"}
PACKAGES = ("pie", "save_checkpoint", "per_class_accuracy", "pie_dataset_gen",
            "robustness_tests", "benchmarks")
# A name ending like this is a file name, not a module attribute.
FILE_SUFFIXES = ("csv", "parquet", "json", "md", "py", "txt", "keras", "tflite", "html",
                 "png", "cfg", "gz", "j2")


def code_spans(text):
    """The text of each fenced block and each `inline` span of a Markdown text."""
    return re.findall(r"```.*?```|`[^`\n]+`", text, flags=re.DOTALL)


def named_in_docs(pattern, spans_only=True):
    """(doc, match) for every match of `pattern` in the docs' code spans."""
    found = []
    for doc in DOC_FILES:
        text = open(os.path.join(ROOT, doc)).read()
        for span in code_spans(text) if spans_only else [text]:
            found += [(doc, match) for match in re.findall(pattern, span)]
    return found


def defined_flags():
    """Every flag a stage defines (each stage's define_flags into a fresh FlagValues),
    with `no<name>` for booleans, and the flags the benchmark scripts read."""
    import ast
    import importlib
    from absl import flags
    from pie import commands
    names = set(ABSL_FLAGS)
    for module in commands.STAGES.values():
        flag_values = flags.FlagValues()
        importlib.import_module(module).define_flags(flag_values)
        for name in flag_values:
            names.add(name)
            if isinstance(flag_values[name], flags.BooleanFlag):
                names.add(f"no{name}")
    benchmarks = os.path.join(ROOT, "benchmarks")
    for file_name in os.listdir(benchmarks):
        if not file_name.endswith(".py"):
            continue
        source = open(os.path.join(benchmarks, file_name)).read()
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr.startswith("DEFINE_") and node.args
                    and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
        names.update(re.findall(r"[\"']--([a-z][a-z0-9_]*)", source))  # parsed by hand
    return names


def unknown_flags(known):
    named = named_in_docs(r"(?<![\w-])--([a-z][a-z0-9_]*)\b(?!-)")
    return sorted({(doc, name) for doc, name in named
                   if name not in known and name not in PLACEHOLDER_FLAGS
                   and name not in OTHER_PROGRAMS_FLAGS})


def test_every_flag_the_docs_name_is_defined():
    assert unknown_flags(defined_flags()) == []


def test_the_flag_check_fails_when_a_named_flag_is_removed():
    known = defined_flags()
    assert "workers" in known and "seeds" in known
    assert ("README.md", "workers") in unknown_flags(known - {"workers"})


def resolves(dotted):
    """Whether `a.b.c` is a module, or attributes of the longest module prefix."""
    import importlib
    import importlib.util
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, AttributeError, ValueError):
            spec = None
        if spec is None:
            continue
        if cut == len(parts):
            return True
        value = importlib.import_module(name)
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


def test_every_module_the_docs_name_exists():
    named = named_in_docs(r"(?<![\w./-])((?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(PACKAGES))
    missing = sorted({(doc, name) for doc, name in named
                      if not name.endswith(FILE_SUFFIXES) and not resolves(name)})
    assert missing == []


def test_the_module_check_finds_a_missing_attribute():
    assert resolves("pie.io.workdir.Workdir.folder") and resolves("save_checkpoint.train")
    assert not resolves("pie.io.records.analysis_dir")
    assert not resolves("pie.no_such_module")


def workdir_paths():
    from pie.io.workdir import FILES
    return {f"{entry.folder}/{entry.name}" for entry in FILES.values() if entry.folder}


def missing_paths(doc, text):
    """Repo paths in `doc`'s code spans and links that do not exist (a path under
    `pie/` may instead be a workdir file, e.g. `pie/pie.csv`)."""
    top_level = set(os.listdir(ROOT))
    candidates = []
    for span in code_spans(text):
        candidates += [token for token in re.split(r"[\s,;()=\[\]'\"]+", span.strip("`"))
                       if token.split("/")[0] in top_level
                       and ("/" in token or "." in token)]
    folder = os.path.dirname(os.path.join(ROOT, doc))
    links = [os.path.relpath(os.path.join(folder, link), ROOT)
             for link in re.findall(r"\]\(([^)#\s,]+)", re.sub(r"```.*?```|`[^`\n]+`", "", text,
                                                              flags=re.DOTALL))
             if not link.startswith(("http:", "https:", "mailto:"))]
    missing = []
    for path in candidates + links:
        path, _, test_name = path.partition("::")
        if any(mark in path for mark in "<{*…") or path.endswith("NAME.cfg"):
            continue  # a pattern, not one file
        if not os.path.exists(os.path.join(ROOT, path)):
            if path not in workdir_paths():
                missing.append(path)
        elif test_name and not re.search(rf"^def {re.escape(test_name)}\(",
                                         open(os.path.join(ROOT, path)).read(), re.MULTILINE):
            missing.append(f"{path}::{test_name}")
    return missing


@pytest.mark.parametrize("doc", DOC_FILES)
def test_every_file_the_docs_name_exists(doc):
    assert missing_paths(doc, open(os.path.join(ROOT, doc)).read()) == []


def test_the_file_check_finds_a_missing_file_and_test():
    text = ("`pie/io/records.py`, `pie/io/no_such.py`, [x](training.md), [y](nowhere.md), "
            "`tests/test_docs.py::test_no_such_test`, `pie/pie.csv`, `W/anything.csv`")
    assert missing_paths("docs/x.md", text) == [
        "pie/io/no_such.py", "tests/test_docs.py::test_no_such_test", "docs/nowhere.md"]


def written_columns():
    """Every column the library and the stages write: their column lists
    (`*_COLUMNS`), and the keys of the row dicts they build (`{"parent_id": ...}`,
    `row["measured_unit_sparsity"] = ...`: the manifest's extra columns)."""
    import ast
    import importlib
    import pkgutil
    import pie
    from pie import commands
    modules = [info.name for info in pkgutil.walk_packages(pie.__path__, "pie.")
               if not info.name.endswith("__main__")]
    columns = set()
    for name in modules + list(commands.STAGES.values()):
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if attribute.endswith("COLUMNS") and isinstance(value, (list, tuple)):
                columns.update(v for v in value if isinstance(v, str))
        for node in ast.walk(ast.parse(open(module.__file__).read())):
            keys = node.keys if isinstance(node, ast.Dict) else (
                [node.slice] if isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Store) else [])
            columns.update(key.value for key in keys
                           if isinstance(key, ast.Constant) and isinstance(key.value, str))
    return columns


def documented_table_columns():
    """(doc, file, column) for the first-cell names of every table under a heading
    that names a workdir table file (`W/....csv` or `.parquet`)."""
    found = []
    for doc in DOC_FILES:
        text = open(os.path.join(ROOT, doc)).read()
        for section in re.split(r"^#{2,3} ", text, flags=re.MULTILINE)[1:]:
            heading = section.splitlines()[0]
            named = re.findall(r"`(W/[^`]+\.(?:csv|parquet))`", heading)
            if not named:
                continue
            for line in section.splitlines():
                cells = line.split("|")
                if line.startswith("|") and len(cells) > 2 and "---" not in line:
                    found += [(doc, named[0], column)
                              for column in re.findall(r"`([a-z_0-9]+)`", cells[1])]
    return found


def test_every_column_the_docs_document_is_written():
    documented = documented_table_columns()
    assert len({file for _, file, _ in documented}) >= 10  # the check reads the tables
    written = written_columns()
    assert sorted({entry for entry in documented if entry[2] not in written}) == []


def test_the_readme_is_a_front_door():
    """At most about 1,200 words, the two commands verbatim, and no table cell of the
    front-door pages longer than a few hundred characters (figures are one line each
    in docs/benchmarks.md and docs/results.md)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert len(readme.split()) <= 1200
    assert "bash run.sh          # " in readme and "bash run.sh test     # " in readme
    for doc in ("README.md", "docs/benchmarks.md", "docs/results.md", "docs/install.md"):
        for line in open(os.path.join(ROOT, doc)).read().splitlines():
            if line.startswith("|"):
                assert max(len(cell) for cell in line.split("|")) <= 300, (doc, line[:80])


def unlisted_modules(table_text):
    """Modules under pie/ that the architecture table's row of their package does not
    name (as `module`, `module.py` or `module.attribute`)."""
    rows = {}
    for line in table_text.splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            for folder in re.findall(r"`(pie/[a-z_]*/?[a-z_]*(?:\.py)?)`", cells[1]):
                rows[folder] = line
    unlisted = []
    for folder, _, names in os.walk(os.path.join(ROOT, "pie")):
        package = os.path.relpath(folder, ROOT) + "/"
        for name in sorted(names):
            if not name.endswith(".py") or name == "__init__.py":
                continue
            module = name[:-3]
            if package == "pie/":
                listed = f"pie/{name}" in rows
            else:
                listed = package in rows and re.search(
                    rf"`{module}(\.py|\.[A-Za-z_]+)?`", rows[package]) is not None
            if not listed:
                unlisted.append(package + name)
    return unlisted


def test_every_module_under_pie_is_in_the_architecture_table():
    text = open(os.path.join(DOCS, "architecture.md")).read()
    assert unlisted_modules(text) == []
    # The check reads the table: a module taken out of its row is found.
    assert unlisted_modules(text.replace("(`journal`)", "")) == ["pie/io/journal.py"]

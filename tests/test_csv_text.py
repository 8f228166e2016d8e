"""CSV text written column by column (pie.io.csv_text) reads back as pandas' own."""
import io

import numpy as np
import pandas as pd
import pytest

from pie.io import csv_text


def written(frame):
    handle = io.BytesIO()
    csv_text.write(frame, handle)
    return handle.getvalue()


def varied_frame(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    floats = rng.standard_normal(n) * 10.0 ** rng.integers(-320, 300, n)
    floats[:11] = [0.0, -0.0, 1.0, np.nan, np.inf, -np.inf, 1e15, 1e16, 100.0, 5e-324, 1e-5]
    return pd.DataFrame({
        "f64": floats,
        "f32": (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(np.float32),
        "integral": rng.integers(0, 5, n).astype(np.float64),
        "all_nan": np.full(n, np.nan),
        "i64": rng.integers(-10**12, 10**12, n),
        "i32": rng.integers(0, 1000, n).astype(np.int32),
        "flag": rng.random(n) < 0.5,
        "text": rng.choice(["plain", "a,b", 'say "hi"', "line\nbreak", "", None], n),
        "category": pd.Categorical(rng.choice(["p", "q,r"], n)),
        "nullable": pd.array(np.where(rng.random(n) < 0.3, None, 5), dtype="Int64"),
        'odd, "name"': 1,
    })


def test_reads_back_as_the_text_pandas_writes():
    frame = varied_frame()
    ours = pd.read_csv(io.BytesIO(written(frame)))
    theirs = pd.read_csv(io.StringIO(frame.to_csv(index=False)))
    pd.testing.assert_frame_equal(ours, theirs)  # values and inferred dtypes
    assert ours["integral"].dtype == np.float64  # "3.0", not "3"
    np.testing.assert_array_equal(ours["f64"].to_numpy(), frame["f64"].to_numpy())


def test_exact_text():
    frame = pd.DataFrame({"name": ["plain", "a,b", 'say "hi"', None],
                          "x": [0.0, 1.5, np.nan, -2.0], "n": [1, 2, 3, 4],
                          "flag": [True, False, True, False]})
    assert written(frame).decode() == (
        'name,x,n,flag\nplain,0.0,1,True\n"a,b",1.5,2,False\n'
        '"say ""hi""",,3,True\n,-2.0,4,False\n')
    assert written(frame) == frame.to_csv(index=False).encode()


def test_a_carriage_return_is_quoted():
    # pandas' own writer leaves it bare, and its reader then splits the row.
    frame = pd.DataFrame({"text": ["x\ry", "z"], "n": [1, 2]})
    assert written(frame) == b'text,n\n"x\ry",1\nz,2\n'
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(written(frame))), frame)


def test_written_in_slices_gives_the_same_text(monkeypatch):
    frame = varied_frame(n=1000, seed=1)
    whole = written(frame)
    monkeypatch.setattr(csv_text, "ROWS_PER_SLICE", 7)
    assert written(frame) == whole


@pytest.mark.parametrize("column", [
    [0.5, np.nan, 0.25], ["a", None, ""], pd.array([1, None], dtype="Int64"),
    pd.array([True, None], dtype="boolean")])
def test_a_single_column_keeps_its_rows_without_a_value(column):
    frame = pd.DataFrame({"only": column})
    text = written(frame)
    assert text == frame.to_csv(index=False).encode()
    assert len(pd.read_csv(io.BytesIO(text))) == len(frame)


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"mixed": [1, "a", 2.5], "n": [1, 2, 3]}),  # mixed Python objects
    pd.DataFrame({"huge": pd.Series([2**70, 1], dtype=object), "n": [1, 2]}),
    pd.DataFrame({"half": np.array([0.1, 2.5], np.float16)}),
    pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "b"), ("a", "c")])),
    pd.DataFrame({None: [1.5], "n": [1]}),
    pd.DataFrame({"when": pd.to_datetime(["2026-01-01", "2026-06-30"])}),
    pd.DataFrame(),
    pd.DataFrame({"a": [], "b": []}),
])
def test_kinds_not_handled_are_written_by_pandas(frame):
    assert written(frame) == frame.to_csv(index=False, lineterminator="\n").encode()


# ------------------------------------------------------------- spreadsheet-safe text


FORMULA_NAMES = ['=HYPERLINK("http://x","y")', "-neg", "@x", "+1", "\tTab", "\rReturn",
                 "'=already quoted", "plain", "it's", ""]


def test_text_a_spreadsheet_would_evaluate_is_written_behind_a_quote():
    frame = pd.DataFrame({"class_name": FORMULA_NAMES, "change": -0.5,
                          "count": -3})
    lines = written(frame).decode().split("\n")
    assert lines[0] == "class_name,change,count"
    assert lines[1] == '"\'=HYPERLINK(""http://x"",""y"")",-0.5,-3'
    assert lines[2:5] == ["'-neg,-0.5,-3", "'@x,-0.5,-3", "'+1,-0.5,-3"]
    assert lines[5] == "'\tTab,-0.5,-3"
    assert lines[6] == "\"'\rReturn\",-0.5,-3"
    assert lines[7] == "''=already quoted,-0.5,-3"
    assert lines[8:10] == ["plain,-0.5,-3", "it's,-0.5,-3"]


@pytest.mark.parametrize("fallback", [False, True])
def test_guarded_text_reads_back_as_written(fallback, tmp_path):
    """Through records.write_csv and records.read_csv (and pandas' own writer, for
    frames of kinds csv_text leaves to it): the names come back, numbers stay numbers."""
    from pie.io import records
    names = FORMULA_NAMES[:-1] + ["x"]
    if fallback:  # (pandas' writer leaves a lone carriage return unquoted)
        names = [name for name in names if "\r" not in name]
    frame = pd.DataFrame({"class_name": names, "value": -0.5, "-col": np.arange(len(names))})
    if fallback:  # a column of mixed Python objects goes to DataFrame.to_csv
        frame["mixed"] = [1, "=a"] + ["b"] * (len(frame) - 2)
    path = str(tmp_path / "t.csv")
    records.write_csv(path, frame, record=False)
    with open(path) as handle:
        assert "\n'=HYPERLINK" in handle.read().replace('"', "")
    back = records.read_csv(path, ["class_name"])
    assert back["class_name"].tolist() == frame["class_name"].tolist()
    assert back["value"].tolist() == [-0.5] * len(frame)
    assert back["-col"].tolist() == list(range(len(frame)))
    if fallback:
        assert back["mixed"].tolist() == ["1", "=a"] + ["b"] * (len(frame) - 2)


def test_the_report_reads_guarded_class_names_back(tmp_path):
    from pie.io import records
    from pie.report import sections
    path = str(tmp_path / "t.csv")
    records.write_csv(path, pd.DataFrame({"class_name": ["=1+1", "@SUM(A1)", "cat"],
                                          "recall": [-0.25, 0.5, 1.0]}), record=False)
    frame = sections.read_table(path, ["class_name"])
    assert frame["class_name"].tolist() == ["=1+1", "@SUM(A1)", "cat"]
    assert frame["recall"].tolist() == [-0.25, 0.5, 1.0]

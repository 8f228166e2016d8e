"""Tests of pie.io.progress: progress lines on stderr, and the quiet libraries."""
import logging
import warnings

import pytest

from pie.io import progress


def test_progress_line_on_stderr_with_count_rate_and_eta(capsys, monkeypatch):
    clock = iter([100.0, 110.0, 110.0, 110.0])
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    reporter = progress.Progress(4, "members")  # starts at t=100
    reporter.advance(1, "first done")           # t=110: 1 unit in 10 s
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "first done | members 1/4, 6/min, ETA 30s"


def test_rate_per_second_when_fast(capsys, monkeypatch):
    clock = iter([0.0, 2.0, 2.0, 2.0])
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    reporter = progress.Progress(10, "images")
    reporter.advance(6, "batch")
    assert capsys.readouterr().err.strip() == "batch | images 6/10, 3/s, ETA 1s"


def test_format_seconds():
    assert progress.format_seconds(59) == "59s"
    assert progress.format_seconds(61) == "1m01s"
    assert progress.format_seconds(3700) == "1h01m"


def test_negative_total_is_refused():
    with pytest.raises(ValueError, match="total units must be >= 0, got -1"):
        progress.Progress(-1, "x")


def test_quiet_libraries_drops_deprecations_and_retracing(monkeypatch):
    monkeypatch.delenv("PIE_VERBOSE", raising=False)
    progress.quiet_libraries()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        progress.quiet_libraries()  # re-applies its filters on top of 'default'
        warnings.warn("tf.foo is deprecated and will be removed in a future version")
        warnings.warn("a warning a user should see")
    assert [str(w.message) for w in caught] == ["a warning a user should see"]
    record = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1,
                               "5 out of the last 5 calls triggered tf.function retracing",
                               None, None)
    assert not logging.getLogger("tensorflow").filter(record)
    slow = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1,
                             "Callback method `on_train_batch_end` is slow compared to the "
                             "batch time", None, None)
    assert not logging.getLogger("tensorflow").filter(slow)
    kept = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, "a real problem",
                             None, None)
    assert logging.getLogger("tensorflow").filter(kept)
    assert logging.getLogger("tensorflow_datasets").level == logging.ERROR

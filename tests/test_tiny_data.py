"""Tiny data trains with default flags (issue 25.5): the pruning schedule derived
from the run's length fits any run of at least 2 steps, and says so."""
import pytest

from pie.compress import pruning


@pytest.mark.parametrize("total", list(range(2, 40)) + [504, 5003])
def test_default_schedule_fits_every_run_of_two_steps_or_more(total):
    begin, end, frequency = pruning.auto_schedule_steps(total, log=False)
    assert 0 <= begin < end < total and (end - begin) % frequency == 0
    schedule = pruning.make_schedule("polynomial", 0.9, begin_step=begin, end_step=end,
                                     frequency=frequency, total_steps=total)
    assert float(schedule(end)[1]) == pytest.approx(0.9)


def test_schedule_of_long_runs_is_unchanged():
    # 10 updates over 10%-60% of training, as before tiny runs were handled.
    for total in (20, 100, 504, 5003):
        begin, end, frequency = pruning.auto_schedule_steps(total, log=False)
        assert begin == total // 10
        assert frequency == max(1, (total * 6 // 10 - begin) // 10)
        assert end == begin + 10 * frequency


def test_too_short_a_run_names_the_flags():
    with pytest.raises(pruning.PruningError, match=r"^pruning during training needs at least 2 "
                       r"training steps, this run has 1 \(--epochs x steps per epoch\): raise "
                       r"--epochs or --steps_per_epoch, or lower --batch_size$"):
        pruning.auto_schedule_steps(1)
    with pytest.raises(pruning.PruningError, match=r"^end_step \(11\) must be before the last "
                       r"training step \(10: --epochs x steps per epoch\): set --end_step "
                       r"below 10"):
        pruning.make_schedule("polynomial", 0.5, begin_step=1, end_step=11, frequency=1,
                              total_steps=10)


def test_a_run_with_explicit_steps_prints_no_derived_schedule(capsys):
    """--begin_step/--end_step/--frequency given (as --smoke compresses them): the
    schedule is theirs, and no line says another one is used."""
    import types
    from pie.compress import trainer
    run = trainer.Trainer.__new__(trainer.Trainer)
    run.steps_per_epoch = 4
    settings = dict(schedule="polynomial", power=3, initial_sparsity=0.0, epochs=3)
    pruning._short_runs_logged.discard(12)
    run.config = types.SimpleNamespace(begin_step=2, end_step=4, frequency=1, **settings)
    schedule = run._schedule(0.5)
    assert (schedule.begin_step, schedule.end_step, schedule.frequency) == (2, 4, 1)
    assert "pruning schedule:" not in capsys.readouterr().out
    run.config = types.SimpleNamespace(begin_step=-1, end_step=-1, frequency=-1, **settings)
    schedule = run._schedule(0.5)
    assert (schedule.begin_step, schedule.end_step, schedule.frequency) == (1, 7, 1)
    assert capsys.readouterr().out == ("pruning schedule: 12 training steps are too few for "
                                       "10 mask updates: begin_step 1, end_step 7, frequency 1 "
                                       "(6 updates)\n")


# The run with default flags on 2 classes x 10 training images is in
# tests/test_user_tfrecords.py (one run for both situations of issue 25).

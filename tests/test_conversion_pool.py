"""pie.compress.conversion_pool: results in task order from this process and spawned
workers; a worker's error comes back as itself, a dead worker as one line."""
import concurrent.futures
import operator
import os

import pytest

from pie.compress import conversion_pool
from pie.io import errors
from pie.models import loading


def started_pool(workers):
    """A pool whose spawned workers have all started: the next task goes to one."""
    pool = conversion_pool.ConversionPool(workers)
    pool._executor()
    concurrent.futures.wait(pool.started)
    return pool


def test_results_in_task_order_from_every_process():
    tasks = [(base, exponent) for base in range(2, 9) for exponent in (2, 3)]
    with started_pool(2) as pool:
        assert pool.ready_workers() == 1
        assert pool.map(operator.pow, tasks) == [base ** exponent for base, exponent in tasks]
        pids = pool.map(os.getpid, [()])  # one task: in this process
        assert pids == [os.getpid()]


@pytest.mark.parametrize("workers", [1, 2])
def test_done_is_called_once_for_each_task_that_ended(workers):
    tasks = [(base, 2) for base in range(2, 9)]
    finished = []
    pool_of = started_pool if workers > 1 else conversion_pool.ConversionPool
    with pool_of(workers) as pool:
        results = pool.map(operator.pow, tasks, done=finished.append)
    assert results == [base ** 2 for base in range(2, 9)]
    assert sorted(finished) == list(range(len(tasks)))
    finished.clear()
    with pytest.raises(ZeroDivisionError), pool_of(workers) as pool:
        pool.map(operator.truediv, [(1, 1), (1, 0)], done=finished.append)
    assert 1 not in finished  # the failed task is not reported done


def test_a_workers_model_error_is_the_same_line(tmp_path):
    import tf_keras as keras
    bad, good = str(tmp_path / "bad.keras"), str(tmp_path / "good.keras")
    with open(bad, "w") as handle:
        handle.write("not a model")
    keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)]).save(good)
    with pytest.raises(loading.ModelError) as here:
        loading.check_keras(bad)
    with started_pool(2) as pool, pytest.raises(loading.ModelError) as there:
        # The first task goes to the started worker, the second to this process.
        pool.map(loading.check_keras, [(bad,), (good,)])
    assert str(there.value) == str(here.value)


def test_a_dead_worker_is_one_line_naming_its_task():
    with started_pool(2) as pool:
        worker = pool.started[0].result()
        with pytest.raises(conversion_pool.WorkerDied) as died:
            pool.map(os.kill, [(worker, 9), (os.getpid(), 0)], names=["first", "second"])
    assert isinstance(died.value, errors.ModelError)
    assert str(died.value).startswith("first: its conversion process ended without a result (")


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_workers_must_be_a_count(workers):
    with pytest.raises(errors.UsageError) as error:
        conversion_pool.resolve(workers)
    assert str(error.value) == (f"--workers must be an integer >= 0 (0 = one per core), "
                                f"got {workers!r}")


def test_zero_is_one_per_core():
    assert conversion_pool.resolve(0) == os.cpu_count()
    assert conversion_pool.resolve(3) == 3
    assert conversion_pool.default_workers() == min(2, os.cpu_count())

"""The study's stage processes: order by inputs, side by side up to a limit, the timing
stage alone, one output block per stage, a failure stopping the rest."""
import os
import re
import sys

import pytest

from pie import commands
from pie.stages import stage_processes
from pie.stages.stage_processes import Job, StageFailed

# A fake stage: marks itself started and running in FOLDER, optionally waits for other stages'
# start marks (as proof they run beside it) or checks that none runs beside it,
# prints three lines, marks itself finished, exits with CODE.
FAKE_STAGE = r"""
import os, sys, time
folder, name, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
wait_for = [other for other in sys.argv[4].split(",") if other]
alone = sys.argv[5] == "alone"
sleep, patience = float(sys.argv[6]), float(sys.argv[7])
def mark(kind):
    open(os.path.join(folder, f"{kind}_{name}"), "w").close()
running = lambda: sorted(entry for entry in os.listdir(folder) if entry.startswith("running_"))
mark("running")
mark("started")
if alone and running() != [f"running_{name}"]:
    print(f"{name}: beside {running()}"); sys.exit(5)
for other in wait_for:
    deadline = time.time() + patience
    while not os.path.exists(os.path.join(folder, f"started_{other}")):
        if time.time() > deadline:
            print(f"{name}: {other} never ran beside it"); sys.exit(4)
        time.sleep(0.01)
for line in range(3):
    print(f"{name} line {line}", flush=True)
    time.sleep(sleep)
if alone and running() != [f"running_{name}"]:
    print(f"{name}: beside {running()}"); sys.exit(5)
mark("finished")
os.remove(os.path.join(folder, f"running_{name}"))
sys.exit(code)
"""


def fake(folder, name, after=(), code=0, wait_for=(), alone=False, sleep=0.0, patience=60):
    script = os.path.join(folder, "fake_stage.py")
    if not os.path.exists(script):
        with open(script, "w") as handle:
            handle.write(FAKE_STAGE)
    argv = [sys.executable, script, str(folder), name, str(code), ",".join(wait_for),
            "alone" if alone else "-", str(sleep), str(patience)]
    return Job(name, [(name, argv)], after=after, alone=alone)


def run(jobs, limit):
    lines = []
    stage_processes.run_all(jobs, limit, write=lines.append)
    return lines


def finished(folder):
    return sorted(entry[len("finished_"):] for entry in os.listdir(folder)
                  if entry.startswith("finished_"))


def blocks(lines):
    """[(stage, its lines)] in printed order; each stage's lines must be one block."""
    found = []
    for line in lines:
        header = re.match(r"== stage (\S+): ", line)
        if header:
            found.append((header.group(1), []))
        else:
            found[-1][1].append(line)
    return found


def test_two_stages_whose_inputs_are_ready_run_side_by_side(tmp_path):
    # Each waits until the other has started: one after another, both would fail.
    jobs = [fake(tmp_path, "a", wait_for=["b"]), fake(tmp_path, "b", wait_for=["a"])]
    lines = run(jobs, 2)
    assert finished(tmp_path) == ["a", "b"]
    assert [stage for stage, _ in blocks(lines)] == ["a", "b"]


def test_one_at_a_time_never_runs_two(tmp_path):
    jobs = [fake(tmp_path, "a", wait_for=["b"], patience=1), fake(tmp_path, "b")]
    with pytest.raises(StageFailed) as failure:
        run(jobs, 1)
    assert failure.value.code == 4 and str(failure.value) == "stage a failed (exit 4)"
    assert not os.path.exists(tmp_path / "started_b")


def test_a_stage_starts_after_the_stages_it_reads_from(tmp_path):
    order = str(tmp_path / "order")
    os.makedirs(order)
    # c reads a's and b's outputs; b reads a's; d reads nothing and may run any time.
    jobs = [fake(tmp_path, "c", after={"a", "b"}), fake(tmp_path, "b", after={"a"}, sleep=0.05),
            fake(tmp_path, "a", sleep=0.05), fake(tmp_path, "d")]
    lines = run(jobs, 3)
    printed = [stage for stage, _ in blocks(lines)]
    assert sorted(printed) == ["a", "b", "c", "d"]
    assert printed.index("a") < printed.index("b") < printed.index("c")
    assert finished(tmp_path) == ["a", "b", "c", "d"]


def test_a_prerequisite_not_planned_is_not_waited_for(tmp_path):
    lines = run([fake(tmp_path, "b", after={"skipped"})], 2)
    assert [stage for stage, _ in blocks(lines)] == ["b"]


def test_the_timing_stage_runs_alone(tmp_path):
    jobs = [fake(tmp_path, "a", sleep=0.05), fake(tmp_path, "cost", alone=True, sleep=0.05),
            fake(tmp_path, "b", sleep=0.05), fake(tmp_path, "c", sleep=0.05)]
    lines = run(jobs, 4)  # exit 5 if anything ran beside it
    assert finished(tmp_path) == ["a", "b", "c", "cost"]
    assert "cost" in [stage for stage, _ in blocks(lines)]


def test_each_stage_prints_one_whole_block_ending_with_its_times(tmp_path):
    jobs = [fake(tmp_path, name, sleep=0.02) for name in ("a", "b", "c")]
    lines = run(jobs, 3)
    found = blocks(lines)
    assert sorted(stage for stage, _ in found) == ["a", "b", "c"]
    for stage, own in found:
        assert own[:3] == [f"{stage} line {line}\n" for line in range(3)]
        assert re.fullmatch(rf"== stage {stage} done in \d+ s \(cpu \d+ s\)\n", own[3])
        assert len(own) == 4


def test_a_failure_stops_the_stage_beside_it_and_starts_no_other(tmp_path):
    jobs = [fake(tmp_path, "slow", sleep=20), fake(tmp_path, "bad", code=3),
            fake(tmp_path, "later", after={"bad"}), fake(tmp_path, "next")]
    with pytest.raises(StageFailed) as failure:
        run(jobs, 2)
    assert failure.value.code == 3
    assert finished(tmp_path) == ["bad"]  # slow was stopped, later and next never started
    assert not os.path.exists(tmp_path / "started_later")
    assert not os.path.exists(tmp_path / "started_next")


def test_commands_run_in_order_within_a_stage(tmp_path):
    first = fake(tmp_path, "groups")
    second = fake(tmp_path, "subgroups", wait_for=[])
    job = Job("subgroups", first.commands + second.commands)
    lines = run([job], 2)
    assert [stage for stage, _ in blocks(lines)] == ["groups", "subgroups"]


def test_automatic_jobs_is_one_per_core_up_to_the_limit():
    assert stage_processes.automatic_jobs(1) == 1
    assert stage_processes.automatic_jobs(2) == 2
    assert stage_processes.automatic_jobs(64) == stage_processes.MAX_AUTOMATIC_JOBS
    with pytest.raises(ValueError, match="at most 0 stages at once: must be at least 1"):
        stage_processes.run_all([], 0)


def test_the_table_orders_the_study_stages_by_what_they_read():
    assert commands.prerequisites("report") == set(commands.STAGES) - {"report", "study"}
    assert {"corruptions", "predictions", "quantize", "train"} <= commands.prerequisites(
        "noise-floor")
    assert commands.prerequisites("pie-tfrecords") >= {"pies", "predictions", "quantize"}
    assert commands.prerequisites("toy") == set()
    assert [stage.name for stage in commands.TABLE if stage.alone] == ["cost"]
    # Every stage a stage waits for comes before it in the table (the order a study
    # printed before stages ran side by side).
    order = [stage.name for stage in commands.TABLE]
    for stage in commands.TABLE:
        assert all(order.index(other) < order.index(stage.name)
                   for other in commands.prerequisites(stage.name))

import contextlib
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, TINY_POPULATION_FLAGS, error_lines, run_stage
from pie.data import sources
from pie.io import records
from pie.io.workdir import Workdir

import tf_keras as keras

RESUME_FLAGS = ["--dataset=digits", "--model=small_cnn", "--width=4", "--sparsities=0.5",
                "--seeds=1", "--epochs=4"]


def _meta(workdir, member_id):
    manifest = records.read_manifest(workdir).set_index("member_id")
    with open(Workdir(workdir).member_file(manifest.loc[member_id, "path"], "meta")) as f:
        return json.load(f)


def _weights(workdir, member_id):
    manifest = records.read_manifest(workdir).set_index("member_id")
    path = os.path.join(workdir, manifest.loc[member_id, "model_file"])
    return keras.models.load_model(path, compile=False).get_weights()


def test_population_members_and_files(tiny_population):
    manifest = records.read_manifest(tiny_population)
    assert list(manifest["member_id"]) == [
        "dense_0_seed0", "dense_0_seed1", "magnitude_0.5_seed0", "magnitude_0.5_seed1"]
    assert (abs(manifest["measured_sparsity"] - manifest["sparsity"]) <= 0.005).all()
    assert set(manifest["method"]) == {"dense", "magnitude"}
    for row in manifest.to_dict("records"):
        folder = os.path.join(tiny_population, row["path"])
        # besides logs/ and the per-member lock (.train.lock, kept: removing flock files races)
        assert sorted(f for f in os.listdir(folder) if f not in ("logs", ".train.lock")) == [
            "flags.txt", "history.csv", "meta.json", "model.keras"]
        meta = records.read_json(os.path.join(folder, "meta.json"))
        assert meta["top1"] == row["top1"] and 0 < row["top1"] <= 1
        assert set(meta["measured_sparsity_per_layer"]) == {"conv1", "conv2", "dense1"}
        assert "--sparsities=0,0.5" in open(os.path.join(folder, "flags.txt")).read()
    assert records.read_json(os.path.join(tiny_population, "classes.json"))[9] == "9"


def test_rerun_skips_finished_members(tiny_population):
    before = open(Workdir(tiny_population).manifest).read()
    result = run_stage("save_checkpoint.train", f"--workdir={tiny_population}",
                       *TINY_POPULATION_FLAGS)
    assert "4 already finished, 0 to train" in result.stdout
    assert open(Workdir(tiny_population).manifest).read() == before


def test_shards_fill_one_workdir(tmp_path):
    workdir = str(tmp_path / "sharded")
    flags = ["--dataset=digits", "--model=small_cnn", "--width=4", "--sparsities=0,0.5",
             "--seeds=1", "--epochs=1"]
    # One shard under MirroredStrategy (one CPU replica here), as on a GPU node.
    run_stage("save_checkpoint.train", f"--workdir={workdir}", "--shard=1/2",
              "--strategy=mirrored", *flags)
    assert list(records.read_manifest(workdir)["member_id"]) == ["magnitude_0.5_seed0"]
    run_stage("save_checkpoint.train", f"--workdir={workdir}", "--shard=0/2", *flags)
    assert list(records.read_manifest(workdir)["member_id"]) == [
        "dense_0_seed0", "magnitude_0.5_seed0"]


def test_lost_manifest_row_is_recovered(tiny_population, tmp_path):
    workdir = str(tmp_path / "copy")
    import shutil
    shutil.copytree(tiny_population, workdir)
    manifest = records.read_manifest(workdir)
    records.write_csv(Workdir(workdir).manifest, manifest.iloc[:3], list(manifest.columns),
                      record=False)  # as add_manifest_rows writes it (with its extra columns)
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}", *TINY_POPULATION_FLAGS)
    assert "4 already finished, 0 to train" in result.stdout
    pd.testing.assert_frame_equal(records.read_manifest(workdir), manifest)


@pytest.mark.parametrize("flags, message", [
    (["--dataset=nope"], "error: unknown dataset 'nope'; allowed: digits, mnist5k"),
    (["--model=vgg"], "error: unknown model 'vgg'; allowed: small_cnn"),
    (["--strategy=gpus"], "error: flag --strategy=gpus: value should be one of "
                          "<default|mirrored|multi_worker|tpu>"),
    (["--sparsities=0,1.0"], "error: sparsity must be in [0, 1), got 1"),
    (["--shard=2/2"], "error: --shard must be i/n with integers 0 <= i < n, got '2/2'"),
    (["--seed_slice=1"], "error: --seed_slice must be k/N with integers 0 <= k < N, got '1'"),
    (["--workers=-1"], "error: --workers must be at least 0 (0: automatic), got -1"),
    (["--workers=2", "--strategy=mirrored"],
     "error: --workers=2 needs --strategy=default: a mirrored strategy spreads one member "
     "over devices"),
    (["--threads=-2"], "error: --threads must be at least 0 (0: TensorFlow's default), got -2"),
    (["--steps_per_execution=-1"],
     "error: --steps_per_execution must be at least 0 (0: automatic), got -1"),
    (["--seeds=10000000000"], "error: --seeds must be in [1, 10000], got 10000000000"),
    (["--learning_rate=nan"], "error: --learning_rate must be a finite number > 0, got nan"),
    (["--width=0"], "error: --width must be at least 1, got 0"),
    (["--dataset=imagenet2012", "--model=resnet50"],
     "error: dataset 'imagenet2012' is not prepared in data_dir '"),
    (["--dataset=cifar10", "--data_dir=/nonexistent/tfds"],
     "error: dataset 'cifar10' is not prepared in data_dir '/nonexistent/tfds' (nothing is "
     "downloaded here): run `tfds build cifar10 --data_dir=<dir>`"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, flags, message):
    workdir = tmp_path / "w"
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}", *flags, check=False)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert not workdir.exists()


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_stage("save_checkpoint.train", f"--workdir={blocker}/w", check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: workdir '{blocker}/w' is not writable: '{blocker}' is not a folder"]
    assert blocker.read_text() == "not a folder"


def test_unit_criterion_members_prune_units_of_the_dense_network(tiny_population, tmp_path):
    import shutil
    workdir = str(tmp_path / "criteria")
    shutil.copytree(tiny_population, workdir)
    flags = [f for f in TINY_POPULATION_FLAGS if not f.startswith("--sparsities")]
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}", *flags,
                       "--sparsities=0,0.5", "--method=lrp", "--finetune_epochs=1",
                       "--reference_samples_per_class=3")
    assert "starting from the finished dense member of seed 1" in result.stdout
    assert "scored on 30 reference images" in result.stdout
    manifest = records.read_manifest(workdir).set_index("member_id")
    lrp = manifest.loc[["lrp_0.5_seed0", "lrp_0.5_seed1"]]
    assert (lrp["method"] == "lrp").all() and (lrp["measured_unit_sparsity"] == 0.5).all()
    model = keras.models.load_model(os.path.join(workdir, lrp.iloc[0]["model_file"]),
                                    compile=False)
    silent = 0
    for name in ("conv1", "conv2", "dense1"):
        layer = model.get_layer(name)
        kernel = layer.kernel.numpy().reshape(-1, layer.kernel.shape[-1])
        dead = (kernel == 0).all(axis=0) & (layer.bias.numpy() == 0)
        silent += int(dead.sum())
    units = 4 + 8 + 16  # small_cnn --width=4
    assert silent == units // 2  # pruned units stayed at zero through fine-tuning


def test_unknown_method(tmp_path):
    result = run_stage("save_checkpoint.train", f"--workdir={tmp_path / 'w'}", "--method=random",
                       check=False)
    assert result.returncode == 2
    assert error_lines(result) == ["error: unknown --method 'random'; allowed: magnitude, "
                                   "wt, sipp, sipp_mean, weight, grad, taylor, lrp, filter_l1, m_by_n, "
                                   "qat, pqat, cluster, distill"]


def test_wt_and_sipp_members_meet_the_overall_target(tiny_population, tmp_path):
    import json
    import shutil
    workdir = str(tmp_path / "global")
    shutil.copytree(tiny_population, workdir)
    flags = [f for f in TINY_POPULATION_FLAGS if not f.startswith("--seeds")]
    run_stage("save_checkpoint.train", f"--workdir={workdir}", *flags, "--seeds=1",
              "--method=wt")
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}", *flags, "--seeds=1",
                       "--method=sipp", "--finetune_epochs=1",
                       "--reference_samples_per_class=3")
    assert "starting from the finished dense member of seed 0" in result.stdout
    assert "sipp removed 0.5000 of the weights (scored on 30 reference images)" in result.stdout
    manifest = records.read_manifest(workdir).set_index("member_id")
    for member_id in ("wt_0.5_seed0", "sipp_0.5_seed0"):
        row = manifest.loc[member_id]
        assert abs(row["measured_sparsity"] - 0.5) <= 0.005
        meta = json.loads(open(os.path.join(workdir, row["path"], "meta.json")).read())
        per_layer = meta["measured_sparsity_per_layer"]
        assert sorted(per_layer) == ["conv1", "conv2", "dense1"]
        # The zeros really are in the saved model, and the layers differ (global budget).
        model = keras.models.load_model(os.path.join(workdir, row["model_file"]),
                                        compile=False)
        zeros = sum(int((model.get_layer(n).kernel.numpy() == 0).sum()) for n in per_layer)
        size = sum(model.get_layer(n).kernel.numpy().size for n in per_layer)
        assert zeros / size == pytest.approx(row["measured_sparsity"], abs=1e-6)
        assert max(per_layer.values()) - min(per_layer.values()) > 0.02, per_layer
    assert manifest.loc["sipp_0.5_seed0", "method"] == "sipp"


def test_two_identical_training_runs_take_turns(tmp_path):
    """The second run waits for the member's lock, then skips what the first trained."""
    import subprocess
    import sys
    workdir = str(tmp_path / "w")
    command = [sys.executable, "-m", "save_checkpoint.train", f"--workdir={workdir}",
               "--dataset=digits", "--model=small_cnn", "--width=4", "--sparsities=0",
               "--seeds=1", "--epochs=1", "--batch_size=64"]
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    manifest = records.read_manifest(workdir)
    assert list(manifest["member_id"]) == ["dense_0_seed0"]
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("dense_0_seed0 done") == 1


@contextlib.contextmanager
def _reserved_ports(count):
    """Ports the OS assigns, held for the length of the block: each is bound here with
    SO_REUSEPORT and never listened on, so no other program can take it, while the
    workers' gRPC servers (TF_GRPC_REUSE_PORT=1: SO_REUSEPORT too) listen on it."""
    import socket
    sockets = []
    try:
        for _ in range(count):
            reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            reserved.bind(("127.0.0.1", 0))
            sockets.append(reserved)
        yield [reserved.getsockname()[1] for reserved in sockets]
    finally:
        for reserved in sockets:
            reserved.close()


MULTI_WORKER_FLAGS = ["--dataset=digits", "--model=small_cnn", "--width=4", "--sparsities=0",
                      "--seeds=1", "--epochs=3", "--learning_rate=0.01"]


def test_two_worker_job_writes_one_member_like_a_single_process(tmp_path):
    """MultiWorkerMirroredStrategy with two local processes: the chief alone writes."""
    import json
    workdir = str(tmp_path / "multi")
    with _reserved_ports(2) as ports:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        workers = []
        for index in range(2):
            env = dict(os.environ, PYTHONUNBUFFERED="1", TF_GRPC_REUSE_PORT="1",
                       TF_CONFIG=json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": index}}))
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "save_checkpoint.train", f"--workdir={workdir}",
                 "--strategy=multi_worker", *MULTI_WORKER_FLAGS], cwd=ROOT, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, out + err
    assert "worker 1: done; the chief wrote the population" in outputs[1][0]
    models = [os.path.join(folder, name) for folder, _, names in os.walk(workdir)
              for name in names if name.endswith(".keras")]
    assert models == [os.path.join(workdir, "checkpoints", "dense", "sparsity_0", "seed_0",
                                   "model.keras")]
    assert not os.path.exists(os.path.join(workdir, ".workers"))
    manifest = records.read_manifest(workdir)
    assert list(manifest["member_id"]) == ["dense_0_seed0"]

    single = str(tmp_path / "single")
    run_stage("save_checkpoint.train", f"--workdir={single}", *MULTI_WORKER_FLAGS)
    alone = records.read_manifest(single)["top1"].iloc[0]
    # Two workers split each global batch of 64 and sum their gradients: the same
    # recipe and data order, other float sums, so the same accuracy within 0.01.
    assert alone > 0.6 and abs(manifest["top1"].iloc[0] - alone) <= 0.01, (
        manifest["top1"].iloc[0], alone)


def test_members_trained_by_worker_processes_match_members_trained_alone(tiny_population,
                                                                       tmp_path):
    """Same seed, same data order: shared graphs and worker processes change no weight
    beyond float rounding (a worker runs one CPU thread, which sums in another order)."""
    # Two magnitude sparsities: with shared graphs their members train on one model
    # whose schedule's target is set for each.
    flags = [f for f in TINY_POPULATION_FLAGS if not f.startswith(("--seeds", "--sparsities"))]
    flags += ["--seeds=3", "--sparsities=0,0.5,0.75"]
    alone = str(tmp_path / "alone")
    run_stage("save_checkpoint.train", f"--workdir={alone}", *flags, "--noshare_graphs")
    together = str(tmp_path / "together")
    result = run_stage("save_checkpoint.train", f"--workdir={together}", *flags, "--workers=2")
    assert "training in 2 worker processes (this one and 1 more)" in result.stdout
    # What training found in the data is said once, by this process, not by each worker.
    found = sources.found_line(sources.load(records.read_dataset_config(together)["dataset"]))
    assert found.startswith("data: ")
    assert [line for line in result.stdout.splitlines() if "data: " in line] == [found]
    # The other worker takes seed 1's members, this process seeds 0 and 2; a worker
    # that is done may take the other's members nobody has started ("[+]").
    assert "3 members in shard 0/1, seeds 1/2, 0 already finished" in result.stdout
    ids = list(records.read_manifest(alone)["member_id"])
    assert sorted(ids) == sorted(records.read_manifest(together)["member_id"])
    assert len(ids) == 9
    for member_id in ids:  # each trained once, by one worker
        assert len(re.findall(rf"\] {member_id} done", result.stdout)) == 1, member_id
    for member_id in ids:
        for a, b in zip(_weights(alone, member_id), _weights(together, member_id)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The tiny population (default flags: shared graphs, one process) agrees too.
    for member_id in records.read_manifest(tiny_population)["member_id"]:
        for a, b in zip(_weights(alone, member_id), _weights(tiny_population, member_id)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("steps", [1, 5])
def test_steps_per_call_change_no_weight(tiny_population, tmp_path, steps):
    """Dense and magnitude members run a whole epoch per call of the train function
    by default; one step a call (Keras's default, and the loop before the change) or
    5 (which leaves a shorter last call of each epoch) give the same weights bit for
    bit, on models built afresh per member."""
    workdir = str(tmp_path / "steps")
    run_stage("save_checkpoint.train", f"--workdir={workdir}", *TINY_POPULATION_FLAGS,
              "--noshare_graphs", f"--steps_per_execution={steps}")
    ids = list(records.read_manifest(tiny_population)["member_id"])
    assert sorted(ids) == sorted(records.read_manifest(workdir)["member_id"])
    assert {i.split("_")[0] for i in ids} == {"dense", "magnitude"}
    for member_id in ids:
        calls = [_meta(w, member_id) for w in (workdir, tiny_population)]
        assert calls[0]["steps_per_call"] == steps, member_id
        # By default a whole epoch a call; 5 does not divide it.
        assert calls[1]["steps_per_call"] == calls[1]["steps"] > 5, member_id
        assert calls[1]["steps"] % 5
        for a, b in zip(_weights(workdir, member_id), _weights(tiny_population, member_id)):
            np.testing.assert_array_equal(a, b)


def test_a_worker_done_with_its_seeds_trains_members_nobody_started(tmp_path):
    flags = [f for f in RESUME_FLAGS if not f.startswith(("--seeds", "--epochs"))]
    result = run_stage("save_checkpoint.train", f"--workdir={tmp_path}", *flags,
                       "--seeds=3", "--epochs=1", "--seed_slice=1/2")
    assert "[1/1] magnitude_0.5_seed1 done" in result.stdout
    # Alone in the workdir, this worker also trains the other slice's, last first.
    assert result.stdout.index("[+] magnitude_0.5_seed2 done") < result.stdout.index(
        "[+] magnitude_0.5_seed0 done")
    assert sorted(records.read_manifest(tmp_path)["member_id"]) == [
        "magnitude_0.5_seed0", "magnitude_0.5_seed1", "magnitude_0.5_seed2"]


def test_worker_processes_resume_after_kill_each_member_on_its_own(tmp_path):
    """kill -9 of the whole run (parent and workers) mid-epoch: each member resumes
    from its own last checkpoint and ends as if never interrupted."""
    flags = [f for f in RESUME_FLAGS if not f.startswith("--seeds")] + ["--seeds=2"]
    reference = str(tmp_path / "reference")
    run_stage("save_checkpoint.train", f"--workdir={reference}", *flags, "--noshare_graphs")
    killed = str(tmp_path / "killed")
    ckpt_state = os.path.join(killed, "checkpoints", "magnitude", "sparsity_0.5", "seed_0",
                              "ckpt", "checkpoint")
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "save_checkpoint.train",
                                    f"--workdir={killed}", *flags, "--workers=2"],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                   start_new_session=True)
        # Killed as soon as seed 0's first epoch checkpoint is written (TensorFlow
        # writes the `checkpoint` state file after the checkpoint's data), whatever
        # the run prints: each check waits on the process for at most 50 ms.
        while not os.path.exists(ckpt_state):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)
            assert process.returncode is None, open(tmp_path / "killed.log").read()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not os.path.exists(Workdir(killed).manifest)  # no member had finished
    result = run_stage("save_checkpoint.train", f"--workdir={killed}", *flags, "--workers=2")
    # Seed 0 trains in the process started (worker 0), seed 1 in the other worker.
    assert re.search(r"magnitude_0.5_seed0: resuming after epoch [12]\n", result.stdout)
    assert sorted(records.read_manifest(killed)["member_id"]) == [
        "magnitude_0.5_seed0", "magnitude_0.5_seed1"]
    # Same seed, same data order, restored optimizer and pruning step: same weights.
    for member_id in ("magnitude_0.5_seed0", "magnitude_0.5_seed1"):
        for a, b in zip(_weights(reference, member_id), _weights(killed, member_id)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not os.path.exists(os.path.dirname(ckpt_state))  # a finished member's is removed


def test_a_member_whose_loss_diverges_is_refused_and_leaves_no_folder(tmp_path):
    workdir = tmp_path / "w"
    flags = [f for f in RESUME_FLAGS if not f.startswith(("--seeds", "--sparsities",
                                                          "--learning_rate", "--epochs"))]
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}", *flags, "--seeds=1",
                       "--sparsities=0", "--epochs=1", "--learning_rate=1e30", check=False)
    assert result.returncode == 2, result.stderr
    # Which check fires first depends on float rounding (threads, CPU): the weights
    # overflowing while the loss stays 1e30-sized, or the epoch's loss already NaN.
    # Either way, progress lines (stderr) aside, one error line.
    assert [line for line in error_lines(result) if " epoch 1/1 " not in line] in (
        ["error: member dense_0_seed0: its weights are not finite (the loss diverged): "
         "nothing recorded; lower --learning_rate"],
        ["error: member dense_0_seed0: the loss is nan at epoch 1 (training diverged): "
         "nothing recorded; lower --learning_rate"])
    assert not (workdir / "checkpoints").exists()
    assert not (workdir / "population.csv").exists()


def test_a_nan_loss_stops_the_member_before_its_epoch_is_checkpointed():
    from pie.compress import trainer, training
    member = training.Member("wt", 0.5, 3)
    check = trainer.NonFiniteLoss(member)
    check.on_epoch_end(0, {"loss": 2.5})  # finite: nothing happens
    for loss in (float("nan"), float("inf")):
        with pytest.raises(training.TrainingError) as raised:
            check.on_epoch_end(1, {"loss": loss})
        assert str(raised.value) == (
            f"member wt_0.5_seed3: the loss is {loss} at epoch 2 (training diverged): "
            "nothing recorded; lower --learning_rate")


def test_a_member_trained_alone_saves_the_model_of_the_population_run(tiny_population,
                                                                      tmp_path):
    """Layer names do not depend on how many models the process built before (a resumed
    or sharded member saves the same model.keras config), and the weights are the same."""
    import json
    import zipfile
    from pie.models import loading
    workdir = tmp_path / "alone"
    # Position 3 of the tiny population: magnitude_0.5_seed1, built last in its run.
    run_stage("save_checkpoint.train", f"--workdir={workdir}", *TINY_POPULATION_FLAGS,
              "--shard=3/4")
    relative = "checkpoints/magnitude/sparsity_0.5/seed_1/model.keras"
    alone, together = str(workdir / relative), os.path.join(tiny_population, relative)
    with zipfile.ZipFile(alone) as a, zipfile.ZipFile(together) as b:
        assert json.loads(a.read("config.json")) == json.loads(b.read("config.json"))
    for x, y in zip(loading.load_keras(alone).get_weights(),
                    loading.load_keras(together).get_weights()):
        assert np.array_equal(x, y)


def test_a_finished_member_never_keeps_its_checkpoints(tiny_population, tmp_path):
    """A kill between saving a member and removing ckpt/ (made here by hand): the next
    run removes it, and trains nothing."""
    import shutil
    workdir = tmp_path / "w"
    shutil.copytree(tiny_population, workdir)
    left = workdir / "checkpoints/dense/sparsity_0/seed_1/ckpt"
    left.mkdir()
    (left / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}", *TINY_POPULATION_FLAGS)
    assert "4 already finished, 0 to train" in result.stdout
    assert not left.exists()

"""TFLite interpretation of untrusted models in a child process.

A `.tflite` file passes pie.models.loading.check_tflite (the flatbuffer parsed and
every index checked) and LiteRT's verifier, yet well-formed hostile models still
crashed LiteRT natively (4 of 561: SIGSEGV, SIGFPE in kernels given shapes, types or
parameters they do not guard, such as a zero divisor). A native crash cannot be
caught in Python, so interpretation runs where a crash ends only a child:

  Runner   the whole interpretation of a member (`TFLiteMember`, every stage that
           reads its outputs: predictions, corruptions, quantize, import-members).
           A crash may depend on the input values, so no probe on other inputs
           could clear the member's real run; the child runs exactly what the
           stage runs and a crash costs one error line naming the member.
           Inputs go down a pipe, logits come back the same way. Measured
           (`python benchmarks/model_fuzz.py --overhead_images=20000`, 2 cores):
           the child's start costs about 0.3 s once per member; the pipe adds
           nothing measurable (20,000 digits images: 0.04 s in process, 0.03 s
           through a started child). A probe alone would cost the same start and
           could not clear input-dependent crashes, so the whole run goes there.
  probe    for in-process interpreters (the cost stage times `invoke` itself, where
           a pipe would distort the timing): before the parent opens a model, a
           child opens it the same way and invokes it at batch 1 and 32 on zeros
           and on the cost stage's seeded random inputs (pie.compress.quantize.
           Latency draws those same values), so the parent then runs nothing the
           child has not survived. Probes are cached by the file's SHA-256.

Each child is forked from a zygote: one process per stage process (started with
the first child it needs), which imports numpy and the runtime once and then only
forks, on request, a fresh child per member or probe; it never opens a model
itself. A child is still one process per model, whose crash ends only it, but
its start costs a fork (milliseconds) instead of a Python start and those imports
(about 0.3 s of CPU each: a study starts a few hundred). The zygote gets the
child's pipe ends over a Unix socket (SCM_RIGHTS), forks, and answers the child's
exit status when asked; it reaps a child only when the parent asks, so the pid it
gave stays the child's until then.

Run as `python -m pie.models.tflite_child <path> <threads>` (runner) or with
`--probe` first (the zygote runs the same `main` in each child). Stdout carries the
protocol only (fd 1 is pointed at stderr, where the runtime logs).
"""
import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE_BATCH_SIZES = (1, 32)
PROBE_TIMEOUT_S = 120
# An answer must fit one line of the error; longer child messages are cut.
MAX_MESSAGE = 300


class ChildError(RuntimeError):
    """The child refused or crashed; the message is one line without the path."""


def _first_line(error):
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:MAX_MESSAGE]


def _child_env():
    paths = [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def _death(returncode, stderr_text):
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the TFLite interpreter crashed on it ({name})"
    lines = [line for line in stderr_text.strip().splitlines() if line.strip()]
    return (f"the TFLite interpreter exited with code {returncode}"
            + (f": {lines[-1][:MAX_MESSAGE]}" if lines else ""))


def _details_to_json(details):
    return [{"index": int(d["index"]), "shape": [int(x) for x in d["shape"]],
             "shape_signature": [int(x) for x in d.get("shape_signature", d["shape"])],
             "dtype": np.dtype(d["dtype"]).str,
             "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}
            for d in details]


def _details_from_json(details):
    return [dict(d, shape=np.array(d["shape"], np.int32),
                 shape_signature=np.array(d["shape_signature"], np.int32),
                 dtype=np.dtype(d["dtype"]).type, quantization=tuple(d["quantization"]))
            for d in details]


# Arrays cross the pipe as one JSON line (dtype, shape) and the raw bytes: numpy's
# .npy reader needs a seekable file.
MAX_ARRAY_BYTES = 8 << 30


def write_array(stream, array):
    array = np.ascontiguousarray(array)
    stream.write(json.dumps({"dtype": array.dtype.str, "shape": list(array.shape)}).encode()
                 + b"\n")
    stream.write(memoryview(array).cast("B"))


def read_array(stream):
    """The next array of `stream`; EOFError when the stream ends."""
    line = stream.readline()
    if not line:
        raise EOFError("the stream ended")
    header = json.loads(line)
    dtype = np.dtype(header["dtype"])
    shape = tuple(int(d) for d in header["shape"])
    if dtype.hasobject or any(d < 0 for d in shape) \
            or int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > MAX_ARRAY_BYTES:
        raise ValueError(f"an array of {dtype} {shape} is refused")
    array = np.empty(shape, dtype)
    view, done = memoryview(array).cast("B"), 0
    while done < len(view):
        count = stream.readinto(view[done:])
        if not count:
            raise EOFError("the stream ended inside an array")
        done += count
    return array


# ------------------------------------------------------------------ parent side


class Runner:
    """A child process holding one TFLite model; `logits` runs it there.

    Exposes the interpreter's `get_input_details` / `get_output_details` (as the
    child read them), so signature checks need no interpreter in this process.
    """

    def __init__(self, path, num_threads=None):
        self.path = path
        self._stderr = tempfile.TemporaryFile()
        self._process = ForkedChild([path, str(num_threads or 0)], self._stderr, stdin=True)
        reply = self._reply()
        self._inputs = _details_from_json(reply["inputs"])
        self._outputs = _details_from_json(reply["outputs"])

    def get_input_details(self):
        return [dict(d) for d in self._inputs]

    def get_output_details(self):
        return [dict(d) for d in self._outputs]

    def _fail(self, problem):
        self.close()
        raise ChildError(problem)

    def _dead(self):
        self._process.stdin.close() if not self._process.stdin.closed else None
        try:
            returncode = self._process.wait(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            returncode = self._process.wait()
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        self._fail(_death(returncode, text))

    def _reply(self):
        line = self._process.stdout.readline()
        if not line:
            self._dead()
        status, _, rest = line.decode("utf-8", "replace").rstrip("\n").partition(" ")
        if status == "error":
            raise ChildError(rest)
        if status != "ok":
            self._fail(f"the TFLite child answered {line[:80]!r}")
        if rest == "array":
            try:
                return read_array(self._process.stdout)
            except (ValueError, EOFError, OSError):
                self._dead()
        return json.loads(rest) if rest else None

    def logits(self, inputs, batch_size):
        """The model's float32 outputs for `inputs`, run in batches of `batch_size`."""
        inputs = np.ascontiguousarray(inputs, np.float32)
        if self._process.poll() is not None:
            self._dead()
        try:
            self._process.stdin.write(json.dumps({"batch_size": int(batch_size)}).encode()
                                      + b"\n")
            write_array(self._process.stdin, inputs)
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            self._dead()
        out = self._reply()
        if not isinstance(out, np.ndarray) or out.ndim != 2 or len(out) != len(inputs):
            self._fail(f"the model gave outputs of shape {getattr(out, 'shape', None)} for "
                       f"{len(inputs)} inputs: a member gives (batch, classes)")
        return out

    def close(self):
        process = getattr(self, "_process", None)
        if process is None or process.poll() is not None:
            return
        try:
            process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()

    def __del__(self):
        self.close()


_PROBED = {}



def probe(path, num_threads=None):
    """Raises ChildError unless a child opened and ran the model on the probe inputs;
    cached by (SHA-256 of the file, threads)."""
    from pie.io import records  # (pandas: the stage's, never the zygote's)
    key = (records.file_sha256(path), num_threads or 0)
    if key not in _PROBED:
        with tempfile.TemporaryFile() as stderr:
            child = ForkedChild(["--probe", path, str(num_threads or 0)], stderr)
            try:
                stdout, returncode = child.communicate(PROBE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _PROBED[key] = f"running it took over {PROBE_TIMEOUT_S} s"
            else:
                stderr.seek(0)
                out = stdout.decode("utf-8", "replace").strip().splitlines()
                if returncode == 0 and out and out[-1] == "ok":
                    _PROBED[key] = None
                elif returncode == 0 and out and out[-1].startswith("error "):
                    _PROBED[key] = out[-1][len("error "):]
                else:
                    _PROBED[key] = _death(returncode or 1,
                                          stderr.read().decode("utf-8", "replace"))
    if _PROBED[key]:
        raise ChildError(_PROBED[key])


# ------------------------------------------------------------------------ zygote

# One request or answer: a JSON object in one SOCK_SEQPACKET message.
MAX_REQUEST = 1 << 16


class Zygote:
    """The parent's handle on its zygote process (`python -m pie.models.tflite_child
    --zygote <fd>`), which forks the children; requests are serialised by a lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "pie.models.tflite_child", "--zygote",
                 str(theirs.fileno())], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()], env=_child_env(), cwd=ROOT)
        finally:
            theirs.close()
        self.owner = os.getpid()

    def request(self, message, fds=()):
        """The zygote's answer to `message` (a dict), `fds` passed along with it;
        OSError when the zygote is gone."""
        with self._lock:
            data = json.dumps(message).encode()
            if fds:
                socket.send_fds(self._socket, [data], list(fds))
            else:
                self._socket.sendall(data)
            answer = self._socket.recv(MAX_REQUEST)
        if not answer:
            raise OSError("the TFLite zygote is gone")
        return json.loads(answer)

    def alive(self):
        return self.owner == os.getpid() and self._process.poll() is None

    def close(self):
        if self.owner != os.getpid():
            return  # a forked copy of the parent: the zygote is its parent's
        self._socket.close()  # the zygote kills what it still holds and exits
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


_ZYGOTE = None
_ZYGOTE_LOCK = threading.Lock()


def zygote():
    """This process's zygote, started on first use (again if it died or this process
    is a fork of the one that started it)."""
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or not _ZYGOTE.alive():
            _ZYGOTE = Zygote()
        return _ZYGOTE


def close_zygote():
    """Ends this process's zygote (it kills the children still running) and reaps it;
    stages end with os._exit (pie.io.cli.finished), which runs no atexit hook."""
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is not None:
            _ZYGOTE.close()
            _ZYGOTE = None


atexit.register(close_zygote)


class ForkedChild:
    """A child forked by the zygote running `main` on `args`, with the Popen methods
    the parent uses (stdin, stdout, poll, wait, kill, communicate). Its stderr is the
    file `stderr`; stdin is a pipe when `stdin`, else /dev/null."""

    def __init__(self, args, stderr, stdin=False):
        self.returncode = None
        out_read, out_write = os.pipe()
        in_read, in_write = os.pipe() if stdin else (os.open(os.devnull, os.O_RDONLY), None)
        try:
            try:
                self._zygote = zygote()
                answer = self._zygote.request({"op": "spawn", "args": list(args)},
                                              [in_read, out_write, stderr.fileno()])
            except OSError:  # the zygote died since: once more with a new one
                self._zygote = zygote()
                answer = self._zygote.request({"op": "spawn", "args": list(args)},
                                              [in_read, out_write, stderr.fileno()])
        except BaseException:
            for fd in (out_read, in_write):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            os.close(in_read)
            os.close(out_write)
        self.pid = int(answer["pid"])
        self.stdout = os.fdopen(out_read, "rb")
        self.stdin = os.fdopen(in_write, "wb") if stdin else None

    def poll(self):
        if self.returncode is None:
            try:
                self.returncode = self._zygote.request({"op": "poll", "pid": self.pid})["code"]
            except OSError:  # the zygote died and its status with it
                self.returncode = 1
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired("tflite_child", timeout)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return self.returncode

    def kill(self):
        if self.returncode is None:
            try:
                self._zygote.request({"op": "kill", "pid": self.pid})
            except OSError:
                pass

    def communicate(self, timeout):
        """(stdout bytes, exit code), reading stdout to its end; the child is killed
        and subprocess.TimeoutExpired raised after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        chunks, fd = [], self.stdout.fileno()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    self.kill()
                    self.wait()
                    raise subprocess.TimeoutExpired("tflite_child", timeout)
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            self.stdout.close()
        return b"".join(chunks), self.wait(max(deadline - time.monotonic(), 0) + 10)


def _zygote_main(control_fd):
    """Serves spawn / poll / kill requests until the parent closes the socket, then
    kills the children it has not reaped and exits. Imports, once, what every child
    needs; never opens a model."""
    from pie.models import loading
    loading.interpreter_class()
    loading.tflite_schema()
    control = socket.socket(fileno=control_fd)
    children = set()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, MAX_REQUEST, 3)
        except OSError:
            data, fds = b"", []
        if not data:
            for pid in children:  # reaped too: their CPU time is counted as ours
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except OSError:
                    pass
            return 0
        request = json.loads(data)
        if request["op"] == "spawn":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                control.close()
                _child_main(request["args"], fds)  # never returns
            for fd in fds:
                os.close(fd)
            children.add(pid)
            answer = {"pid": pid}
        elif request["op"] == "poll":
            pid, code = int(request["pid"]), None
            if pid in children:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    children.discard(pid)
                    code = os.waitstatus_to_exitcode(status)
            else:
                code = 1  # not ours, or reaped already: nothing more will come
            answer = {"code": code}
        else:  # kill
            if int(request["pid"]) in children:
                os.kill(int(request["pid"]), signal.SIGKILL)
            answer = {}
        control.sendall(json.dumps(answer).encode())


def _child_main(args, fds):
    """In a forked child: fds (stdin, stdout, stderr) in place, `main` run, and the
    process ended here (os._exit: nothing of the zygote's runs again)."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        code = main(["tflite_child"] + list(args))
    except BaseException:  # noqa: BLE001  (the exit code says it; stderr has why)
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ------------------------------------------------------------------- child side


class InProcessMember:
    """Runs a TFLite model here: the input tensor resized to the batch; int8 and
    uint8 inputs and outputs (de)quantized with the tensors' own parameters."""

    def __init__(self, path, num_threads=None):
        from pie.models import loading
        self.path, self.num_threads = path, num_threads
        self.interpreter = loading.open_tflite(path, num_threads=num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = None

    def _run(self, batch):
        from pie.models import loading
        if self._batch != len(batch):
            shape = [len(batch)] + list(self.input["shape"][1:])
            self.interpreter = loading.resize_input(self.interpreter, self.path, shape,
                                                    self.num_threads, opener=loading.open_tflite)
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self._batch = len(batch)
        scale, zero_point = self.input["quantization"]
        if self.input["dtype"] in (np.int8, np.uint8) and scale:
            info = np.iinfo(self.input["dtype"])
            batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], batch.astype(self.input["dtype"]))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output["quantization"]
        if self.output["dtype"] in (np.int8, np.uint8) and scale:
            out = (out.astype(np.float32) - zero_point) * scale
        return out.astype(np.float32)

    def logits(self, inputs, batch_size):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        inputs = np.asarray(inputs, np.float32)
        if not len(inputs):
            return np.zeros((0, int(self.output["shape"][-1])), np.float32)
        return np.concatenate([self._run(inputs[start:start + batch_size])
                               for start in range(0, len(inputs), batch_size)])


def probe_inputs(detail, batch_size, seed=0):
    """The probe's inputs at one batch size: zeros, then the values
    pie.compress.quantize.Latency times (seeded standard normal, or the integer
    type's full range)."""
    shape = [batch_size] + [max(int(d), 1) for d in detail["shape_signature"][1:]]
    dtype = np.dtype(detail["dtype"])
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        drawn = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    elif dtype == np.bool_:
        drawn = rng.integers(0, 2, size=shape).astype(dtype)
    else:
        drawn = rng.standard_normal(shape).astype(dtype)
    return [np.zeros(shape, dtype), drawn]


def _run_probe(path, num_threads):
    from pie.models import loading
    interpreter = loading.open_tflite(path, num_threads=num_threads)
    for batch_size in PROBE_BATCH_SIZES:
        detail = interpreter.get_input_details()[0]
        for inputs in probe_inputs(detail, batch_size):
            interpreter = loading.resize_input(interpreter, path, list(inputs.shape),
                                               num_threads, opener=loading.open_tflite)
            for other in interpreter.get_input_details()[1:]:
                interpreter.set_tensor(other["index"], np.zeros(other["shape"], other["dtype"]))
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs)
            interpreter.invoke()
            for output in interpreter.get_output_details():
                interpreter.get_tensor(output["index"])


def _reason(error, path):
    """The first line of an error, without the path a loading.ModelError starts with
    (the parent names the file itself)."""
    line = _first_line(error)
    for start in (f"cannot run TFLite model {path}: ", f"cannot open TFLite model {path}: "):
        while line.startswith(start):
            line = line[len(start):]
    return line


def _send(proto, status, text=""):
    proto.write(f"{status} {text}".rstrip().replace("\n", " ").encode() + b"\n")
    proto.flush()


def main(argv):
    if argv[1:2] == ["--zygote"]:
        return _zygote_main(int(argv[2]))
    probing = argv[1:2] == ["--probe"]
    path, threads = argv[-2], int(argv[-1]) or None
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # library prints go to stderr; stdout is the protocol's
    if probing:
        try:
            _run_probe(path, threads)
        except Exception as error:  # noqa: BLE001  (every refusal is an answer)
            _send(proto, "error", _reason(error, path))
            return 0
        _send(proto, "ok")
        return 0
    try:
        member = InProcessMember(path, threads)
        details = {"inputs": _details_to_json(member.interpreter.get_input_details()),
                   "outputs": _details_to_json(member.interpreter.get_output_details())}
    except Exception as error:  # noqa: BLE001
        _send(proto, "error", _reason(error, path))
        return 0
    _send(proto, "ok", json.dumps(details))
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return 0
        request = json.loads(line)
        inputs = read_array(stdin)
        try:
            if len(details["inputs"]) != 1 or len(details["outputs"]) != 1:
                raise ValueError(f"the model has {len(details['inputs'])} inputs and "
                                 f"{len(details['outputs'])} outputs; a member has one of each")
            out = member.logits(inputs, int(request["batch_size"]))
        except Exception as error:  # noqa: BLE001
            _send(proto, "error", _reason(error, path))
            continue
        _send(proto, "ok", "array")
        write_array(proto, out)
        proto.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

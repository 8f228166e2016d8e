r"""Fuzzes the model loader and the paths that run a model with hostile model files.

    python benchmarks/model_fuzz.py                           # 420 .tflite, 180 .keras
    python benchmarks/model_fuzz.py --tflite=20 --keras=10    # a smoke run
    python benchmarks/model_fuzz.py --overhead_images=20000   # the child's cost

Seed models (tf_keras, converted by the toolkit's own converter) are mutated into
files an attacker could hand over:

  .tflite  truncations and byte flips (the loader's flatbuffer check refuses most),
           and well-formed mutations, parsed with the TFLite schema and packed
           again so that every index stays in range and the file passes the
           check: tensor shapes and types, buffer sizes and contents, opcode
           indices and operator codes, operator inputs and outputs, option fields
           set to 0, -1 or extremes (zero divisors: strides, block sizes, filter
           sizes, axes), quantization parameters, subgraph inputs and outputs.
  .keras   config mutations (numbers, strings, class names among the allowed,
           deleted keys, types, inbound nodes), metadata mutations, flipped bytes
           of the weights' HDF5 file with the zip's CRC made right again (so h5py
           parses them), and flipped bytes of the zip itself.

Each file goes through the loader and a run path, in batch child processes that
stand for a stage's process: a `.tflite` through pie.models.predict.TFLiteMember
(predictions, quantize, import-members) and then pie.stages.cost.latencies (cost:
probe child, then the interpreter in the stage's process); a `.keras` through
pie.models.loading.load_keras and KerasMember.logits. The parent watches each
batch child: one that dies by a signal is a native crash of a stage process (the
file is named, the batch resumes after it); one that stalls over --timeout_s on a
file is killed and counted as hung.

Outcomes per file: `ran`, `refused` (the one-line ModelError/InputError a stage
prints), `uncaught` (any other exception: printed with its file), `native_crash`,
`hung`. `contained=` counts refusals that were a crash of the runtime in a child.
Last line: `native_crashes=<n> uncaught=<n>`.
"""
import argparse
import collections
import concurrent.futures
import io
import json
import os
import random
import selectors
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
BATCH = 64  # files per batch child
EXTREME_INTS = (0, -1, 1, 2, 3, 7, 64, 255, 2 ** 31 - 1, -2 ** 31)
EXTREME_FLOATS = (0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf"))


# ------------------------------------------------------------------- seed models


def seed_models(folder):
    """Writes the seed files; returns {".tflite": [paths], ".keras": [paths]}."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    from pie.compress import quantize as pq
    from pie.models import builders
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    representative = rng.random((32,) + INPUT_SHAPE).astype(np.float32)
    cnn = builders.build("small_cnn", INPUT_SHAPE, NUM_CLASSES, width=4)
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Concatenate()([x, keras.layers.MaxPooling2D(2)(inputs)])
    x = keras.layers.UpSampling2D(2)(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Cropping2D(1)(x)
    x = keras.layers.Reshape((8, 8 * 5))(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(16, activation="tanh")(x)
    outputs = keras.layers.Softmax()(keras.layers.Dense(NUM_CLASSES)(x))
    mixed = keras.Model(inputs, outputs)
    paths = {".tflite": [], ".keras": []}

    def write(name, content):
        path = os.path.join(folder, name)
        with open(path, "wb") as handle:
            handle.write(content)
        paths[os.path.splitext(name)[1]].append(path)

    for name, model in (("cnn", cnn), ("mixed", mixed)):
        write(f"{name}.float.tflite", pq.convert(model, pq.FLOAT_MODE))
        write(f"{name}.full_int8.tflite", pq.convert(model, "full_int8", representative))
        write(f"{name}.dynamic_int8.tflite", pq.convert(model, "dynamic_int8"))
        model.save(os.path.join(folder, f"{name}.keras"))
        paths[".keras"].append(os.path.join(folder, f"{name}.keras"))

    # Integer arithmetic and index ops, where a zero divisor or a bad index is a
    # native fault if a kernel does not guard it.
    @tf.function(input_signature=[tf.TensorSpec((1,) + INPUT_SHAPE, tf.float32)])
    def arithmetic(images):
        x = tf.nn.space_to_depth(images, 2)
        x = tf.nn.depth_to_space(x, 2)
        integers = tf.cast(x * 100.0, tf.int32) + 3
        x = tf.cast(tf.math.floordiv(integers, 3) + tf.math.floormod(integers, 5), tf.float32)
        flat = tf.reshape(x, (1, 64))
        picked = tf.gather(flat, [0, 5, 9, 63, 1, 2, 3, 4, 7, 8], axis=1)
        return tf.nn.softmax(picked + tf.reduce_mean(flat, axis=1, keepdims=True))

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [arithmetic.get_concrete_function()], arithmetic)
    write("arithmetic.tflite", converter.convert())
    return paths


# ---------------------------------------------------------------- tflite mutants


def _schema():
    from pie.models import loading
    return loading.tflite_schema()


def _pack(model):
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _int_attributes(obj):
    return [name for name, value in vars(obj).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)]


def _mutate_model(model, rng):
    """One well-formed mutation of a ModelT, in place; its name."""
    import numpy as np
    graph = rng.choice(model.subgraphs)
    tensors, ops = graph.tensors, graph.operators or []
    kind = rng.choice(["shape", "type", "buffer", "opcode", "inputs", "options", "quant",
                       "code", "io", "buffer_index", "signature"])
    if kind == "shape":
        tensor = rng.choice(tensors)
        rank = rng.randrange(0, 6)
        tensor.shape = np.array([rng.choice(EXTREME_INTS[:8]) for _ in range(rank)], np.int32)
    elif kind == "signature":
        tensor = rng.choice(tensors)
        tensor.shapeSignature = np.array([rng.choice((-1, 0, 1, 3)) for _ in
                                          range(0 if tensor.shape is None else len(tensor.shape))], np.int32)
    elif kind == "type":
        rng.choice(tensors).type = rng.randrange(0, 18)
    elif kind == "buffer":
        buffers = [b for b in model.buffers if b.data is not None and len(b.data)]
        if not buffers:
            return "none"
        buffer = rng.choice(buffers)
        choice = rng.randrange(3)
        if choice == 0:
            buffer.data = buffer.data[:rng.randrange(len(buffer.data))]
        elif choice == 1:
            buffer.data = np.concatenate([buffer.data, np.frombuffer(
                rng.randbytes(rng.randrange(1, 64)), np.uint8)])
        else:
            data = np.array(buffer.data, np.uint8)
            for _ in range(rng.randrange(1, 16)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            buffer.data = data
    elif kind == "opcode" and ops:
        rng.choice(ops).opcodeIndex = rng.randrange(len(model.operatorCodes))
    elif kind == "inputs" and ops:
        op = rng.choice(ops)
        name = "inputs" if rng.random() < 0.7 or op.outputs is None else "outputs"
        target = getattr(op, name)
        if target is not None and len(target):
            target = np.array(target, np.int32)  # a copy: parsed arrays are read-only
            target[rng.randrange(len(target))] = rng.randrange(-1, len(tensors))
            setattr(op, name, target)
    elif kind == "options" and ops:
        with_options = [op for op in ops if op.builtinOptions is not None
                        and _int_attributes(op.builtinOptions)]
        if not with_options:
            return "none"
        options = rng.choice(with_options).builtinOptions
        name = rng.choice(_int_attributes(options))
        value = getattr(options, name)
        setattr(options, name, rng.choice(EXTREME_FLOATS) if isinstance(value, float)
                else rng.choice(EXTREME_INTS[:8]))
    elif kind == "quant":
        quantized = [t for t in tensors if t.quantization is not None
                     and t.quantization.scale is not None]
        if not quantized:
            return "none"
        params = rng.choice(quantized).quantization
        choice = rng.randrange(3)
        if choice == 0:
            params.scale = np.array([rng.choice(EXTREME_FLOATS)] * len(params.scale),
                                    np.float32)
        elif choice == 1 and params.zeroPoint is not None:
            params.zeroPoint = np.array([rng.choice((-129, 128, 255, -2 ** 40, 2 ** 40))]
                                        * len(params.zeroPoint), np.int64)
        else:
            params.quantizedDimension = rng.choice((-1, 3, 7, 100))
    elif kind == "code":
        code = rng.choice(model.operatorCodes)
        code.builtinCode = rng.randrange(0, 210)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    elif kind == "io":
        name = "inputs" if rng.random() < 0.5 else "outputs"
        target = getattr(graph, name)
        if target is not None and len(target):
            target = np.array(target, np.int32)
            target[rng.randrange(len(target))] = rng.randrange(len(tensors))
            setattr(graph, name, target)
    elif kind == "buffer_index":
        rng.choice(tensors).buffer = rng.randrange(len(model.buffers))
    else:
        return "none"
    return kind


def tflite_mutants(seeds, count, folder, rng):
    """`count` mutated .tflite files: a fifth cut or flipped bytes, the rest
    well-formed schema mutations (1 to 3 each)."""
    contents = {}
    for path in seeds:
        with open(path, "rb") as handle:
            contents[path] = handle.read()
    schema, made = _schema(), []
    while len(made) < count:
        seed = rng.choice(seeds)
        content = contents[seed]
        if len(made) % 5 == 0:
            if rng.random() < 0.5:
                mutated, kind = content[:rng.randrange(len(content))], "truncate"
            else:
                data = bytearray(content)
                for _ in range(rng.randrange(1, 32)):
                    data[rng.randrange(8, len(data))] = rng.randrange(256)
                mutated, kind = bytes(data), "byteflip"
        else:
            model = schema.ModelT.InitFromPackedBuf(content, 0)
            kinds = [_mutate_model(model, rng) for _ in range(rng.randint(1, 3))]
            kind = "+".join(kinds)
            try:
                mutated = _pack(model)
            except Exception:  # noqa: BLE001  (a mutation the packer cannot write)
                continue
        path = os.path.join(folder, f"t{len(made):04d}.{kind}.tflite")
        with open(path, "wb") as handle:
            handle.write(mutated)
        made.append(path)
    return made


# ----------------------------------------------------------------- keras mutants


def _leaves(node, out, parent=None, key=None):
    out.append((parent, key, node))
    if isinstance(node, dict):
        for child_key, child in node.items():
            _leaves(child, out, node, child_key)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _leaves(child, out, node, index)
    return out


def _mutate_config(config, rng):
    from pie.models import keras_gate
    leaves = [leaf for leaf in _leaves(config, []) if leaf[0] is not None]
    parent, key, value = rng.choice(leaves)
    kind = rng.choice(["number", "string", "class", "delete", "type", "node"])
    if kind == "node":
        nodes = [leaf for leaf in leaves if leaf[1] == "inbound_nodes" and leaf[2]]
        if nodes:
            node = rng.choice(nodes)[2][0][0]
            position = rng.randrange(len(node))
            node[position] = rng.choice(["missing_layer", 0, 5, -1, 2 ** 31 - 1, {}, None])
            return kind
        kind = "number"
    if kind == "class":
        objects = [leaf[2] for leaf in leaves if isinstance(leaf[2], dict)
                   and leaf[2].get("module") in ("keras.layers", "keras.initializers")]
        if objects:
            target = rng.choice(objects)
            names = keras_gate.ALLOWED_CLASSES[target["module"]]
            target["class_name"] = rng.choice(sorted(names))
            return kind
        kind = "number"
    if kind == "number" or isinstance(value, (int, float)) and kind == "string":
        numbers = [leaf for leaf in leaves if isinstance(leaf[2], (int, float))
                   and not isinstance(leaf[2], bool)]
        if numbers:
            parent, key, value = rng.choice(numbers)
        parent[key] = rng.choice(EXTREME_INTS[:8] + EXTREME_FLOATS[:2])
        return "number"
    if kind == "string":
        strings = [leaf for leaf in leaves if isinstance(leaf[2], str)]
        parent, key, value = rng.choice(strings)
        parent[key] = rng.choice(["", "relu", "same", "valid", "channels_first", "float16",
                                  "int8", "x" * 300, "dense", value[::-1]])
        return kind
    if kind == "delete" and isinstance(parent, dict):
        del parent[key]
        return kind
    parent[key] = rng.choice([None, [], {}, "1", 1.5, [1, 2], {"class_name": "Dense"}])
    return "type"


def _zip_of(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def keras_mutants(seeds, count, folder, rng):
    """`count` mutated .keras files: config mutations (most), metadata, weights
    bytes with a valid CRC, zip bytes."""
    parts = {}
    for path in seeds:
        with zipfile.ZipFile(path) as archive:
            parts[path] = {name: archive.read(name) for name in archive.namelist()}
    made = []
    while len(made) < count:
        seed = rng.choice(seeds)
        entries = dict(parts[seed])
        roll = rng.random()
        if roll < 0.6:
            config = json.loads(entries["config.json"])
            kind = "+".join(_mutate_config(config, rng) for _ in range(rng.randint(1, 3)))
            entries["config.json"] = json.dumps(config).encode()
            content = _zip_of(entries.items())
        elif roll < 0.65:
            metadata = json.loads(entries["metadata.json"])
            metadata["keras_version"] = rng.choice(["3.0.0", "2.99", "", "x" * 100])
            entries["metadata.json"] = json.dumps(metadata).encode()
            content, kind = _zip_of(entries.items()), "metadata"
        elif roll < 0.9:
            weights = bytearray(entries["model.weights.h5"])
            for _ in range(rng.randrange(1, 16)):
                weights[rng.randrange(len(weights))] = rng.randrange(256)
            entries["model.weights.h5"] = bytes(weights)
            content, kind = _zip_of(entries.items()), "h5flip"
        else:
            data = bytearray(_zip_of(entries.items()))
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            content, kind = bytes(data), "zipflip"
        path = os.path.join(folder, f"k{len(made):04d}.{kind}.keras")
        with open(path, "wb") as handle:
            handle.write(content)
        made.append(path)
    return made


# ---------------------------------------------------------------- batch children


def _child(list_path):
    """Runs each listed file through the loader and a run path; one line per step."""
    import numpy as np
    from pie.io import errors
    from pie.models import loading, predict
    from pie.stages import cost
    with open(list_path) as handle:
        paths = json.load(handle)

    def inputs_for(shape):
        """Inputs of the model's own shape (free or odd dimensions: 4 images, size 1)."""
        dims = [int(d) if d is not None and 0 < int(d) <= 64 else 0 for d in list(shape)]
        batch = dims[0] if dims and dims[0] else 4
        return np.random.default_rng(0).random([batch] + [d or 1 for d in dims[1:]]).astype(
            np.float32)

    for number, path in enumerate(paths):
        print(f"begin {number}", flush=True)
        try:
            if path.endswith(".tflite"):
                member = predict.TFLiteMember(path)
                member.logits(inputs_for(member.input["shape_signature"]), 2)
                member.close()
                cost.latencies(path, repeats=1, warmup=0, num_threads=1)
            else:
                member = predict.KerasMember(path)
                member.logits(inputs_for(member.model.inputs[0].shape), 2)
            print(f"ran {number}", flush=True)
        except errors.InputError as error:
            line = str(error).replace("\n", " ")
            print(f"refused {number} {line[:400]}", flush=True)
        except Exception as error:  # noqa: BLE001  (what the benchmark counts)
            line = f"{type(error).__name__}: {error}".replace("\n", " ")
            print(f"uncaught {number} {line[:400]}", flush=True)
    print("done", flush=True)


def run_batch(paths, timeout_s, report):
    """Runs `paths` in child processes; calls report(path, outcome, text) per file."""
    start = 0
    while start < len(paths):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(paths[start:], handle)
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", handle.name],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1"))
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        current, finished = None, False
        while True:
            if not selector.select(timeout_s):
                process.kill()
                process.wait()
                report(paths[start + current], "hung", f"over {timeout_s} s")
                start += current + 1
                break
            line = process.stdout.readline()
            if not line:
                returncode = process.wait()
                if current is None or finished:
                    start = len(paths)
                    break
                outcome = "native_crash" if returncode < 0 else "uncaught"
                report(paths[start + current], outcome, f"exit {returncode}")
                start += current + 1
                break
            status, _, rest = line.rstrip("\n").partition(" ")
            if status == "done":
                finished = True
                continue
            number, _, text = rest.partition(" ")
            if status == "begin":
                current = int(number)
            else:
                report(paths[start + int(number)], status, text)
                current = None
        selector.close()
        os.unlink(handle.name)


def fuzz(tflite_count, keras_count, seed, timeout_s, folder, workers=2, log=print):
    """Builds and runs the mutants; returns a Counter of outcomes (and `contained`)."""
    rng = random.Random(seed)
    seeds = seed_models(folder)
    files = tflite_mutants(seeds[".tflite"], tflite_count, folder, rng) \
        + keras_mutants(seeds[".keras"], keras_count, folder, rng)
    counts, lock = collections.Counter(), threading.Lock()

    def report(path, outcome, text):
        with lock:
            counts[outcome] += 1
            counts[f"{os.path.splitext(path)[1][1:]}_{outcome}"] += 1
            if "crashed on it" in text:
                counts["contained"] += 1
            if outcome in ("uncaught", "native_crash", "hung") or "crashed on it" in text:
                log(f"{outcome}: {os.path.basename(path)}: {text}")

    def batch(start):
        run_batch(files[start:start + BATCH], timeout_s, report)
        with lock:
            log(f"batch of files {start}..{min(start + BATCH, len(files)) - 1} done: "
                + ", ".join(f"{key}={value}" for key, value in sorted(counts.items())))

    # Batches run side by side; each file is still alone in its batch child, so a
    # crash is always the file's.
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(batch, range(0, len(files), BATCH)))
    return counts


def overhead(images, folder, repeats=3):
    """Seconds to run `images` digits-sized images through the float seed model in
    this process and through TFLiteMember's child (start included, and a second
    call on the started child); best of `repeats`."""
    import numpy as np
    from pie.models import predict, tflite_child
    path = seed_models(folder)[".tflite"][0]
    inputs = np.random.default_rng(0).random((images,) + INPUT_SHAPE).astype(np.float32)
    best = collections.defaultdict(lambda: float("inf"))
    for _ in range(repeats):
        started = time.perf_counter()
        here = tflite_child.InProcessMember(path).logits(inputs, 256)
        best["in_process"] = min(best["in_process"], time.perf_counter() - started)
        started = time.perf_counter()
        member = predict.TFLiteMember(path)
        child = member.logits(inputs, 256)
        best["child_first"] = min(best["child_first"], time.perf_counter() - started)
        started = time.perf_counter()
        member.logits(inputs, 256)
        best["child_again"] = min(best["child_again"], time.perf_counter() - started)
        member.close()
        np.testing.assert_array_equal(here, child)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tflite", type=int, default=420, help="mutated .tflite files")
    parser.add_argument("--keras", type=int, default=180, help="mutated .keras files")
    parser.add_argument("--seed", type=int, default=0, help="mutation seed")
    parser.add_argument("--timeout_s", type=float, default=60,
                        help="seconds one file may take before it counts as hung")
    parser.add_argument("--workers", type=int, default=2,
                        help="batch child processes run side by side")
    parser.add_argument("--overhead_images", type=int, default=0,
                        help="instead of fuzzing: time this many images in process and "
                             "through TFLiteMember's child")
    parser.add_argument("--keep", default="", help="folder to keep the files in")
    args = parser.parse_args()
    if args.tflite < 0 or args.keras < 0 or args.tflite + args.keras == 0:
        parser.error("--tflite and --keras must be non-negative, not both 0")
    if args.workers < 1 or args.timeout_s <= 0:
        parser.error("--workers must be at least 1 and --timeout_s positive")
    started = time.time()
    folder = args.keep or tempfile.mkdtemp(prefix="model_fuzz_")
    os.makedirs(folder, exist_ok=True)
    if args.overhead_images > 0:
        best = overhead(args.overhead_images, folder)
        print(f"{args.overhead_images} images, best of 3: in process "
              f"{best['in_process']:.3f} s; TFLiteMember's child {best['child_first']:.3f} s "
              f"with its start, {best['child_again']:.3f} s started")
        print(f"child_overhead_s={best['child_first'] - best['in_process']:.3f}")
        return 0
    counts = fuzz(args.tflite, args.keras, args.seed, args.timeout_s, folder, args.workers)
    total = args.tflite + args.keras
    print(f"{total} files ({args.tflite} .tflite, {args.keras} .keras) in "
          f"{time.time() - started:.0f} s: ran={counts['ran']} refused={counts['refused']} "
          f"contained={counts['contained']} hung={counts['hung']}")
    print(f"native_crashes={counts['native_crash']} uncaught={counts['uncaught']}")
    return 0 if counts["native_crash"] == counts["uncaught"] == 0 else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2])
    else:
        sys.exit(main())

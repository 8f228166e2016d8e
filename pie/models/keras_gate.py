"""The gate every `.keras` file passes before tf_keras deserialises anything of it.

`load_model` with `safe_mode=True` refuses only lambda bytecode: a config may still name
any module (tf_keras imports it), any function (`builtins.eval`) for a Lambda layer,
and a constant input node makes Keras call that function while loading. So the
file is read here as data, and only a file every part of which is known is handed
to tf_keras:

  zip     exactly the three entries tf_keras 2 writes (`metadata.json`,
          `config.json`, `model.weights.h5`; no `assets/`, so tf_keras never
          extracts anything), each once, stored or deflated, not encrypted; the
          entries lie back to back from byte 0 and the end-of-central-directory
          record ends the file (nothing prepended or appended: no HDF5+zip
          polyglot, no HDF5 superblock signature where HDF5 looks for one);
          every entry's CRC is checked (a flipped byte is refused here, before
          h5py parses the weights).
  bounds  `MAX_TOTAL_BYTES` uncompressed in all (25 times the largest model the
          toolkit trains), each entry at most `MAX_RATIO` times its compressed
          size (tf_keras stores entries uncompressed, ratio 1; a zip bomb needs a
          ratio in the thousands), `config.json` at most `MAX_CONFIG_BYTES` and
          `MAX_DEPTH` levels of JSON, `metadata.json` at most `MAX_METADATA_BYTES`.
  config  every object reference (`module`, `class_name`, `registered_name`) is on
          the allowlist below: tf_keras's built-in layers (no Lambda of any kind:
          no Lambda, TFOpLambda, SlicingOpLambda), initializers, regularizers,
          constraints, the model classes, tfmot's pruning and quantization
          wrappers; `function` objects only for Keras activations; names given as
          strings (`activation: "relu"`, `kernel_initializer: "zeros"`) only from
          Keras's own lists; no `__lambda__`/`__typespec__`/`__tensor__`/
          `__numpy__`/`__bytes__` objects, no `_CONSTANT_VALUE` input node, no
          nested `compile_config` (the top one is discarded: models load
          uncompiled).

A file saved by Keras 3 (`metadata.json`'s `keras_version` 3.x) is named as such,
with how to save it with tf_keras instead.
"""
import json
import os
import struct
import zipfile

ENTRIES = ("metadata.json", "config.json", "model.weights.h5")
# ResNet-50 at 224 px is ~100 MB, WRN-28-10 146 MB: 4 GiB leaves room for models
# users bring, while bounding what a load may read into memory.
MAX_TOTAL_BYTES = 4 << 30
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 1 << 20  # entries smaller than this may compress any amount
MAX_CONFIG_BYTES = 16 << 20  # ResNet-50's config.json is 122 KB
MAX_METADATA_BYTES = 64 << 10
MAX_DEPTH = 100  # a layer is ~6 levels deep; nested models add ~10 each
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ALLOWED_TEXT = ("allowed: the zip tf_keras 2 writes, of built-in layers without Lambda "
                "(docs/contracts.md, 'Model files are data')")

LAYERS = frozenset("""
InputLayer Dense EinsumDense Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose
Conv3DTranspose DepthwiseConv1D DepthwiseConv2D SeparableConv1D SeparableConv2D
BatchNormalization LayerNormalization GroupNormalization UnitNormalization
Activation ReLU LeakyReLU PReLU ELU Softmax ThresholdedReLU
MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D
GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D GlobalMaxPooling1D
GlobalMaxPooling2D GlobalMaxPooling3D Flatten Reshape Permute RepeatVector Identity
Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianNoise GaussianDropout
AlphaDropout ActivityRegularization ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D
Cropping2D Cropping3D UpSampling1D UpSampling2D UpSampling3D Add Subtract Multiply Average
Maximum Minimum Concatenate Dot Rescaling Normalization Resizing CenterCrop RandomFlip
RandomRotation RandomZoom RandomTranslation RandomCrop RandomContrast RandomBrightness
RandomHeight RandomWidth Embedding MultiHeadAttention Attention AdditiveAttention
""".split())
MODELS = frozenset({"Functional", "Sequential", "Model"})
INITIALIZERS = frozenset("""
Zeros Ones Constant RandomNormal RandomUniform TruncatedNormal VarianceScaling Orthogonal
Identity GlorotNormal GlorotUniform HeNormal HeUniform LecunNormal LecunUniform
""".split())
REGULARIZERS = frozenset({"L1", "L2", "L1L2", "OrthogonalRegularizer"})
CONSTRAINTS = frozenset({"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "RadialConstraint"})
_TFMOT = "tensorflow_model_optimization.python.core."
# tfmot's own objects: the wrappers (named by module), and the schedules, quantize
# configs and quantizers inside them (saved without a module; tfmot looks them up
# in its own tables).
TFMOT_CLASSES = {
    _TFMOT + "sparsity.keras.pruning_wrapper": frozenset({"PruneLowMagnitude"}),
    _TFMOT + "quantization.keras.quantize_wrapper": frozenset(
        {"QuantizeWrapper", "QuantizeWrapperV2"}),
    _TFMOT + "quantization.keras.quantize_layer": frozenset({"QuantizeLayer"}),
    _TFMOT + "quantization.keras.quantize_aware_activation": frozenset(
        {"QuantizeAwareActivation"}),
}
TFMOT_INNER = frozenset("""
PolynomialDecay ConstantSparsity Default8BitQuantizeConfig Default8BitConvQuantizeConfig
Default8BitOutputQuantizeConfig NoOpQuantizeConfig AllValuesQuantizer LastValueQuantizer
MovingAverageQuantizer
""".split())
ALLOWED_CLASSES = {
    "keras.layers": LAYERS, "tf_keras.layers": LAYERS,
    "keras": MODELS, "tf_keras": MODELS, "keras.models": MODELS,
    "tf_keras.src.engine.functional": frozenset({"Functional"}),
    "keras.src.engine.functional": frozenset({"Functional"}),
    "tf_keras.src.engine.sequential": frozenset({"Sequential"}),
    "keras.initializers": INITIALIZERS, "tf_keras.initializers": INITIALIZERS,
    "keras.regularizers": REGULARIZERS, "tf_keras.regularizers": REGULARIZERS,
    "keras.constraints": CONSTRAINTS, "tf_keras.constraints": CONSTRAINTS,
    "keras.mixed_precision": frozenset({"Policy"}),
    **TFMOT_CLASSES,
    # No module: tf_keras looks the name up only among registered objects (never
    # imports); tfmot's inner objects are saved this way.
    None: LAYERS | MODELS | INITIALIZERS | REGULARIZERS | CONSTRAINTS | TFMOT_INNER,
}
ACTIVATIONS = frozenset("""
elu exponential gelu hard_sigmoid leaky_relu linear log_softmax mish relu relu6 selu
sigmoid silu softmax softplus softsign swish tanh
""".split())
# Names Keras resolves from strings, by the key that holds them.
NAMED = {
    "activation": ACTIVATIONS,
    "initializer": INITIALIZERS | frozenset("""
        zeros zero ones one constant uniform normal random_normal random_uniform
        truncated_normal variance_scaling orthogonal identity glorot_normal glorot_uniform
        he_normal he_uniform lecun_normal lecun_uniform""".split()),
    "regularizer": REGULARIZERS | frozenset({"l1", "l2", "l1_l2", "orthogonal_regularizer"}),
    "constraint": CONSTRAINTS | frozenset("""max_norm maxnorm min_max_norm non_neg nonneg
        unit_norm unitnorm radial_constraint""".split()),
}
FUNCTION_MODULES = frozenset({"builtins", "keras.activations", "tf_keras.activations"})
SPECIAL = ("__lambda__", "__typespec__", "__tensor__", "__numpy__", "__bytes__")
# Keys of a config that hold code or name it (Lambda and TFOpLambda layers).
CODE_KEYS = frozenset({"function", "function_type", "output_shape_type"})
CONSTANT_NODE = "_CONSTANT_VALUE"


class GateError(ValueError):
    """A `.keras` file outside the rules; the message is one line without the path."""


class Keras3Error(GateError):
    """A `.keras` file saved by Keras 3."""


# ----------------------------------------------------------------------------- zip


def _zip_layout(handle, size, infos):
    """The entries lie back to back from byte 0, then the central directory, then
    the end record at the very end of the file."""
    if size < 22:
        raise GateError("it is too short to be a zip file")
    handle.seek(size - 22)
    (signature, _disk, _cd_disk, _here, count, cd_size, cd_offset,
     comment) = struct.unpack("<4s4H2LH", handle.read(22))
    if signature != b"PK\x05\x06" or comment:
        raise GateError("bytes follow its zip end record (a zip comment or appended data)")
    cd_end = size - 22
    if 0xFFFFFFFF in (cd_size, cd_offset) or count == 0xFFFF:  # ZIP64 end records
        handle.seek(size - 42)
        locator = handle.read(20)
        if locator[:4] != b"PK\x06\x07":
            raise GateError("its ZIP64 end record is missing")
        (end64,) = struct.unpack("<Q", locator[8:16])
        handle.seek(end64)
        record = handle.read(56)
        if record[:4] != b"PK\x06\x06" or end64 + 12 + struct.unpack(
                "<Q", record[4:12])[0] != size - 42:
            raise GateError("its ZIP64 end record is not where the locator says")
        count, cd_size, cd_offset = struct.unpack("<QQQ", record[32:56])
        cd_end = end64
    if count != len(infos) or cd_offset + cd_size != cd_end:
        raise GateError("its central directory does not end at its end record")
    expected = 0
    for info in sorted(infos, key=lambda info: info.header_offset):
        if info.header_offset != expected:
            raise GateError("it holds bytes before or between its entries (a polyglot "
                            "or a damaged zip)")
        handle.seek(info.header_offset)
        header = handle.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise GateError(f"entry {info.filename!r} has no local header")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        expected = info.header_offset + 30 + name_length + extra_length + info.compress_size
        if info.flag_bits & 0x08:  # a data descriptor follows the data
            handle.seek(expected)
            descriptor = handle.read(4)
            zip64 = info.file_size >= 0xFFFFFFFF or info.compress_size >= 0xFFFFFFFF
            expected += (4 if descriptor == b"PK\x07\x08" else 0) + (20 if zip64 else 12)
    if expected != cd_offset:
        raise GateError("it holds bytes between its entries and its central directory")


def _data_offset(handle, info):
    handle.seek(info.header_offset + 26)
    name_length, extra_length = struct.unpack("<HH", handle.read(4))
    return info.header_offset + 30 + name_length + extra_length


def _no_hdf5_superblock(handle, size, weights_offset):
    """HDF5 looks for its signature at byte 0, 512, 1024, 2048, ...: none may be
    there, but where the weights entry (itself an HDF5 file) begins."""
    offset = 0
    while offset + 8 <= size:
        handle.seek(offset)
        if handle.read(8) == HDF5_SIGNATURE and offset != weights_offset:
            raise GateError(f"it holds an HDF5 signature at byte {offset} (an HDF5+zip "
                            "polyglot)")
        offset = 512 if offset == 0 else offset * 2


def check_zip(path):
    """Checks the container; returns {entry name: bytes} of the two JSON entries."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            raise GateError("it does not begin with a zip entry (an HDF5 or other file: "
                            "those can run code when loaded)")
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            raise GateError(f"it is not a readable zip file ({error})")
        with archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            for name in names:
                if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/") \
                        or (len(name) > 1 and name[1] == ":"):
                    raise GateError(f"it holds an entry outside the archive ({name!r})")
            if len(set(names)) != len(names):
                duplicate = next(name for name in names if names.count(name) > 1)
                raise GateError(f"it holds entry {duplicate!r} twice")
            if sorted(names) != sorted(ENTRIES):
                shown = ", ".join(repr(name) for name in names[:6])
                raise GateError(f"it holds entries {shown}{', ...' if len(names) > 6 else ''};"
                                f" a tf_keras .keras file holds exactly {', '.join(ENTRIES)}")
            total = 0
            for info in infos:
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise GateError(f"entry {info.filename!r} uses compression method "
                                    f"{info.compress_type} (stored or deflated only)")
                if info.flag_bits & 0x01:
                    raise GateError(f"entry {info.filename!r} is encrypted")
                total += info.file_size
                if info.file_size > RATIO_FLOOR_BYTES and \
                        info.file_size > MAX_RATIO * max(info.compress_size, 1):
                    raise GateError(
                        f"entry {info.filename!r} unpacks {info.file_size} bytes from "
                        f"{info.compress_size} (over {MAX_RATIO} times: a zip bomb)")
            if total > MAX_TOTAL_BYTES:
                raise GateError(f"it unpacks {total} bytes (at most {MAX_TOTAL_BYTES})")
            limits = {"config.json": MAX_CONFIG_BYTES, "metadata.json": MAX_METADATA_BYTES}
            for name, limit in limits.items():
                if archive.getinfo(name).file_size > limit:
                    raise GateError(f"its {name} is over {limit} bytes")
            _zip_layout(handle, size, infos)
            weights = archive.getinfo("model.weights.h5")
            _no_hdf5_superblock(handle, size, _data_offset(handle, weights))
            texts = {}
            try:
                for info in infos:  # reading to the end checks the CRC
                    with archive.open(info) as entry:
                        if info.filename in limits:
                            texts[info.filename] = entry.read(limits[info.filename] + 1)
                        else:
                            while entry.read(1 << 22):
                                pass
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
                raise GateError(f"it is a damaged zip file ({error})")
    return texts


# -------------------------------------------------------------------------- config


def _parse_json(name, content):
    try:
        value = json.loads(content)
    except RecursionError:
        raise GateError(f"its {name} is nested over {MAX_DEPTH} levels")
    except (ValueError, UnicodeDecodeError) as error:
        raise GateError(f"its {name} is not JSON ({error})")
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise GateError(f"its {name} is nested over {MAX_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else (
            node if isinstance(node, list) else ())
        stack.extend((child, depth + 1) for child in children)
    return value


def _keras3_version(metadata, config):
    """The Keras version that saved a Keras 3 file, else None."""
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    if isinstance(version, str) and version.split(".")[0] == "3":
        return version
    # Keras 3 configs name their dtype policies as objects of module "keras".
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") \
                    and node.get("module") == "keras":
                return "3"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _object_problem(node):
    """What is refused about one `{class_name, ...}` object of a config, or None."""
    class_name, module = node.get("class_name"), node.get("module")
    if not isinstance(class_name, str) or not (module is None or isinstance(module, str)):
        return "an object whose class_name or module is not a name"
    if class_name in SPECIAL:
        return f"a {class_name} object (constants and code are not read from configs)"
    if class_name == "function":
        name = node.get("config")
        if module in FUNCTION_MODULES and isinstance(name, str) and name in ACTIVATIONS:
            return None
        return f"function {module}.{name}" if module else f"function {name!r}"
    if class_name in ("Lambda", "TFOpLambda", "SlicingOpLambda"):
        return f"a {class_name} layer (Lambda layers hold code)"
    if class_name not in ALLOWED_CLASSES.get(module, ()):
        return f"class {class_name} of module {module}" if module else f"class {class_name}"
    registered = node.get("registered_name")
    if registered is not None and registered != class_name:
        return f"registered name {registered!r} for class {class_name}"
    return None


def _named_problem(key, value):
    for suffix, names in NAMED.items():
        if (key == suffix or key.endswith("_" + suffix)) and isinstance(value, str) \
                and value not in names:
            return f"{suffix} {value!r}"
    return None


MAX_TENSOR_INDEX = 1024


def _is_index(value, bound=None):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0 and (
        bound is None or value < bound)


def _starts_with_input(layer):
    inner = layer.get("config")
    return (layer.get("class_name") in MODELS and isinstance(inner, dict)
            and isinstance(inner.get("layers"), list) and bool(inner["layers"])
            and isinstance(inner["layers"][0], dict)
            and inner["layers"][0].get("class_name") == "InputLayer")


def _check_graph(model):
    """A functional model's nodes name its own layers, by indices that exist, with
    plain-valued arguments, and form no cycle: tf_keras rebuilds the graph by
    processing nodes until none is left, so a node that can never be processed
    (a missing layer, index or a cycle) would loop forever."""
    layers = model.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise GateError("its config has a model without a list of layers")
    names = [layer.get("name") for layer in layers]
    if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise GateError("its config has a model whose layer names are missing or repeated")
    nodes = {}
    for layer in layers:
        inbound = layer.get("inbound_nodes", [])
        if not isinstance(inbound, list):
            raise GateError(f"layer {layer['name']!r} has inbound_nodes that are not a list")
        nodes[layer["name"]] = inbound
    # Node indices a config may name: a nested model built on an Input layer has
    # an inner node of its own, which the config does not list, so its listed nodes
    # are 1..n (tf_keras's `_should_skip_first_node`); an Input layer has node 0.
    first = {layer["name"]: int(_starts_with_input(layer)) for layer in layers}
    count = {name: max(1, len(inbound)) for name, inbound in nodes.items()}

    def reference(entry, where):
        name = entry[0] if isinstance(entry, list) and entry else None
        if not (isinstance(entry, list) and len(entry) in (3, 4) and isinstance(name, str)
                and name in count
                and _is_index(entry[1], first[name] + count[name])
                and entry[1] >= first[name] and _is_index(entry[2], MAX_TENSOR_INDEX)):
            raise GateError(f"{where} names a layer, node or tensor that does not exist")
        if len(entry) == 4 and not (isinstance(entry[3], dict) and all(
                value is None or isinstance(value, (bool, int, float, str))
                for value in entry[3].values())):
            raise GateError(f"{where} passes arguments that are not plain values")
        return entry[0]

    edges = {}
    for name, inbound in nodes.items():
        for node in inbound:
            if not isinstance(node, list) or not node:
                raise GateError(f"layer {name!r} has an inbound node that is not a list")
            edges.setdefault(name, set()).update(
                reference(entry, f"layer {name!r}") for entry in node)
    for key in ("input_layers", "output_layers"):
        entries = model.get(key)
        if not isinstance(entries, list) or not entries:
            raise GateError(f"its config has a model without {key}")
        if len(entries) == 3 and isinstance(entries[0], str):
            entries = [entries]  # a single tensor is saved unwrapped
        for entry in entries:
            reference(entry, key)
    state = {}  # layers on the current path: 1; done: 2
    for start in nodes:
        stack = [(start, iter(edges.get(start, ())))]
        state[start] = state.get(start) or 1
        if state[start] == 2:
            continue
        while stack:
            name, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[name] = 2
                stack.pop()
            elif state.get(child) == 1:
                raise GateError(f"layer {child!r} feeds itself (a cycle in the graph)")
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(edges.get(child, ()))))


def check_config(config):
    """Raises GateError unless every object the config names is allowed."""
    problem = _object_problem(config) if isinstance(config, dict) else None
    if problem:
        raise GateError(f"its config names {problem}")
    if not isinstance(config, dict) or config.get("class_name") not in MODELS:
        raise GateError("its config.json does not describe a model (Functional or "
                        "Sequential)")
    graphs = []  # functional models' configs, checked once every object is known
    if config.get("class_name") in ("Functional", "Model") and isinstance(
            config.get("config"), dict) and "layers" in config["config"]:
        graphs.append(config["config"])
    # The top compile_config is discarded unread (models load uncompiled).
    stack = [(key, value) for key, value in config.items() if key != "compile_config"]
    while stack:
        key, node = stack.pop()
        if isinstance(node, str):
            if node == CONSTANT_NODE:
                raise GateError("its config names a constant input node "
                                "(_CONSTANT_VALUE): inputs come from layers only")
            continue
        if isinstance(node, list):
            stack.extend((key, item) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        if "class_name" in node:
            problem = _object_problem(node)
            if problem:
                raise GateError(f"its config names {problem}")
            inner = node.get("config")
            if node["class_name"] in ("Functional", "Model") and isinstance(inner, dict) \
                    and "layers" in inner:
                graphs.append(inner)
        for child_key, child in node.items():
            if child_key in CODE_KEYS:
                raise GateError(f"its config holds code ({child_key!r})")
            if child_key == "compile_config" and child is not None:
                raise GateError("its config holds a nested compile_config (models load "
                                "uncompiled)")
            if child_key in ("module", "registered_name") and "class_name" not in node:
                raise GateError(f"its config names {child_key} {child!r} outside an object")
            problem = _named_problem(child_key, child)
            if problem:
                raise GateError(f"its config names {problem}")
            stack.append((child_key, child))
    for graph in graphs:
        _check_graph(graph)


def check(path):
    """Raises GateError (Keras3Error for a Keras 3 file) unless `path` passes the gate."""
    texts = check_zip(path)
    metadata = _parse_json("metadata.json", texts["metadata.json"])
    config = _parse_json("config.json", texts["config.json"])
    version = _keras3_version(metadata, config)
    if version:
        raise Keras3Error(version)
    try:
        check_config(config)
    except (TypeError, KeyError, AttributeError, IndexError) as error:
        # Fails closed: a shape of config the checks did not foresee is refused.
        raise GateError(f"its config.json has an unexpected shape ({type(error).__name__})")

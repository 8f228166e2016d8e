r"""SiPP (torchprune's SiPPNet) against the earlier mean-based score on one network.

    python benchmarks/sipp_scores.py --workdir=W [--sparsity=0.9] [--per_class=10]

Prunes the first dense member of W once (no fine-tuning) with `sipp` and with
`sipp_mean` over the layers the training stage prunes (classifier excluded), then
`sipp` with the classifier and the bias-counting budget (torchprune's full rule),
on the same reference images (`--per_class` training images per class, the
member's seed). Prints per-layer sparsity and one-shot top-1 on the eval split;
the last line is `jaccard=<overlap of the kept weights of sipp and sipp_mean>`.
docs/robustness.md gives the figures on mnist5k.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import pie  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.compress import pruning, training  # noqa: E402
from pie.data import sources  # noqa: E402
from pie.io import records  # noqa: E402
from pie.io.workdir import Workdir  # noqa: E402
from pie.models import loading  # noqa: E402


def prune_once(workdir, row, method, sparsity, x, include_classifier=False,
               count_biases=False):
    model = loading.load_keras(Workdir(workdir).model_path(row))
    names = pruning.prunable_layer_names(model, include_classifier)
    masks = training.prune_weights(model, method, sparsity, names, x, count_biases)
    return model, masks, pruning.kernel_sparsity(model, names)


def main(argv):
    options = {"workdir": None, "sparsity": "0.9", "per_class": "10"}
    for arg in argv[1:]:
        key, _, value = arg.lstrip("-").partition("=")
        if key not in options or not value:
            print(f"error: unknown argument {arg}; allowed: --workdir=W, --sparsity=S, "
                  "--per_class=N", file=sys.stderr)
            return 2
        options[key] = value
    if options["workdir"] is None:
        print("error: --workdir is required", file=sys.stderr)
        return 2
    workdir, sparsity = options["workdir"], float(options["sparsity"])
    manifest = records.read_manifest(workdir)
    row = manifest[manifest["method"] == records.DENSE_METHOD].iloc[0]
    source = sources.load_for_workdir(workdir)
    x, _ = training.reference_samples(source, int(options["per_class"]), int(row["seed"]))
    raw, labels, _ = source.eval_arrays()
    inputs = np.asarray(source.normalize(raw), np.float32)
    kept = {}
    for method, classifier, biases in (("sipp", False, False), ("sipp_mean", False, False),
                                       ("sipp", True, True)):
        model, masks, (per_layer, overall) = prune_once(workdir, row, method, sparsity, x,
                                                        classifier, biases)
        top1 = float((model.predict(inputs, verbose=0).argmax(1) == labels).mean())
        layers = ", ".join(f"{name} {value:.3f}" for name, value in per_layer.items())
        label = method + (" (classifier, biases counted)" if classifier else "")
        print(f"{label}: {layers}; overall {overall:.4f}; one-shot top-1 {top1:.3f}",
              flush=True)
        if not classifier:
            kept[method] = np.concatenate([masks[name].ravel() for name in sorted(masks)])
    a, b = kept["sipp"], kept["sipp_mean"]
    print(f"jaccard={(a & b).sum() / (a | b).sum():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

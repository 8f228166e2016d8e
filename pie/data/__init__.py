"""Data sources selected by --dataset: registries of datasets, TFRecords, tfds, toy 2-D sets."""

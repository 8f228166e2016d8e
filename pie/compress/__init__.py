"""Compression methods: magnitude pruning, unit criteria, population training, TFLite quantization."""

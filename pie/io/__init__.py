"""Workdir files and command-line plumbing: layout, atomic records, errors, flags, progress."""

"""The report stage: one self-contained HTML (or Markdown) page from every stage's outputs."""

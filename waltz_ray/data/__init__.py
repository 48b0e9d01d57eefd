"""Data shipped with the package: ``prompts.jsonl``, a small contrast set of harmful / benign-look-alike prompt pairs.

Each row is ``{"id", "pair", "label", "category", "split", "text"}``; both members of a pair share a split.
Load it with :func:`waltz_ray.data.loaders.load_builtin_prompts`.
"""

"""Reading configs an older version saved: retired fields renamed or dropped, with a note per change."""

from __future__ import annotations

import copy
from typing import Any

# Fields a saved config (``save_config``: every field, defaults included) of an older version may hold, and what they
# mean now: (section path, old name, new name or None). Every one was renamed, or had no effect: dropping it keeps
# what the run did.
_SAVED_MIGRATIONS: tuple[tuple[tuple[str, ...], str, str | None], ...] = (
    (("reward",), "alpha", "dir_weight"),
    (("reward",), "lambda_stage1", "label_weight_stage1"),
    (("reward",), "lambda_stage2", "label_weight_stage2"),
    (("reward",), "gamma", "format_weight"),
    (("learner",), "optimizer", None),
    (("runtime", "learner_pool"), "num_actors", None),
    (("runtime", "learner_pool"), "tensor_parallel_size", None),
    (("runtime", "judge_pool"), "tensor_parallel_size", None),
    (("runtime", "reference_pool"), "tensor_parallel_size", None),
)


def migrate_saved_tree(tree: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A saved config tree of an older version with its retired fields renamed or dropped (see
    ``_SAVED_MIGRATIONS``), and a note per change. For configs a run wrote, never for ones a person writes: those
    fail naming the retired field, so that a setting is never silently dropped."""
    tree = copy.deepcopy(tree)
    notes = []
    for path, old, new in _SAVED_MIGRATIONS:
        node: Any = tree
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or old not in node:
            continue
        value = node.pop(old)
        where = ".".join(path)
        if new is None:
            notes.append(f"dropped {where}.{old}={value!r} (it had no effect)")
        else:
            node.setdefault(new, value)
            notes.append(f"{where}.{old} -> {where}.{new}")
    return tree, notes

"""A compact text summary of results rows: mean test score per approach and generation.

Rows of one approach and generation made under different settings are never pooled:
each settings group gets its own line, marked with the settings ids of its rows
(``RUN/settings.yaml`` lists their values).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

BENCHMARK_ORDER = ("fdt", "aldt", "ldt")

GroupKey = tuple[str, int, str]
"""(approach, generation, settings group)."""


def group_scores(rows: list[dict], column: str = "test_iou",
                 groups: list[str] | None = None) -> dict[GroupKey, list[float]]:
    """``(approach, generation, settings group) -> [scores]`` over runs, teacher counts and
    candidates. ``groups``: one settings group per row (default: the row's settings id)."""
    out: dict[GroupKey, list[float]] = defaultdict(list)
    for r, group in zip(rows, settings_of_rows(rows, groups), strict=True):
        if r.get(column) is not None:
            out[(r["approach"], int(r["generation"] or 0), group)].append(float(r[column]))
    return out


def settings_of_rows(rows: list[dict], groups: list[str] | None) -> list[str]:
    return groups if groups is not None else [str(r.get("settings") or "") for r in rows]


def split_labels(rows: list[dict], groups: list[str] | None) -> dict[GroupKey, str]:
    """For the groups of an (approach, generation) that holds several: the settings ids of
    their rows (``a1b2c3+d4e5f6``); others are absent."""
    ids: dict[GroupKey, set[str]] = defaultdict(set)
    for r, group in zip(rows, settings_of_rows(rows, groups), strict=True):
        ids[(r["approach"], int(r["generation"] or 0), group)].add(str(r.get("settings") or "?"))
    count: dict[tuple[str, int], int] = defaultdict(int)
    for approach, gen, _ in ids:
        count[(approach, gen)] += 1
    return {key: "+".join(sorted(found)) for key, found in ids.items()
            if count[key[:2]] > 1}


def summary_table(rows: list[dict], column: str = "test_iou",
                  groups: list[str] | None = None) -> str:
    """Benchmarks first, then each approach by generation: mean ± std (n models); a stage
    whose rows were made under different settings gets a line per settings."""
    scores = group_scores(rows, column, groups)
    if not scores:
        return "(no results yet)"
    labels = split_labels(rows, groups)

    def order(key: GroupKey) -> tuple:
        approach, gen, group = key
        bench = BENCHMARK_ORDER.index(approach) if approach in BENCHMARK_ORDER else len(BENCHMARK_ORDER)
        return (bench, approach, gen, labels.get(key, group))

    lines = [f"{'approach':<18} {'gen':>3} {column:>16} {'n':>4}"]
    for key in sorted(scores, key=order):
        values = np.asarray(scores[key])
        mark = f"  settings {labels[key]}" if key in labels else ""
        lines.append(f"{key[0]:<18} {key[1]:>3} {values.mean():>9.3f} ± {values.std():.3f} "
                     f"{len(values):>4}{mark}")
    if labels:
        lines.append("note: rows of one stage trained under different settings are listed "
                     "apart (settings.yaml in the run folder lists each id's values)")
    return "\n".join(lines)

"""A compact text summary of results rows: mean test score per approach and generation."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

BENCHMARK_ORDER = ("fdt", "aldt", "ldt")


def group_scores(rows: list[dict], column: str = "test_iou") -> dict[tuple[str, int], list[float]]:
    """``(approach, generation) -> [scores]`` over runs, teacher counts and candidates."""
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        if r.get(column) is not None:
            groups[(r["approach"], int(r["generation"] or 0))].append(float(r[column]))
    return groups


def summary_table(rows: list[dict], column: str = "test_iou") -> str:
    """Benchmarks first, then each approach by generation: mean ± std (n models)."""
    groups = group_scores(rows, column)
    if not groups:
        return "(no results yet)"
    def order(key: tuple[str, int]) -> tuple:
        approach, gen = key
        bench = BENCHMARK_ORDER.index(approach) if approach in BENCHMARK_ORDER else len(BENCHMARK_ORDER)
        return (bench, approach, gen)
    lines = [f"{'approach':<18} {'gen':>3} {column:>16} {'n':>4}"]
    for key in sorted(groups, key=order):
        values = np.asarray(groups[key])
        lines.append(f"{key[0]:<18} {key[1]:>3} {values.mean():>9.3f} ± {values.std():.3f} "
                     f"{len(values):>4}")
    return "\n".join(lines)

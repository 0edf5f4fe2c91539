"""imseg run's final table: mean ± std per approach and generation, settings kept apart."""

from __future__ import annotations

from imseg.evaluation.summary import summary_table


def _row(approach: str, generation: int, score: float, settings: str) -> dict:
    return {"approach": approach, "generation": generation, "test_iou": score,
            "settings": settings}


ROWS = [_row("im", 1, .7, "a"), _row("ldt", 0, .5, "a"), _row("ldt", 0, .7, "a"),
        _row("ldt", 0, .1, "b")]


def _lines(table: str, start: str) -> list[list[str]]:
    return [line.split() for line in table.splitlines() if line.startswith(start)]


def test_a_stage_of_two_settings_gets_a_line_per_settings():
    table = summary_table(ROWS)
    assert _lines(table, "ldt") == [["ldt", "0", "0.600", "±", "0.100", "2", "settings", "a"],
                                    ["ldt", "0", "0.100", "±", "0.000", "1", "settings", "b"]]
    assert _lines(table, "im") == [["im", "1", "0.700", "±", "0.000", "1"]]
    assert "listed apart" in table


def test_groups_decide_what_is_pooled():
    """Rows of different ids whose stage settings agree (the groups say so) are pooled."""
    table = summary_table(ROWS, groups=["x", "y", "y", "y"])
    assert _lines(table, "ldt") == [["ldt", "0", "0.433", "±", "0.249", "3"]]
    assert "settings" not in table.replace("test_iou", "")
    assert summary_table([]) == "(no results yet)"

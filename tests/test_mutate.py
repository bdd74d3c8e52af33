"""`make mutate`'s tool works: it kills a mutant a test notices, reports one no test notices, and
every mutant the equivalent list names still exists."""

from __future__ import annotations

from pathlib import Path

from bot.devtools.mutate import (
    TARGETS,
    Report,
    Source,
    Target,
    equivalent_keys,
    mutants,
    run_target,
)

TINY = '''
def positive(n):
    """True for numbers above zero."""
    return n > 0
'''


def tiny_target(tmp_path: Path, asserts: str) -> Target:
    (tmp_path / "tiny_guarded.py").write_text(TINY)
    (tmp_path / "test_tiny_guarded.py").write_text(
        f"from tiny_guarded import positive\n\n\ndef test_positive():\n{asserts}"
    )
    return Target(
        "tiny",
        (Source(str(tmp_path / "tiny_guarded.py"), ("positive",), module="tiny_guarded"),),
        (str(tmp_path / "test_tiny_guarded.py"),),
    )


def test_the_mutants_of_a_comparison_are_its_flip_and_its_bounds(tmp_path: Path) -> None:
    target = tiny_target(tmp_path, "    assert positive(1)\n")
    found = [(m.before, m.after) for m in mutants(target.sources[0])]
    assert found == [
        ("return n > 0", "return None"),
        ("n > 0", "n >= 0"),
        ("0", "1"),
    ]


def test_a_mutant_the_tests_notice_is_killed_and_one_they_miss_survives(tmp_path: Path) -> None:
    # away from the edge: `n >= 0` and `0 < 1` go unnoticed, `return None` does not
    target = tiny_target(tmp_path, "    assert positive(5)\n    assert not positive(-5)\n")
    report = run_target(target, tmp_path / "logs", {})
    assert [outcome for _, outcome in report.results] == ["killed", "survived", "survived"]
    assert [m.after for m in report.survivors] == ["n >= 0", "1"]
    assert report.rate == 1 / 3
    said = list(report.lines())
    assert said[0].startswith("tiny: 3 mutants, 1 killed, 2 survived (0 equivalent), 0 timeout")
    judged = Report("tiny", report.results, {report.survivors[0].key: "a reason"})
    assert judged.rate == 1 / 2


def test_every_mutant_judged_equivalent_still_exists() -> None:
    existing = {m.key for t in TARGETS for s in t.sources for m in mutants(s)}
    listed = equivalent_keys()
    assert sorted(set(listed) - existing) == []
    assert all(reason for reason in listed.values())

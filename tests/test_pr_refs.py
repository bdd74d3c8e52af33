"""The PR reference parser on its own: every way a person or Slack names a PR, and what is not."""

from __future__ import annotations

import pytest

from bot import pr_refs
from bot.pr_refs import PrRef


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("<https://github.com/o/r/pull/42|#42>", PrRef(42, "o/r")),
        ("<https://github.com/o/r/pull/42>", PrRef(42, "o/r")),
        ("https://github.com/o/r/pull/42", PrRef(42, "o/r")),
        ("http://github.com/o/r/pull/42/files", PrRef(42, "o/r")),
        ("https://github.com/o/r/pull/42#issuecomment-1", PrRef(42, "o/r")),
        (
            "<https://github.example.com/acme/web.app/pull/7|acme/web.app#7 Fix it>",
            PrRef(7, "acme/web.app"),
        ),
        ("o/r#42", PrRef(42, "o/r")),
        ("Codertocat/Hello-World#2", PrRef(2, "Codertocat/Hello-World")),
        ("#42", PrRef(42)),
        ("PR-42", PrRef(42)),
        ("pr-42", PrRef(42)),
        ("42", PrRef(42)),
        ("  PR-42 ", PrRef(42)),
    ],
)
def test_every_accepted_form_names_its_pr(ref: str, expected: PrRef) -> None:
    assert pr_refs.parse(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "pr_two",
        "PR42",
        "PR-",
        "#",
        "0",
        "PR-0",
        "-5",
        "42abc",
        "1234567890",  # more digits than any PR number
        "٤٢",  # Arabic-Indic digits: \d would take them, int() would read them
        "42\n7",  # a newline inside must not slip past an anchor
        "42\nPR-7",
        "https://github.com/o/r/issues/42",
        "https://github.com/o/r/pull/",
        "https://github.com/o/r/pull/42abc",
        "<https://github.com/o/r/issues/42|#42>",
        "<#42>",
        "<PR-42>",
        "<!channel>",
        "<@U0HUMAN>",
        "javascript:alert(1)//github.com/o/r/pull/42",
        "o/r#",
        "o/r/x#42",
        "-o/r#42",
        "o r#42",
        "https://github.com/o/r/pull/42 extra",
        "<https://github.com/o/r/pull/42|#42",
        "https://github.com/" + "o" * 10_000 + "/r/pull/42",
        "4" * 100_000,
    ],
)
def test_anything_else_is_not_a_pr(ref: str) -> None:
    assert pr_refs.parse(ref) is None


def test_the_link_decides_which_pr_not_its_label() -> None:
    assert pr_refs.parse("<https://github.com/o/r/pull/42|#7>") == PrRef(42, "o/r")


def test_a_labelled_link_at_the_start_loses_only_its_label() -> None:
    text = "<https://github.com/o/r/pull/42|#42 Fix the footer> also see <https://x.io/pull/1|a b>"
    assert pr_refs.drop_leading_label(text) == (
        "<https://github.com/o/r/pull/42> also see <https://x.io/pull/1|a b>"
    )
    assert pr_refs.drop_leading_label("PR-2 see <https://github.com/o/r/pull/4|#4 x>") == (
        "PR-2 see <https://github.com/o/r/pull/4|#4 x>"
    )

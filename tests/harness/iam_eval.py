"""IAM's policy evaluation for identity-based policies, as AWS documents it, for the tests.

Follows the IAM User Guide: "Policy evaluation logic" (an explicit Deny wins, then an Allow, else
the implicit deny), "IAM JSON policy elements: Action / NotAction, Resource / NotResource", "ARN
matching" (wildcards `*` and `?` work within each of an ARN's six colon-separated parts),
"Condition operators" (String*, Arn*, Bool, Numeric*, Null, `...IfExists`; a key missing from the
request makes a condition false, except for negated operators, `IfExists` and Null), "Single-valued
vs. multivalued context keys" (`ForAllValues:` is true for a missing key or when every value
matches; `ForAnyValue:` needs at least one matching value) and "Policy variables" (`${aws:...}`
in Resource and condition values; `${*}`, `${?}` and `${$}` are the literal characters; an
unresolved variable makes its element not match).

Why not a library: moto's `moto.iam.access_control` ignores the Condition element altogether, and
principalmapper's local simulator (AGPL, last released 2022) matches resources case-insensitively,
never expands policy variables in condition values and treats `StringNotLike` on a missing key as
false. Both would pass policies that AWS refuses, which is what these tests exist to catch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Context = dict[str, str | list[str]]


@dataclass(frozen=True)
class Request:
    """One authorization request: what AWS evaluates for one action on one resource."""

    action: str
    resource: str
    context: Context = field(default_factory=dict)
    why: str = ""  # the API call this request comes from, for messages

    def __str__(self) -> str:
        keys = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.action} on {self.resource} [{keys}]" + (f" ({self.why})" if self.why else "")


class Unresolved(Exception):
    """A policy variable with no value in the request."""


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _lookup(context: Context, key: str) -> str | list[str] | None:
    """Context keys are case-insensitive; their values are not."""
    lowered = key.lower()
    for name, value in context.items():
        if name.lower() == lowered:
            return value
    return None


_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _substitute(text: str, context: Context) -> str:
    """`text` with its policy variables replaced by the request's values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in ("*", "?", "$"):
            return name
        key, _, default = name.partition(",")
        found = _lookup(context, key.strip())
        if isinstance(found, str):
            return found
        if default:
            return default.strip().strip("'")
        raise Unresolved(name)

    return _VARIABLE.sub(value, text)


def _glob(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """`*` any run of characters, `?` one; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, text, flags) is not None


def arn_like(pattern: str, arn: str) -> bool:
    """ArnLike: each of the six colon-separated parts matched on its own."""
    if pattern == "*":
        return True
    wanted, got = pattern.split(":", 5), arn.split(":", 5)
    if len(wanted) != 6 or len(got) != 6:
        return False
    return all(_glob(w, g) for w, g in zip(wanted, got, strict=True))


def _action_matches(pattern: str, action: str) -> bool:
    return _glob(pattern, action, ignore_case=True)


def _resource_matches(pattern: str, resource: str, context: Context) -> bool:
    try:
        expanded = _substitute(pattern, context)
    except Unresolved:
        return False
    if resource == "*":  # an action without resource-level permissions needs "Resource": "*"
        return expanded == "*"
    return arn_like(expanded, resource)


def _single(base: str, wanted: str, got: str) -> bool:
    """One policy value against one request value, for the non-negated operator `base`."""
    if base == "StringEquals":
        return wanted == got
    if base == "StringEqualsIgnoreCase":
        return wanted.lower() == got.lower()
    if base == "StringLike":
        return _glob(wanted, got)
    if base == "ArnEquals" or base == "ArnLike":
        return arn_like(wanted, got)
    if base == "Bool":
        return wanted.lower() == got.lower()
    if base.startswith("Numeric"):
        left, right = float(got), float(wanted)
        return {
            "NumericEquals": left == right,
            "NumericLessThan": left < right,
            "NumericLessThanEquals": left <= right,
            "NumericGreaterThan": left > right,
            "NumericGreaterThanEquals": left >= right,
        }[base]
    raise ValueError(f"condition operator {base} is not supported by tests/harness/iam_eval.py")


_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
}


def _condition(operator: str, key: str, policy_values: Any, context: Context) -> bool:
    """One key of one condition operator against the request."""
    qualifier, _, operator = operator.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    raw = _lookup(context, key)
    present = raw is not None and raw != [] and raw != ""
    if operator == "Null":
        return any((str(v).lower() == "true") != present for v in _listify(policy_values))
    try:
        wanted = [_substitute(str(v), context) for v in _listify(policy_values)]
    except Unresolved:
        return False
    negated = operator in _NEGATED
    base = _NEGATED.get(operator, operator)
    got = [str(v) for v in _listify(raw)] if present else []

    def one(value: str) -> bool:
        matched = any(_single(base, w, value) for w in wanted)
        return not matched if negated else matched

    if qualifier == "ForAllValues":
        return all(one(v) for v in got)
    if qualifier == "ForAnyValue":
        return any(one(v) for v in got)
    if qualifier:
        raise ValueError(f"set operator {qualifier} is not supported by tests/harness/iam_eval.py")
    if not present:
        return if_exists or negated
    return any(one(v) for v in got) if not negated else all(one(v) for v in got)


def _statement_applies(statement: dict[str, Any], request: Request) -> bool:
    if "Action" in statement:
        if not any(_action_matches(p, request.action) for p in _listify(statement["Action"])):
            return False
    elif any(_action_matches(p, request.action) for p in _listify(statement["NotAction"])):
        return False
    if "Resource" in statement:
        patterns = _listify(statement["Resource"])
        if not any(_resource_matches(p, request.resource, request.context) for p in patterns):
            return False
    elif "NotResource" in statement:
        patterns = _listify(statement["NotResource"])
        if any(_resource_matches(p, request.resource, request.context) for p in patterns):
            return False
    for operator, keys in statement.get("Condition", {}).items():
        for key, values in keys.items():
            if not _condition(operator, key, values, request.context):
                return False
    return True


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # "allowed by <sid>", "explicitly denied by <sid>" or "no statement allows it"


def evaluate(policies: list[dict[str, Any]], request: Request) -> Decision:
    """AWS's decision for `request` under these identity-based policies (same account)."""
    allows: list[str] = []
    for policy in policies:
        for index, statement in enumerate(_listify(policy["Statement"])):
            if not _statement_applies(statement, request):
                continue
            sid = statement.get("Sid", f"statement {index}")
            if statement["Effect"] == "Deny":
                return Decision(False, f"explicitly denied by {sid}")
            allows.append(sid)
    if allows:
        return Decision(True, f"allowed by {allows[0]}")
    return Decision(False, "no statement allows it")

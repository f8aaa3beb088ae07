"""The error tree, and the code table of the service's error-code page."""

from __future__ import annotations

import pickle
import re

import pytest

import mpt_async
from mpt_async import _exceptions
from mpt_async._codes import (
    CODE_TABLE,
    QUOTA_KINDS,
    Action,
    classify_code,
    classify_status,
    make_error,
)

RETRY = {1, 2, 15, 336000, 336100}
#: A rate quota refused: wait for capacity, not counted as a retry.
WAIT = {4, 18, 336501, 336502}
REFRESH = {110, 111}
RAISE = {
    3,
    6,
    13,
    14,
    17,
    19,
    100,
    336001,
    336002,
    336003,
    336004,
    336005,
    336006,
    336007,
    336101,
    336103,
    336104,
    336105,
}
RATE = {4, 17, 18, 19, 336501, 336502}
AUTH = {13, 14, 100, 110, 111}


V2_RETRY = {"internal_error", "dispatch_internal_error"}
V2_REFRESH = {"invalid_iam_token"}
V2_WAIT = {
    *(f"{kind}rate_limit_exceeded" for kind in ("user_", "cluster_", "rpm_", "tpm_")),
    *(f"{kind}_rate_limit_exceeded" for kind in ("input_tpm", "output_tpm", "preemptible")),
    "cluster_rpm_rate_limit_exceeded",
    "cluster_tpm_rate_limit_exceeded",
}
V2_RAISE = {
    "malformed_json",
    "invalid_argument",
    "invalid_messages",
    "characters_too_long",
    "tokens_too_long",
    "method_not_supported",
    "invalid_model",
    "invalid_appid",
    "account_overdue",
    "model_offline",
}

V1_CODES = RETRY | WAIT | REFRESH | RAISE
V2_CODES = V2_RETRY | V2_WAIT | V2_REFRESH | V2_RAISE

#: The action each code of both pages implies.
ACTIONS = {
    **dict.fromkeys(RETRY | V2_RETRY, Action.RETRY),
    **dict.fromkeys(WAIT | V2_WAIT, Action.WAIT),
    **dict.fromkeys(REFRESH | V2_REFRESH, Action.REFRESH),
    **dict.fromkeys(RAISE | V2_RAISE, Action.RAISE),
}


def test_table_covers_every_spec_code() -> None:
    """The table holds exactly the codes of both error-code pages (v1's numbers, v2's names)."""
    assert {c for c in CODE_TABLE if isinstance(c, int)} == V1_CODES
    assert {c for c in CODE_TABLE if isinstance(c, str)} == V2_CODES


@pytest.mark.parametrize("code", sorted(V2_CODES))
def test_v2_code_actions(code: str) -> None:
    """v2 server codes are retried, quota codes wait, a refused token is refreshed, the rest raise."""
    action, _ = classify_code(code)
    assert action is ACTIONS[code]
    assert (classify_code(code)[1] is mpt_async.RateLimitError) == code.endswith("_exceeded")


@pytest.mark.parametrize("code", sorted(V1_CODES))
def test_code_actions_follow_the_spec(code: int) -> None:
    """Each code is retried, waited on, refreshed or raised as the error-code page implies."""
    action, cls = classify_code(code)
    assert action is ACTIONS[code]
    if code in RATE:
        assert cls is mpt_async.RateLimitError
    if code in AUTH:
        assert cls is mpt_async.AuthenticationError
    assert issubclass(cls, mpt_async.APIError)


def test_unknown_code_raises_keeping_code_and_message() -> None:
    """An unknown code is raised as a plain APIError with its code and message."""
    action, error = make_error(999999, "new thing", status_code=200, request_id="as-1")
    assert action is Action.RAISE
    assert type(error) is mpt_async.APIError
    assert (error.error_code, error.error_msg, error.status_code, error.request_id) == (
        999999,
        "new thing",
        200,
        "as-1",
    )
    assert "999999" in str(error)
    assert "new thing" in str(error)


@pytest.mark.parametrize(
    ("status", "action", "cls"),
    [
        (429, Action.WAIT, mpt_async.RateLimitError),
        (500, Action.RETRY, mpt_async.InternalServerError),
        (502, Action.RETRY, mpt_async.InternalServerError),
        (503, Action.RETRY, mpt_async.InternalServerError),
        (401, Action.RAISE, mpt_async.AuthenticationError),
        (403, Action.RAISE, mpt_async.PermissionDeniedError),
        (404, Action.RAISE, mpt_async.NotFoundError),
        (400, Action.RAISE, mpt_async.InvalidRequestError),
    ],
)
def test_http_status_classes(status: int, action: Action, cls: type[Exception]) -> None:
    """HTTP 429 waits for capacity, 5xx are retried; other statuses raise their class."""
    assert classify_status(status) == (action, cls)


def test_tree_matches_the_contract() -> None:
    """The public classes sit where the errors reference (docs/reference/errors.rst) puts them."""
    assert issubclass(mpt_async.RequestValidationError, mpt_async.MPTError)
    assert issubclass(mpt_async.RequestValidationError, ValueError)
    for cls in (mpt_async.AuthenticationError, mpt_async.RateLimitError):
        assert issubclass(cls, mpt_async.APIError)
    assert issubclass(mpt_async.APITimeoutError, mpt_async.APIConnectionError)
    for cls in (mpt_async.APIError, mpt_async.APIConnectionError, mpt_async.StreamError):
        assert issubclass(cls, mpt_async.MPTError)


def test_every_error_class_is_drawn_in_the_docstring() -> None:
    """The module docstring's tree names every error class the module defines."""
    doc = _exceptions.__doc__ or ""
    for name in _exceptions.__all__:
        assert name in doc


def test_api_error_attributes_default_to_none() -> None:
    """An APIError built from a message alone has None for what is unknown."""
    error = mpt_async.APIError("boom")
    assert (error.error_code, error.status_code, error.request_id) == (None, None, None)
    assert str(error) == "boom"


@pytest.mark.parametrize(
    "error",
    [
        mpt_async.RateLimitError("slow down", error_code=18, status_code=200, request_id="as-1"),
        mpt_async.RateLimitError("used up", error_code=17, quota=mpt_async.QuotaKind.DAY),
        mpt_async.RequestValidationError("top_k", "must be positive"),
        mpt_async.StreamError("gap", received=3),
        mpt_async.APITimeoutError("timed out"),
    ],
)
def test_errors_pickle(error: Exception) -> None:
    """Errors survive pickling (for process pools), attributes included."""
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert vars(clone) == vars(error)


@pytest.mark.parametrize(
    ("code", "quota", "can_wait"),
    [
        (4, mpt_async.QuotaKind.SECOND, True),
        (18, mpt_async.QuotaKind.SECOND, True),
        (336501, mpt_async.QuotaKind.MINUTE, True),
        (336502, mpt_async.QuotaKind.TOKENS, True),
        (17, mpt_async.QuotaKind.DAY, False),
        (19, mpt_async.QuotaKind.TOTAL, False),
    ],
)
def test_rate_limit_errors_name_their_quota(
    code: int, quota: mpt_async.QuotaKind, can_wait: bool
) -> None:
    """A rate-limit code's error names its quota and whether waiting helps (as it waits)."""
    action, error = make_error(code, "no", status_code=200, request_id=None)
    assert isinstance(error, mpt_async.RateLimitError)
    assert (error.quota, error.can_wait) == (quota, can_wait)
    assert (action is Action.WAIT) is can_wait
    assert QUOTA_KINDS[code] is quota


def test_every_rate_limit_code_has_a_quota() -> None:
    """The quota column covers every rate-limit row of the table, and nothing else."""
    rate_codes = {c for c, row in CODE_TABLE.items() if row[1] is mpt_async.RateLimitError}
    assert {c for c in rate_codes if isinstance(c, int)} == RATE
    assert rate_codes == set(QUOTA_KINDS)


def _drawn_tree() -> list[tuple[str, str | None, str]]:
    """(class, the class drawn above it, the rest of its line) for each line of the tree."""
    doc = _exceptions.__doc__ or ""
    drawing = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    above: list[tuple[int, str]] = []
    tree = []
    for line in drawing.splitlines():
        found = re.search(r"[A-Za-z]\w*", line)
        assert found is not None, line
        while above and above[-1][0] >= found.start():
            above.pop()
        tree.append((found.group(), above[-1][1] if above else None, line[found.end() :]))
        above.append((found.start(), found.group()))
    return tree


def test_the_docstring_tree_is_the_class_tree() -> None:
    """Each error class subclasses the one drawn above it; the ValueErrors say so; all drawn."""
    tree = _drawn_tree()
    assert sorted(name for name, _, _ in tree) == sorted(_exceptions.__all__)
    for name, parent, rest in tree:
        cls = getattr(_exceptions, name)
        base = Exception if parent is None else getattr(_exceptions, parent)
        assert cls.__bases__[0] is base, name
        says = "ValueError" in rest or issubclass(base, ValueError)
        assert issubclass(cls, ValueError) == says, name

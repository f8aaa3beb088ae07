"""How the command line names failures, picks exit statuses, and reads option values."""

from __future__ import annotations

import argparse

import pytest

from mpt_async.__main__ import main
from mpt_async._cli import argtypes
from mpt_async._cli.common import UsageError, error_line, exit_code
from mpt_async._cli.outcome import Outcome, outcome_of, record_code
from mpt_async._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    InternalServerError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    RateLimitError,
    RequestValidationError,
    StreamError,
)


@pytest.mark.parametrize(
    ("error", "line", "status"),
    [
        (RequestValidationError("temperature", "must be in (0, 1]"), "invalid request: ", 2),
        (ConfigurationError("set QIANFAN_SK"), "set QIANFAN_SK", 2),
        (UsageError("the prompt is empty"), "the prompt is empty", 2),
        (AuthenticationError("bad key", error_code=14), "authentication failed: bad key", 1),
        (RateLimitError("slow down", error_code=18), "rate limited: slow down", 1),
        (NotFoundError("no such API"), "the service refused the request: no such API", 1),
        (APITimeoutError("read"), "timed out: read", 1),
        (APITimeoutError("timed out reading"), "timed out reading", 1),
        (APIConnectionError("connection failed: refused"), "connection failed: refused", 1),
        (StreamError("ended without is_end"), "ended without is_end", 1),
        (OSError("disk\nfull"), "unexpected OSError: disk full", 1),
    ],
)
def test_error_line_and_exit_status(error: BaseException, line: str, status: int) -> None:
    """Each kind of failure gets its words on one line, and 2 only for the caller's mistakes."""
    printed = error_line(error)
    assert printed.startswith("mpt_async: error: " + line)
    assert "\n" not in printed
    assert exit_code(error) == status


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (RateLimitError("daily", error_code=17), Outcome.QUOTA),
        (RateLimitError("total", error_code=19), Outcome.QUOTA),
        (RateLimitError("qps", error_code=18), Outcome.RATE_LIMIT),
        (RateLimitError("429"), Outcome.RATE_LIMIT),
        (InternalServerError("busy", error_code=336100), Outcome.SERVER_ERROR),
        (MalformedResponseError("not JSON"), Outcome.MALFORMED_RESPONSE),
        (InvalidRequestError("bad", error_code=336003), Outcome.HTTP_ERROR),
        (APIError("teapot", error_code=987654), Outcome.HTTP_ERROR),
        (ValueError("?"), Outcome.UNEXPECTED),
    ],
)
def test_failures_come_from_the_code_table(error: BaseException, failure: Outcome) -> None:
    """A rate limit the table never retries is a quota; unknown codes are plain refusals."""
    assert outcome_of(error) is failure


def test_what_stops_a_batch_and_what_a_rerun_retries() -> None:
    """Quotas and refused credentials stop a run; limits and bad requests do not."""
    stops = {f for f in Outcome if f.stops_every_call}
    assert stops == {
        Outcome.CONFIGURATION,
        Outcome.AUTHENTICATION,
        Outcome.PERMISSION,
        Outcome.NOT_FOUND,
        Outcome.QUOTA,
    }
    assert Outcome.QUOTA.transient
    assert not Outcome.INVALID_JSON.transient
    assert {f for f in Outcome if f.callers_fault} == {
        Outcome.INVALID_REQUEST,
        Outcome.CONFIGURATION,
    }


def test_record_code_prefers_the_api_code() -> None:
    """A record keeps the API's error_code, else the failure's name."""
    assert record_code(InvalidRequestError("bad", error_code=336003)) == 336003
    assert record_code(InternalServerError("502", status_code=502)) == "server_error"
    assert record_code(RequestValidationError("top_k", "must be >= 1")) == "invalid_request"
    assert record_code(APITimeoutError("read")) == "timeout"


@pytest.mark.parametrize(
    ("parse", "text", "words"),
    [
        (argtypes.int_at_least(1), "0", "^must be a positive integer, not 0$"),
        (argtypes.int_at_least(0), "-1", "^must be a non-negative integer, not -1$"),
        (argtypes.int_at_least(5), "3", "^must be an integer of at least 5, not 3$"),
        (argtypes.int_at_least(0), "x", "^not a whole number: 'x'$"),
        (argtypes.positive_number, "0", "^must be a positive number, not 0.0$"),
        (argtypes.positive_number, "inf", "^must be a finite number, not inf$"),
        (argtypes.positive_number, "nan", "^must be a finite number, not nan$"),
        (argtypes.non_negative_number, "-1", "^must be a non-negative number, not -1.0$"),
        (argtypes.non_negative_number, "soon", "^not a number: 'soon'$"),
    ],
)
def test_option_values_are_refused_in_plain_words(parse: object, text: str, words: str) -> None:
    """The shared argparse types say what is wrong, never a function's name."""
    assert callable(parse)
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        parse(text)


def test_argparse_types_read_well_in_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """The emulator's and the chat's bad values get the same plain message."""
    assert main(["emulator", "--rpm", "0"]) == 2
    assert "argument --rpm: must be a positive integer, not 0" in capsys.readouterr().err
    assert main(["emulator", "--stream-chunks", "many"]) == 2
    err = capsys.readouterr().err
    assert "not a whole number: 'many'" in err
    assert "_positive_int" not in err
    assert main(["chat", "--max-retries", "-1", "hi"]) == 2
    assert "argument --max-retries: must be a non-negative integer" in capsys.readouterr().err
    assert main(["chat", "--timeout", "0", "hi"]) == 2
    assert "argument --timeout: must be a positive number" in capsys.readouterr().err


def test_error_line_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment's secrets, extra ones and secret URL parameters never reach the line."""
    monkeypatch.setenv("QIANFAN_SK", "sk-from-the-environment")
    error = APIConnectionError(
        "failed: http://h/chat?access_token=tok-123456 key sk-from-the-environment extra-secret"
    )
    line = error_line(error, ["extra-secret"])
    assert "tok-123456" not in line
    assert "sk-from-the-environment" not in line
    assert "extra-secret" not in line
    assert line.count("***") == 3

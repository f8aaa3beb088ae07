"""The one redactor: every rule, on text and on name/value pairs."""

from __future__ import annotations

import logging

import pytest

from mpt_async._logging import RedactSecrets, install_redaction
from mpt_async._redact import MASK, redact, redact_pairs

SIGNATURE = "bce-auth-v1/AK123/2024-01-01T00:00:00Z/1800/host;x-bce-date/deadbeefcafe"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET http://h/chat?access_token=tok-123&x=1 200", "tok-123"),
        ("POST /oauth/2.0/token?grant_type=client_credentials&client_secret=sk-9", "sk-9"),
        ("ACCESS_TOKEN=UPPER-1 in a shell line", "UPPER-1"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("{'authorization': 'whatever-scheme value'}", "whatever-scheme value"),
        (f"Authorization: {SIGNATURE}", "deadbeefcafe"),
        (f"signed with {SIGNATURE} at noon", "deadbeefcafe"),
        ("header Bearer opaque-token-7", "opaque-token-7"),
        ("authorization: bearer lower-case-8", "lower-case-8"),
        ("sent with bearer lower-9 inside", "lower-9"),
    ],
)
def test_each_rule_masks_its_secret(text: str, secret: str) -> None:
    """Query tokens, client secrets, Authorization headers, signatures and bearers are masked."""
    cleaned = redact(text)
    assert secret not in cleaned
    assert MASK in cleaned


def test_literal_secrets_are_masked_anywhere() -> None:
    """A secret the caller names is masked wherever it appears, even without a marker."""
    text = "the server said: invalid key s3cr3t-key (echoed s3cr3t-key)"
    assert redact(text, ["s3cr3t-key"]) == "the server said: invalid key *** (echoed ***)"


def test_a_secret_inside_another_is_masked_whole() -> None:
    """The longer of two nested secrets is masked first, so no tail of it is left."""
    text = "key s3cr3t-key-long and s3cr3t"
    assert redact(text, ["s3cr3t", "s3cr3t-key-long"]) == "key *** and ***"


def test_short_literals_and_plain_text_are_left_alone() -> None:
    """Ordinary text, public ids and too-short literals pass unchanged."""
    text = "client_id=my-api-key&grant_type=client_credentials: ok"
    assert redact(text, ["ok", ""]) == text


def test_pairs_mask_secret_names_only() -> None:
    """Query parameters and headers keep their names; only secret values are masked."""
    pairs = {
        "access_token": "t",
        "Authorization": "sig",
        "client_secret": "sk",
        "client_id": "ak",
        "Host": "h",
    }
    assert redact_pairs(pairs, "<redacted>") == {
        "access_token": "<redacted>",
        "Authorization": "<redacted>",
        "client_secret": "<redacted>",
        "client_id": "ak",
        "Host": "h",
    }


def test_log_filter_uses_the_same_rules() -> None:
    """The logging filter masks a signature in a message and a token in its arguments."""
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, f"sent %s with {SIGNATURE}", ("?access_token=tk",), None
    )
    RedactSecrets().filter(record)
    message = record.getMessage()
    assert "deadbeefcafe" not in message
    assert "access_token=***" in message


@pytest.mark.parametrize(
    "name", ["httpx", "httpcore.http11", "httpcore.connection", "httpcore.proxy", "aiohttp.client"]
)
def test_http_libraries_child_loggers_are_redacted(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A record on the very logger httpcore (or aiohttp) logs on is redacted, not only its parent's."""
    install_redaction()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger(name).debug("sent %s", "/chat?access_token=tok-123")
    assert [r.name for r in caplog.records] == [name]
    assert "tok-123" not in caplog.text
    assert "access_token=***" in caplog.text


def test_every_httpcore_logger_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """Every logger httpcore creates on import gets the filter, whatever its name."""
    import httpcore  # noqa: F401  (creates its loggers)

    install_redaction()
    names = [n for n in logging.Logger.manager.loggerDict if n.startswith("httpcore.")]
    assert names
    with caplog.at_level(logging.DEBUG):
        for name in names:
            logging.getLogger(name).debug("GET /chat?access_token=tok-%s", name)
    assert len(caplog.records) == len(names)
    assert "tok-" not in caplog.text


def test_a_secret_straddling_format_and_arguments_is_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``"access_token=%s"`` with the token as argument logs masked, and still formats."""
    install_redaction()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("httpx").debug("GET /chat?access_token=%s&x=%d", "tok-123", 5)
    assert caplog.messages == ["GET /chat?access_token=***&x=5"]


def test_a_record_that_cannot_format_is_still_masked() -> None:
    """A broken record (more placeholders than arguments) keeps no secret for logging's report."""
    record = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        "?access_token=tok-1 %s %s",
        ("?client_secret=sk-2",),
        None,
    )
    assert RedactSecrets().filter(record)
    assert "tok-1" not in str(record.msg)
    assert "sk-2" not in str(record.args)

"""The one redactor: every rule, on text and on name/value pairs."""

from __future__ import annotations

import logging

import pytest

from mpt_async._logging import RedactSecrets
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


def test_short_literals_and_plain_text_are_left_alone() -> None:
    """Ordinary text, public ids and too-short literals pass unchanged."""
    text = "client_id=my-api-key&grant_type=client_credentials: ok"
    assert redact(text, ["ok", ""]) == text


def test_pairs_mask_secret_names_only() -> None:
    """Query parameters and headers keep their names; only secret values are masked."""
    pairs = {"access_token": "t", "Authorization": "sig", "client_id": "ak", "Host": "h"}
    assert redact_pairs(pairs, "<redacted>") == {
        "access_token": "<redacted>",
        "Authorization": "<redacted>",
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

"""The bce-auth-v1 signer, pinned by Baidu's known answers and by properties."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import string

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpt_async._signer import (
    authorization,
    canonical_headers,
    canonical_query,
    canonical_request,
    default_signed_headers,
    format_timestamp,
    sign_request,
    uri_encode,
)

UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


def test_known_answer_qianfan_chat() -> None:
    """A chat request signs to its known Authorization value."""
    value = authorization(
        access_key="AKIDEXAMPLEqianfan00000000000001",
        secret_key="SKEXAMPLEqianfan000000000000000001",
        method="POST",
        path="/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/completions",
        headers={
            "Content-Type": "application/json",
            "Host": "aip.baidubce.com",
            "x-bce-date": "2024-01-01T00:00:00Z",
        },
        timestamp=format_timestamp(1704067200),
        expiration=300,
        signed_headers=["content-type", "host", "x-bce-date"],
    )
    assert value == (
        "bce-auth-v1/AKIDEXAMPLEqianfan00000000000001/2024-01-01T00:00:00Z/300/"
        "content-type;host;x-bce-date/"
        "52bf1f9b3338eefc17e07f5283268f25f93f376e0586640392d1bfd8ad1a269e"
    )


def test_known_answer_baidu_bos_example() -> None:
    """Baidu's own published PUT example (default header set, empty field) signs as published."""
    headers = {
        "Host": "bj.bcebos.com",
        "Content-Type": "text/plain",
        "Content-Length": "8",
        "Content-Md5": "NFzcPqhviddjRNnSOGo4rw==",
        "x-bce-date": "2015-04-27T08:23:49Z",
    }
    value = authorization(
        access_key="a" * 32,
        secret_key="b" * 32,
        method="PUT",
        path="/v1/test/myfolder/readme.txt",
        query=[("partNumber", "9"), ("uploadId", "a44cc9bab11cbd156984767aad637851")],
        headers=headers,
        timestamp="2015-04-27T08:23:49Z",
        expiration=1800,
        signed_headers=list(headers),
        list_signed_headers=False,
    )
    assert value == (
        f"bce-auth-v1/{'a' * 32}/2015-04-27T08:23:49Z/1800//"
        "d74a04362e6a848f5b39b15421cb449427f419c95a480fd6b8cf9fc783e2999e"
    )


def test_sign_request_signs_the_request_as_sent() -> None:
    """The date goes on the request first, then a signature over its query, host and headers."""
    request = httpx.Request(
        "POST",
        "http://127.0.0.1:8866/chat/x y?b=&a=1",
        headers={"Content-Type": "application/json"},
        content=b"{}",
    )
    signature = sign_request(
        request, access_key="ak", secret_key="sk", expiration=120, now=1704067200
    )
    assert request.headers["x-bce-date"] == "2024-01-01T00:00:00Z"
    expected = authorization(
        access_key="ak",
        secret_key="sk",
        method="POST",
        path="/chat/x y",
        query=[("a", "1"), ("b", "")],
        headers={
            "Host": "127.0.0.1:8866",
            "Content-Type": "application/json",
            "x-bce-date": "2024-01-01T00:00:00Z",
        },
        timestamp="2024-01-01T00:00:00Z",
        expiration=120,
    )
    assert request.headers["Authorization"] == expected
    assert expected.startswith("bce-auth-v1/ak/2024-01-01T00:00:00Z/120/")
    assert signature == expected.rsplit("/", 1)[1]
    assert len(signature) == 64


def test_header_values_are_trimmed_of_ascii_whitespace_only() -> None:
    """Tabs and spaces around a value go; a no-break space is part of the value."""
    text, _ = canonical_headers({"Host": "\t h \u00a0"}, ["host"])
    assert text == "host:h%20%C2%A0"


def test_default_signed_headers_are_host_content_type_and_x_bce() -> None:
    """With no list given, host, content-type and every x-bce-* header are signed."""
    names = default_signed_headers(
        {"Host": "h", "Content-Type": "a", "X-Bce-Date": "d", "x-bce-extra": "e", "Accept": "*"}
    )
    assert names == ["content-type", "host", "x-bce-date", "x-bce-extra"]


def test_format_timestamp_is_utc_z() -> None:
    """Timestamps are UTC with a trailing Z, whatever zone the datetime carries."""
    east8 = dt.timezone(dt.timedelta(hours=8))
    assert format_timestamp(dt.datetime(2024, 1, 1, 8, 0, 0, tzinfo=east8)) == (
        "2024-01-01T00:00:00Z"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(dt.datetime(2024, 1, 1))


def test_uri_encode_examples() -> None:
    """Space is %20, unreserved marks stay, slash only where asked."""
    assert uri_encode("a b+c/~") == "a%20b%2Bc%2F~"
    assert uri_encode("/a b/", keep_slash=True) == "/a%20b/"
    assert uri_encode("中") == "%E4%B8%AD"


def test_authorization_query_param_is_not_signed() -> None:
    """An ``authorization`` query parameter is left out of the canonical query."""
    assert canonical_query([("b", ""), ("authorization", "x"), ("a", "1")]) == "a=1&b="


def test_empty_headers_are_not_signed() -> None:
    """A header whose trimmed value is empty is dropped from both header fields."""
    text, names = canonical_headers({"Host": "h", "x-bce-empty": "  "}, ["host", "x-bce-empty"])
    assert (text, names) == ("host:h", "host")


def test_canonical_request_has_no_trailing_newline() -> None:
    """The canonical request is four parts joined by newlines, nothing after them."""
    text, names = canonical_request("post", "/p", [], {"Host": "h"}, ["host"])
    assert text == "POST\n/p\n\nhost:h"
    assert names == "host"


def test_signing_key_is_the_hex_string() -> None:
    """The signature is keyed by the hex text of the first HMAC, not its raw bytes."""
    headers = {"Host": "h"}
    value = authorization(
        access_key="ak",
        secret_key="sk",
        method="GET",
        path="/",
        headers=headers,
        timestamp="2024-01-01T00:00:00Z",
    )
    prefix = "bce-auth-v1/ak/2024-01-01T00:00:00Z/300"
    key = hmac.new(b"sk", prefix.encode(), hashlib.sha256).hexdigest()
    expected = hmac.new(key.encode(), b"GET\n/\n\nhost:h", hashlib.sha256).hexdigest()
    assert value == f"{prefix}/host/{expected}"


@given(st.text())
def test_uri_encode_output_is_unreserved_or_escapes(text: str) -> None:
    """Every output character is unreserved or part of an upper-case %XY escape."""
    encoded = uri_encode(text)
    i = 0
    while i < len(encoded):
        if encoded[i] == "%":
            escape = encoded[i + 1 : i + 3]
            assert len(escape) == 2
            assert set(escape) <= set("0123456789ABCDEF")
            i += 3
        else:
            assert encoded[i] in UNRESERVED
            i += 1


@given(st.text())
def test_uri_encode_round_trips(text: str) -> None:
    """Decoding the escapes gives back the UTF-8 bytes of the input."""
    from urllib.parse import unquote_to_bytes

    assert unquote_to_bytes(uri_encode(text)) == text.encode("utf-8", "surrogatepass")


@given(st.lists(st.tuples(st.text(), st.text()), max_size=8))
def test_canonical_query_is_sorted_and_order_free(pairs: list[tuple[str, str]]) -> None:
    """The canonical query is sorted byte-wise and does not depend on the input order."""
    pairs = [(k, v) for k, v in pairs if k.lower() != "authorization"]
    query = canonical_query(pairs)
    assert query == canonical_query(list(reversed(pairs)))
    parts = query.split("&") if query else []
    assert parts == sorted(parts)
    assert len(parts) == len(pairs)


@given(
    st.dictionaries(
        st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=10),
        st.text(alphabet=" \t" + string.printable.strip(), max_size=12),
        max_size=6,
    ),
    st.sampled_from([" ", "\t", "  \t"]),
)
def test_canonical_headers_trim_and_lowercase(headers: dict[str, str], pad: str) -> None:
    """Names are lower-cased and values trimmed: padding or case changes nothing."""
    padded = {f"{pad}{k.upper()}{pad}": f"{pad}{v}{pad}" for k, v in headers.items()}
    names = list(headers)
    if len({k.lower() for k in headers}) != len(headers):
        return  # names that differ only in case collide; not a property of interest
    assert canonical_headers(padded, names) == canonical_headers(headers, names)
    text, signed = canonical_headers(headers, names)
    assert signed == signed.lower()
    assert signed.split(";") == sorted(signed.split(";")) or signed == ""
    lines = text.split("\n") if text else []
    assert lines == sorted(lines)

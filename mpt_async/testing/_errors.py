"""The error codes and messages the emulator answers with.

They are those of the service's error-code page,
https://cloud.baidu.com/doc/WENXINWORKSHOP/s/tlmyncueh.

The emulator keeps its own copy of Baidu's table rather than importing the client's,
so a wrong entry on one side shows up as a failing test instead of agreeing with itself.
"""

from __future__ import annotations

__all__ = [
    "ACCESS_TOKEN_EXPIRED",
    "ACCESS_TOKEN_INVALID",
    "API_NAME_NOT_EXIST",
    "ERROR_MESSAGES",
    "IAM_CERTIFICATION_FAILED",
    "INPUT_TOO_LONG",
    "INVALID_ARGUMENT",
    "INVALID_HTTP_METHOD",
    "INVALID_JSON",
    "INVALID_PARAMETER",
    "MESSAGES_NOT_ODD",
    "NO_CREDENTIALS",
    "QPS_LIMIT",
    "RPM_LIMIT",
    "TPM_LIMIT",
    "UNSUPPORTED_METHOD",
    "error_message",
]

UNSUPPORTED_METHOD = 3
IAM_CERTIFICATION_FAILED = 14
QPS_LIMIT = 18
NO_CREDENTIALS = 100
ACCESS_TOKEN_INVALID = 110
ACCESS_TOKEN_EXPIRED = 111
INVALID_ARGUMENT = 336001
INVALID_JSON = 336002
INVALID_PARAMETER = 336003
API_NAME_NOT_EXIST = 336005
MESSAGES_NOT_ODD = 336006
INPUT_TOO_LONG = 336007
INVALID_HTTP_METHOD = 336101
RPM_LIMIT = 336501
TPM_LIMIT = 336502

#: Baidu's default ``error_msg`` for each documented code.
ERROR_MESSAGES: dict[int, str] = {
    1: "Unknown error",
    2: "Service temporarily unavailable",
    3: "Unsupported openapi method",
    4: "Open api request limit reached",
    6: "No permission to access data",
    13: "Get service token failed",
    14: "IAM Certification failed",
    15: "app not exists or create failed",
    17: "Open api daily request limit reached",
    18: "Open api qps request limit reached",
    19: "Open api total request limit reached",
    100: "Invalid parameter",
    110: "Access token invalid or no longer valid",
    111: "Access token expired",
    336000: "Internal error",
    336001: "Invalid Argument",
    336002: "Invalid JSON",
    336003: "Invalid parameter",
    336004: "Permission error",
    336005: "API name not exist",
    336006: "the length of messages must be an odd number",
    336007: "the max input characters is 4800",
    336100: "try again later",
    336101: "Invalid HTTP method",
    336103: "the max input characters is 4800",
    336104: "Invalid argument in system setting",
    336105: "Invalid argument in user setting",
    336501: "Rate limit reached for RPM",
    336502: "Rate limit reached for TPM",
}


def error_message(code: int) -> str:
    """Baidu's message for ``code``, or a generic one for a code it does not document.

    Args:
        code: The ``error_code``.
    """
    return ERROR_MESSAGES.get(code, f"error {code}")

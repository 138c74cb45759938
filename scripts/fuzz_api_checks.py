"""Schemathesis checks of mcpd's own, loaded by scripts/fuzz-api.sh through
SCHEMATHESIS_HOOKS: every 4xx answer is a JSON error in the API's shape
(`{"code": "...", "message": "...", "field"?: "..."}`), whatever the request
got wrong (its path, query, headers, body, method or media type).
"""

import json

import schemathesis

# The codes errors.rs documents for ApiError.code.
CODES = {
    "not_found",
    "conflict",
    "invalid",
    "malformed",
    "too_large",
    "unsupported_media_type",
    "unauthorized",
    "forbidden",
    "method_not_allowed",
    "unavailable",
    "timeout",
    "backend",
}


@schemathesis.check
def json_api_error(ctx, response, case):
    """A 4xx answer is `application/json` with a known `code` and a `message`."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json":
        raise AssertionError(
            f"{response.status_code} answered with Content-Type {content_type!r}, "
            f"not application/json: {response.content[:200]!r}"
        )
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(
            f"{response.status_code} body is not JSON ({e}): {response.content[:200]!r}"
        ) from None
    if not isinstance(body, dict):
        raise AssertionError(f"{response.status_code} body is not an object: {body!r}")
    if body.get("code") not in CODES:
        raise AssertionError(f"{response.status_code} body has no known code: {body!r}")
    if not isinstance(body.get("message"), str) or not body["message"]:
        raise AssertionError(f"{response.status_code} body has no message: {body!r}")
    field = body.get("field")
    if field is not None and not isinstance(field, str):
        raise AssertionError(f"{response.status_code} body's field is not a string: {body!r}")
    extra = set(body) - {"code", "message", "field"}
    if extra:
        raise AssertionError(f"{response.status_code} body has unknown keys {sorted(extra)}: {body!r}")
    return None

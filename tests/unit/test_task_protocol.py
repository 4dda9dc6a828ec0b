"""The endpoint's wire format, authentication rules and settings (pure)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageinference.server.auth import auth_error, bearer, check_authentication_task, is_loopback, key_matches
from imageinference.server.config import API_KEY_ENV, BASE_PATH, EndpointConfig
from imageinference.server.protocol import (
    TASK_TYPES,
    EnvelopeError,
    check_task_shape,
    echo,
    envelope,
    http_status,
    identity,
    parse_body,
    require_uuid,
    ws_frames,
)

UUID = "0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e3f"


def test_a_json_array_of_tasks_is_the_envelope_and_one_object_counts_as_one_task():
    assert parse_body(b'[{"taskType": "ping"}, {"taskType": "ping"}]') == [{"taskType": "ping"}] * 2
    assert parse_body('{"taskType": "ping"}') == [{"taskType": "ping"}]


@pytest.mark.parametrize("body, code", [
    (b"", "invalidJson"), (b"{", "invalidJson"), (b"\xff\xfe", "invalidJson"), (b"[]", "invalidTask"),
    (b"42", "invalidTask"), (b'"text"', "invalidTask"), (b"null", "invalidTask"),
    (b"[" * 100000 + b"]" * 100000, "invalidJson"),  # nested too deeply for the parser
    (b"[" + b"9" * 10000 + b"]", "invalidJson"),  # an integer too long to convert
])
def test_unreadable_bodies_are_one_documented_error(body, code):
    with pytest.raises(EnvelopeError) as info:
        parse_body(body)
    assert info.value.status == 400
    err = info.value.error.to_json()
    assert err["code"] == code and err["message"] and "documentation" in err


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_give_tasks_or_an_envelope_error(body):
    try:
        tasks = parse_body(body)
    except EnvelopeError as exc:
        assert exc.status == 400 and exc.error.code in ("invalidJson", "invalidTask")
    else:
        assert isinstance(tasks, list) and tasks


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_task_checks_never_raise_and_name_the_task(raw):
    err = check_task_shape(raw)
    task_type, task_uuid = identity(raw)
    if err is None:
        assert raw["taskType"] in TASK_TYPES
    else:
        out = err.to_json()
        assert out["code"] and out["message"] and out["taskType"] == task_type
        assert out.get("taskUUID") == task_uuid
        json.dumps(out)


def test_task_shape_codes():
    assert check_task_shape([]).code == "invalidTask"
    assert check_task_shape({}).code == "missingTaskType"
    bad = check_task_shape({"taskType": "videoInference", "taskUUID": UUID})
    assert bad.code == "invalidTaskType" and list(bad.allowed_values) == list(TASK_TYPES) and bad.task_uuid == UUID
    assert check_task_shape({"taskType": 3}).code == "invalidTaskType"
    assert require_uuid({"taskType": "getResponse"}).code == "missingTaskUUID"
    assert require_uuid({"taskType": "getResponse", "taskUUID": "nope"}).code == "invalidTaskUUID"
    assert require_uuid({"taskType": "getResponse", "taskUUID": UUID}) is None


def test_echo_answers_with_the_tasks_own_identity():
    assert echo({"taskType": "ping"}, pong=True) == {"taskType": "ping", "pong": True}
    assert echo({"taskType": "ping", "taskUUID": UUID}, pong=True) == {"taskType": "ping", "taskUUID": UUID,
                                                                       "pong": True}


def test_envelopes_and_statuses():
    item, err = {"taskType": "ping"}, {"code": "invalidWidth", "message": "m"}
    assert envelope([item], []) == {"data": [item]}
    assert envelope([], [err]) == {"errors": [err]}
    assert envelope([item], [err], [{"code": "w"}]) == {"data": [item], "errors": [err], "warnings": [{"code": "w"}]}
    assert http_status([item], [err]) == 200
    assert http_status([], [err]) == 400
    assert http_status([], [{"code": "invalidApiKey"}, {"code": "missingApiKey"}]) == 401
    assert http_status([], [{"code": "taskNotFound"}]) == 404
    assert http_status([], [{"code": "taskNotFound"}, {"code": "invalidWidth"}]) == 400
    assert http_status([], [{"code": "inferenceError"}]) == 400  # never a 5xx that clients would resend
    assert ws_frames([item], [err]) == [{"data": [item]}, {"errors": [err]}]  # never both in one frame


def test_authentication_rules():
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None
    assert key_matches(None, None) and key_matches(None, "anything")
    assert key_matches("k" * 30, "k" * 30) and not key_matches("k" * 30, "k" * 29) and not key_matches("k", 5)
    assert check_authentication_task({"taskType": "authentication", "apiKey": "x"}, None) is None
    err = check_authentication_task({"taskType": "authentication", "apiKey": "x"}, "secret")
    assert err.code == "invalidApiKey" and err.parameter == "apiKey" and err.task_type == "authentication"
    assert auth_error({"taskType": "imageInference", "taskUUID": UUID}, None).code == "missingApiKey"
    assert "taskUUID" not in auth_error({"taskType": "authentication"}, "x").to_json()


@pytest.mark.parametrize("peer, loop", [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True),
                                        ("::ffff:127.0.0.1", True), ("192.0.2.2", False), ("10.0.0.1", False),
                                        ("", False), (None, False), ("not-an-ip", False)])
def test_loopback_peers(peer, loop):
    assert is_loopback(peer) is loop


def test_settings_from_the_environment():
    assert EndpointConfig.from_env({}).loopback_only
    c = EndpointConfig.from_env({API_KEY_ENV: " s3cret ", "IMAGEINFERENCE_MAX_BODY_BYTES": "2048",
                                 "IMAGEINFERENCE_WS_IDLE_SECONDS": "2.5", "IMAGEINFERENCE_ALLOW_PRIVATE_URLS": "1",
                                 "IMAGEINFERENCE_MAX_TASKS_PER_REQUEST": "nonsense",
                                 "IMAGEINFERENCE_SYNC_TIMEOUT": "nan"})
    assert c.api_key == "s3cret" and not c.loopback_only and c.max_body_bytes == 2048 and c.ws_idle_s == 2.5
    assert c.allow_private_targets and c.max_tasks_per_request == EndpointConfig.max_tasks_per_request
    assert c.sync_timeout_s == EndpointConfig.sync_timeout_s
    assert BASE_PATH in c.describe() and "key-protected" in c.describe()
    assert "loopback" in EndpointConfig().describe()

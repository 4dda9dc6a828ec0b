"""Runware's official SDKs, unchanged, pointed at the local endpoint (the session server), each in its own
environment outside the repository: `runware-sdk` (the generated Python SDK; REST and WebSocket), `runware` (the
legacy dataclass Python SDK; WebSocket) and `@runware/sdk-js` (JavaScript; WebSocket).

The tests install each SDK from its registry when it is absent (~/.cache/imageinference-nodes/sdk-venvs/<name>,
~/.cache/imageinference-nodes/sdk-js) and skip, saying why, only when the registry cannot be reached.
"""

import shutil

from sdk_helpers import JS, KEY, LEGACY_SDK, NEW_SDK, check_images, js_sdk, python_sdk, run_script


def urls(server):
    http_url = server.url + "/imageinference/v1"
    return http_url, "ws" + http_url[len("http"):]


def test_the_generated_python_sdk_over_rest_and_websocket(server, tmp_path):
    python = python_sdk("runware-sdk")
    out = run_script(python, tmp_path / "new_sdk.py", NEW_SDK, *urls(server), KEY)
    for transport in ("rest", "websocket"):
        res = out[transport]
        check_images(res["async"], 2, [5, 6])
        check_images(res["sync"], 1, [9])
        check_images(res["img2img"], 1)
        assert res["upload"][0]["imageUUID"] and res["upload"][0]["imageURL"]
        assert "test:sd15@1" in [r["air"] for r in res["search"][0]["results"]]
        assert res["error"]["code"] == "validation" and res["error"]["parameter"] == "width", res["error"]


def test_the_legacy_python_sdk_over_websocket(server, tmp_path):
    python = python_sdk("runware")
    out = run_script(python, tmp_path / "legacy_sdk.py", LEGACY_SDK, urls(server)[1], KEY)
    check_images(out["images"], 2, [3, 4])
    assert out["ack"]["taskUUID"]


def test_the_javascript_sdk_over_websocket(server):
    project = js_sdk()
    out = run_script(shutil.which("node"), project / "check.mjs", JS, urls(server)[1], KEY, cwd=project)
    check_images(out["images"], 2, [3, 4])
    assert out["error"]["code"] == "invalidWidth" and out["error"]["parameter"] == "width"

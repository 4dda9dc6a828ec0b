"""`python -m imageinference info` names the endpoint's path and who may use it."""

from imageinference.commands.info import endpoint_info, format_info
from imageinference.server.config import API_KEY_ENV, BASE_PATH


def test_info_prints_the_endpoint_path_and_access(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    info = {"version": "0", "comfyui": {"found": False, "path": "/nowhere"}, "howToGetComfyUI": "-", "nodes": [],
            "endpoint": endpoint_info()}
    text = format_info(info)
    assert f"imageInference endpoint: {BASE_PATH}" in text and "loopback clients only" in text
    monkeypatch.setenv(API_KEY_ENV, "secret")
    assert endpoint_info()["access"] == f"every task needs the key in {API_KEY_ENV}"
    assert endpoint_info()["websocket"].endswith(BASE_PATH)

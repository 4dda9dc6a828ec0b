"""The frontend extension's routes on a real ComfyUI (the session server) read a request file whole: a request
holding a photo-sized image (several MB, arriving in many chunks) converts to a workflow, as "Show imageInference
request" and dropped request files need."""

import json
import socket
import time

from imageinference.server.frontend_routes import COMPILE_PATH
from imageinference.testing.photos import as_data_uri, photo


def test_a_request_file_with_a_real_image_is_read_whole(server):
    seed_image = as_data_uri(photo(1024, seed=5), "PNG")
    request = [{"taskType": "imageInference", "taskUUID": "5b0b6a0e-3a5e-4c39-9d55-8f4c0f0e1a2b",
                "model": "test:sd15@1", "positivePrompt": "a lighthouse at dusk", "width": 128, "height": 128,
                "steps": 2, "seed": 9, "seedImage": seed_image, "strength": 0.6}]
    body = json.dumps(request).encode()
    assert len(body) > 2_500_000
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall((f"POST {COMPILE_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
                     .encode())
        for i in range(0, len(body), 256 * 1024):  # a slow upload: the body arrives in pieces
            sock.sendall(body[i:i + 256 * 1024])
            time.sleep(0.02)
        raw = b""
        while chunk := sock.recv(1 << 20):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", payload[:500]
    if b"chunked" in head.lower():
        payload = _unchunk(payload)
    answer = json.loads(payload)
    assert answer["request"]["inputs"]["seedImage"] == seed_image and answer["request"]["strength"] == 0.6
    assert any(node.get("type") == "ImageInferenceLoadImage" for node in answer["workflow"]["nodes"])


def _unchunk(data):
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, data = out + rest[:n], rest[n + 2:]
    return out

"""Three layers, one run: tests/unit (pure), tests/comfy (real ComfyUI in-process), tests/server (real server).

ComfyUI is found through COMFYUI_PATH (default ~/ComfyUI). Without it, the two ComfyUI layers skip with one
loud line and the unit layer still runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imageinference.comfyui.env import comfyui_found, comfyui_path

COMFY_ROOT = comfyui_path()
COMFY_FOUND = comfyui_found(COMFY_ROOT)
SKIP_LINE = (f"ComfyUI NOT FOUND at {COMFY_ROOT} (set COMFYUI_PATH): the in-process and server ComfyUI "
             "test layers are SKIPPED")
_layer_counts = {"comfy": 0, "server": 0, "browser": 0}
_refused_skips: list[str] = []

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several workers share the cores: one thread each (inherited by the servers they start), else their thread
    # pools oversubscribe the machine and every torch call slows down many times over.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

ALLOWED_SKIPS = (
    # Conditions that hold on no machine of this project (each has a non-loopback IPv4 address, reaches PyPI and
    # the npm registry, and has node and npm); a test may skip on them elsewhere. Documented in the README.
    "this machine has no non-loopback IPv4 address",
    "PyPI is unreachable from here",
    "the npm registry is unreachable",
    "node and npm are not installed on this machine",
)
"""Any other skip in the in-process or server layers fails the run: a feature that regresses must fail, not skip."""
NO_BROWSER = os.environ.get("IMAGEINFERENCE_NO_BROWSER") or (
    None if os.environ.get("IMAGEINFERENCE_CHROMIUM") or shutil.which("chromium") else
    "no chromium on PATH (scripts/test.sh installs Debian's chromium; or set IMAGEINFERENCE_CHROMIUM)")


def pytest_report_header(config):
    if COMFY_FOUND:
        return f"ComfyUI found at {COMFY_ROOT}: in-process and server layers will run"
    return "!" * 20 + " " + SKIP_LINE + " " + "!" * 20


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=SKIP_LINE)
    no_browser = pytest.mark.skip(reason=f"BROWSER LAYER SKIPPED: {NO_BROWSER}")
    for item in items:
        layer = _layer(item.nodeid)
        if layer in ("comfy", "server", "browser"):
            item.add_marker(getattr(pytest.mark, layer))
            if not COMFY_FOUND:
                item.add_marker(skip)
            elif layer == "browser" and NO_BROWSER:
                item.add_marker(no_browser)


def _layer(nodeid: str) -> str:
    """The folder under tests/ (from the node id: with pytest-xdist the controlling process collects nothing)."""
    parts = nodeid.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else ""


def pytest_runtest_logreport(report):
    layer = _layer(report.nodeid)
    if report.when == "call" and report.passed and layer in _layer_counts:
        _layer_counts[layer] += 1
    if report.skipped and layer in ("comfy", "server"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if SKIP_LINE not in reason and not any(allowed in reason for allowed in ALLOWED_SKIPS):
            _refused_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _refused_skips and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    for line in _refused_skips:
        terminalreporter.write_line(f"SKIP REFUSED (a ComfyUI-layer test may not skip for this): {line}", red=True,
                                    bold=True)
    if COMFY_FOUND:
        terminalreporter.write_line(
            f"ComfyUI layers ran: {_layer_counts['comfy']} in-process and {_layer_counts['server']} server tests passed "
            f"against {COMFY_ROOT}")
    else:
        terminalreporter.write_line(SKIP_LINE, red=True, bold=True)
    if NO_BROWSER or not COMFY_FOUND:
        terminalreporter.write_line(f"Browser layer SKIPPED: {NO_BROWSER or 'no ComfyUI'}", red=True, bold=True)
    else:
        terminalreporter.write_line(f"Browser layer ran: {_layer_counts['browser']} tests passed in headless Chromium")


# ---------------------------------------------------------------- shared fixtures


@pytest.fixture(scope="session")
def tiny_models_root() -> Path:
    """Cached tiny random-weight models (built on first use, never committed)."""
    from imageinference.testing.tiny_models import ensure_tiny_models

    return ensure_tiny_models()


TEST_CATALOG = {
    "test:sd15@1": {"kind": "checkpoint", "architecture": "sd-1-5",
                    "files": {"model": "checkpoints/tiny_sd15.safetensors"}},
    "test:flux@1": {"kind": "diffusionModel", "architecture": "flux-1-dev",
                    "files": {"model": "diffusion_models/tiny_flux.safetensors", "vae": "vae/tiny_vae16.safetensors"}},
    "test:lora@1": {"kind": "lora", "architecture": "sd-1-5", "files": {"model": "loras/tiny_sd15_lora.safetensors"}},
    "test:vae16@1": {"kind": "vae", "files": {"model": "vae/tiny_vae16.safetensors"}},
    "test:sd3@1": {"kind": "diffusionModel", "architecture": "sd-3",
                   "files": {"model": "diffusion_models/tiny_sd3.safetensors",
                             "textEncoders": ["text_encoders/tiny_clip_l_text_model.safetensors"],
                             "vae": "vae/tiny_vae16.safetensors"}},
    "test:flux-full@1": {"kind": "diffusionModel", "architecture": "flux-1-dev",
                         "files": {"model": "diffusion_models/tiny_flux.safetensors",
                                   "textEncoders": ["text_encoders/tiny_clip_l_text_model.safetensors",
                                                    "text_encoders/tiny_t5xxl_1layer.safetensors"],
                                   "vae": "vae/tiny_vae16.safetensors"},
                         "options": {"textEncoderOptions": {"t5xxl_model_config": {"num_layers": 1, "num_heads": 2,
                                                                                    "d_ff": 64}}}},
    "test:cn@1": {"kind": "controlNet", "architecture": "sd-1-5",
                  "files": {"model": "controlnet/tiny_sd15_controlnet.safetensors"}},
    "runware:504@1": {"kind": "upscaler", "files": {"model": "upscale_models/tiny_esrgan_4x.safetensors"}},
    "test:missing@1": {"kind": "checkpoint", "architecture": "sd-1-5",
                       "files": {"model": "checkpoints/not_there.safetensors"}},
}


@pytest.fixture(scope="session", autouse=True)
def test_catalog(tmp_path_factory):
    """A user catalog naming the tiny models, for this process and the servers it starts."""
    import json

    path = tmp_path_factory.mktemp("catalog") / "catalog.json"
    path.write_text(json.dumps({"version": 1, "models": TEST_CATALOG}))
    old = os.environ.get("IMAGEINFERENCE_CATALOG")
    os.environ["IMAGEINFERENCE_CATALOG"] = str(path)
    yield path
    if old is None:
        os.environ.pop("IMAGEINFERENCE_CATALOG", None)
    else:
        os.environ["IMAGEINFERENCE_CATALOG"] = old


@pytest.fixture(scope="session")
def comfy(tiny_models_root, tmp_path_factory):
    """A real ComfyUI imported in this process, its model folders pointed at the tiny models."""
    from imageinference.comfyui.runtime import use_inprocess_comfyui

    use_inprocess_comfyui(COMFY_ROOT)
    import folder_paths

    from imageinference.testing.tiny_models import link_models

    models = tmp_path_factory.mktemp("models")
    link_models(tiny_models_root, models)
    for folder in ("checkpoints", "loras", "controlnet", "diffusion_models", "vae", "upscale_models", "text_encoders"):
        folder_paths.add_model_folder_path(folder, str(models / folder), is_default=True)
    folder_paths.set_output_directory(str(tmp_path_factory.mktemp("output")))
    folder_paths.set_input_directory(str(tmp_path_factory.mktemp("input")))
    folder_paths.set_temp_directory(str(tmp_path_factory.mktemp("temp")))
    import nodes

    return nodes


@pytest.fixture(scope="session")
def server(tiny_models_root, tmp_path_factory):
    """One real ComfyUI server for the session, with this pack in custom_nodes and the tiny models."""
    from imageinference.comfyui.server_process import ComfyServer
    from imageinference.testing.tiny_models import link_models

    base = tmp_path_factory.mktemp("comfy-base")
    srv = ComfyServer(base, comfy_root=COMFY_ROOT)
    srv.prepare()
    link_models(tiny_models_root, srv.models_dir)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        if os.environ.get("IMAGEINFERENCE_KEEP_SERVER_LOG"):
            shutil.copy(srv.log_path, os.environ["IMAGEINFERENCE_KEEP_SERVER_LOG"])

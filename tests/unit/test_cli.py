import json
import subprocess
import sys

from imageinference.commands.cli import build_parser, main


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "imageinference", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_help_lists_subcommands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("info", "smoke"):
        assert command in out.stdout


def test_every_subcommand_is_described_in_the_top_level_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    described = {action.dest: action.help for action in sub._choices_actions}
    assert set(described) == set(sub.choices)
    assert all(text and len(text) > 10 for text in described.values()), described


def test_info_without_comfyui_says_where_and_how(tmp_path, monkeypatch):
    env = dict(__import__("os").environ, COMFYUI_PATH=str(tmp_path / "nowhere"))
    out = run_cli("info", "--json", env=env)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["comfyui"] == {"found": False, "path": str(tmp_path / "nowhere"), "version": None}
    assert "COMFYUI_ARCHIVE" in info["howToGetComfyUI"] and "--branch v0.8.0" in info["howToGetComfyUI"]
    assert info["nodes"] == []


def test_smoke_without_comfyui_stops_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "nowhere"))
    assert main(["smoke"]) == 2
    err = capsys.readouterr().err
    assert "ComfyUI not found" in err and "COMFYUI_PATH" in err
    assert "Traceback" not in err


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out

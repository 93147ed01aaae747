"""The `rtdecode` command: every sub-command is present, and the runtime never imports torch."""

from __future__ import annotations

import subprocess
import sys

from rtdecode.cli import COMMAND_MODULES, build_parser


def test_every_listed_command_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    registered = set(sub.choices)
    expected = {m.replace("_", "-") for m in COMMAND_MODULES}
    assert expected <= registered, f"missing sub-commands: {sorted(expected - registered)}"


def test_runtime_imports_no_torch():
    """Serving, playback, viewing and the CLI parser must work in a venv without torch."""
    code = (
        "import sys, importlib\n"
        "mods = ['rtdecode.cli', 'rtdecode.service', 'rtdecode.playback', 'rtdecode.sim',"
        " 'rtdecode.engines.ort', 'rtdecode.display.viewer', 'rtdecode.sinks.recorder', 'rtdecode.contract']\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "import rtdecode.cli as c; c.build_parser()\n"
        "bad = [m for m in ('torch', 'tensorrt') if m in sys.modules]\n"
        "print('LOADED', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_runs_and_errors_are_clean(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rtdecode", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "serve" in r.stdout
    bogus = tmp_path / "not-a-model.onnx"
    bogus.write_text("hello")
    r = subprocess.run([sys.executable, "-m", "rtdecode", "inspect", str(bogus)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "not-a-model.onnx" in r.stderr and "Traceback" not in r.stderr

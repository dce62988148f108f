"""The layers hold at run time: the agent's process loads none of the control plane's
libraries (it runs on every edge machine, and its memory is measured in BENCHMARKS.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import edgepcap

SERVER_SIDE = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "typer")


def test_the_agents_entry_module_loads_no_server_library():
    probe = (
        "import json, sys\n"
        "import edgepcap.agent.__main__\n"
        f"print(json.dumps(sorted(m for m in {SERVER_SIDE!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_the_import_contracts_catch_a_layer_crossed(tmp_path):
    # lint-imports is in scripts/test.sh; this shows that it fails when a layer is crossed,
    # on a copy of the package with one forbidden import added.
    src = Path(edgepcap.__file__).parent
    copy = tmp_path / "edgepcap"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__", "dashboard", "docs"))
    fmt = copy / "formats" / "filters.py"
    fmt.write_text(fmt.read_text() + "\nfrom edgepcap.control import models  # crossed\n")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache",
         "--config", str(root / "pyproject.toml")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode != 0, out.stdout
    assert "BROKEN" in out.stdout and "edgepcap.formats.filters -> edgepcap.control" in out.stdout

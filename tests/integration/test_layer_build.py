"""The layer as `sam build` ships it: requirements, core, and bytecode Lambda will use as is.

Lambda mounts layers read-only, so a layer without .pyc files is compiled on every cold
start (bench/results.md: the extension backend's cold import ~2x `import urllib3` without
them). layers/broker/Makefile compiles every module with unchecked-hash invalidation, so
the zip's timestamps cannot make Python ignore the bytecode, and names the sources as
Lambda sees them, under /opt/python.
"""

from __future__ import annotations

import importlib.util
import marshal
import subprocess
from pathlib import Path

from tests.support import ROOT

UNCHECKED_HASH = 0b01  # PEP 552 flags: hash-based, source not checked


def pyc_of(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def test_every_module_of_the_layer_ships_its_unchecked_hash_bytecode(built_template: Path) -> None:
    # Given the layer sam build made
    layer = built_template.parent / "BrokerCoreLayer" / "python"
    sources = sorted(p for p in layer.rglob("*.py") if "__pycache__" not in p.parts and p.parent.name != "bin")

    # Then the broker core with its compiled-ahead validators and Powertools are there,
    # and no schema compiler (the functions never compile a schema)
    names = {p.relative_to(layer).parts[0] for p in sources}
    assert {"broker", "aws_lambda_powertools"} <= names
    assert "fastjsonschema" not in names
    assert (layer / "broker" / "validators" / "password.py").is_file()
    # And each module has a .pyc that Python will load without looking at the source
    missing = [str(p.relative_to(layer)) for p in sources if not pyc_of(p).is_file()]
    assert missing == []
    for source in sources:
        header = pyc_of(source).read_bytes()[:16]
        assert header[:4] == importlib.util.MAGIC_NUMBER, source
        assert int.from_bytes(header[4:8], "little") == UNCHECKED_HASH, source


def test_the_bytecode_is_the_current_source_and_names_it_under_opt(built_template: Path) -> None:
    # Given the layer's compiled grants base module
    layer = built_template.parent / "BrokerCoreLayer" / "python"
    source = layer / "broker" / "grants" / "base.py"
    data = pyc_of(source).read_bytes()

    # Then it was compiled from exactly the repository's source
    assert source.read_bytes() == (ROOT / "layers" / "broker" / "broker" / "grants" / "base.py").read_bytes()
    assert data[8:16] == importlib.util.source_hash(source.read_bytes())
    # And its code objects name the file where Lambda mounts it
    assert marshal.loads(data[16:]).co_filename == "/opt/python/broker/grants/base.py"  # noqa: S302 - our own build


def test_a_fresh_interpreter_imports_the_core_from_bytecode_alone(built_template: Path, tmp_path: Path) -> None:
    # Given a copy of the layer with every source of the broker core removed
    layer = built_template.parent / "BrokerCoreLayer" / "python"
    copy = tmp_path / "python"
    subprocess.run(["cp", "-R", str(layer), str(copy)], check=True)
    for source in (copy / "broker").glob("*.py"):
        source.write_text("raise ImportError('the source was read')\n")

    # When Python imports the core from it (as from a read-only /opt: nothing written)
    result = subprocess.run(
        ["python", "-B", "-c", "import broker.grants, broker.pipeline; print('ok')"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(copy), "PATH": str(ROOT / ".venv" / "bin") + ":/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )

    # Then the bytecode was used and the (poisoned) sources never ran
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

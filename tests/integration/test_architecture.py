"""`Architecture=arm64`: the layer sam build makes holds aarch64 wheels and binaries only.

SAM passes make no architecture; the layer's ContextPath (layers/broker/platforms/<arch>)
picks the Makefile that sets it. The wheels come from PyPI, as in any `sam build`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

# ELF e_machine (bytes 18-19, little-endian): what each shared object was compiled for.
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64"}


def elf_machine(shared_object: Path) -> str:
    header = shared_object.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", shared_object
    return ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), "other")


def wheel_tags(layer: Path) -> set[str]:
    tags: set[str] = set()
    for wheel in layer.glob("*.dist-info/WHEEL"):
        tags |= {line.split(":", 1)[1].strip() for line in wheel.read_text().splitlines() if line.startswith("Tag:")}
    return tags


def build_layer(architecture: str, build_dir: Path) -> Path:
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "sam"),
            "build",
            "BrokerCoreLayer",
            "--template",
            str(ROOT / "template.yaml"),
            "--build-dir",
            str(build_dir),
            "--parameter-overrides",
            f"Architecture={architecture}",
        ],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return build_dir / "BrokerCoreLayer" / "python"


@pytest.mark.parametrize(("architecture", "machine"), [("arm64", "aarch64"), ("x86_64", "x86_64")])
def test_the_layer_holds_wheels_for_the_architecture_only(architecture: str, machine: str, tmp_path: Path) -> None:
    # Given the template's Architecture parameter
    # When sam build builds the layer for it
    layer = build_layer(architecture, tmp_path / "build")
    # Then every compiled extension is for that machine (cryptography, cffi)
    shared = sorted(layer.rglob("*.so"))
    assert {p.name.split(".")[0] for p in shared} >= {"_rust", "_cffi_backend"}
    assert {elf_machine(p) for p in shared} == {machine}
    # And every binary wheel's platform tag names it; the rest are pure Python
    tags = wheel_tags(layer)
    binary = {tag for tag in tags if not tag.endswith("-none-any")}
    assert binary
    assert all(tag.endswith(f"_{machine}") for tag in binary), binary
    # And the core is there, with its bytecode
    assert (layer / "broker" / "pipeline.py").is_file()
    assert next((layer / "broker").glob("__pycache__/pipeline.*.pyc"), None) is not None

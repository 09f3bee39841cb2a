"""Architecture rules from DESIGN.md section 2, checked on the source text, and a light top-level import."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ldmkit"

# package -> ldmkit subpackages it must never import
FORBIDDEN = {
    "diffusion": ["networks", "samplers", "training", "pipelines", "autoencoders", "metrics", "cli", "commands",
                  "denoiser", "conditioning", "data"],
    "networks": ["diffusion", "samplers", "training", "pipelines", "cli", "commands"],
    "samplers": ["networks", "training", "pipelines", "cli", "commands", "autoencoders"],
    "metrics": ["training", "cli"],
    "data": ["diffusion", "networks", "samplers", "training", "pipelines"],
}


def _ldmkit_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "ldmkit" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    folder = SRC / package
    if not folder.is_dir():
        pytest.skip(f"{package}/ not present")
    offenders = []
    for path in sorted(folder.rglob("*.py")):
        bad = _ldmkit_imports(path) & set(FORBIDDEN[package])
        if bad:
            offenders.append(f"{path.relative_to(SRC)} imports ldmkit.{sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_no_cuda_device_literal_in_library():
    """Device and dtype follow the inputs: no hard-coded CUDA placement (checking `device.type` is fine)."""
    pattern = re.compile(r"""\.cuda\(|device\(\s*["']cuda|\.to\(\s*["']cuda|device\s*=\s*["']cuda""")
    offenders = [f"{p.relative_to(SRC)}:{i + 1}" for p in SRC.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert not offenders, f"hard-coded CUDA placement at {offenders}"


def test_import_ldmkit_is_light():
    code = (
        "import sys, ldmkit, ldmkit.cli\n"
        "heavy = [m for m in ('sentence_transformers', 'transformers', 'diffusers', 'fastapi', 'scipy', "
        "'matplotlib', 'torchvision', 'denoising_diffusion_pytorch') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing ldmkit pulled in: {out}"


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "ldmkit.cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "data" in out

"""The README's Python section runs as written (on the shipped demo model) and its two routes agree."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_snippet_runs(monkeypatch):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Python\n\n```python\n(.*?)```", text, re.DOTALL).group(1)
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    images, x0 = scope["images"], scope["x0"]
    assert images.shape == (16, 1, 28, 28) and x0.shape == (16, 1, 28, 28)
    # pipelines.generate decodes (identity in pixel space) and clamps: the hand-written route gives the same
    torch.testing.assert_close(images, x0.clamp(-1, 1), rtol=0, atol=1e-5)

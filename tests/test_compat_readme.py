"""The README's compat section: three snippets, each run as written by the compat tests.

``readme_snippet(i)`` is imported by tests/test_compat_{taming,diffusers,vector_quantize}.py, which
execute snippet 0 (taming VQGAN), 1 (diffusers VQModel) and 2 (vector-quantize-pytorch).
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Use SimVQ in your existing VQGAN / diffusers / vector-quantize-pytorch code"
TAMING, DIFFUSERS, VECTOR_QUANTIZE = range(3)


def readme_snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    assert text.count(SECTION) == 1, f"README.md must hold the section {SECTION!r} once"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def readme_snippet(index: int) -> str:
    return readme_snippets()[index]


def run_snippet(index: int, namespace: dict) -> dict:
    """Execute README snippet ``index`` in ``namespace`` (what the snippet takes as given) and return it."""
    exec(compile(readme_snippet(index), f"README.md compat snippet {index}", "exec"), namespace)
    return namespace


def test_the_section_has_three_short_snippets_in_order():
    snippets = readme_snippets()
    assert len(snippets) == 3
    assert "VectorQuantizer2" in snippets[TAMING]
    assert "from diffusers import VQModel" in snippets[DIFFUSERS]
    assert "VectorQuantize(" in snippets[VECTOR_QUANTIZE]
    for snippet in snippets:
        assert len([line for line in snippet.splitlines() if line.strip()]) <= 8

"""The README's example runs and says what the README says it says."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_full_basis_is_exact():
    text = README.read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, str(README), "exec", dont_inherit=True), {"__name__": "readme"})
    lines = buf.getvalue().splitlines()
    full = float(lines[0].rsplit(" ", 1)[1])
    low = float(lines[1].rsplit(" ", 1)[1])
    assert lines[0].startswith("lp_linf:8") and full < 1e-12
    assert lines[1].startswith("lp_l1:6") and 0.5 < low < 1.0


def test_readme_opens_with_the_two_setup_commands():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert block[0].endswith("lbp report")
    assert block[1].endswith("python -m pytest")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert block[1] in ci  # CI runs the README's test command verbatim

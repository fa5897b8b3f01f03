"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_scheduler_example_prints_its_countdown(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README lost its examples"
    namespace = {"__name__": "readme"}  # read top to bottom: later examples use earlier names
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert capsys.readouterr().out.splitlines()[:3] == ["0.00: 3", "0.50: 2", "1.00: 1"]

"""The README's code blocks, read from the README itself so that CI and the tests run exactly what
users read (stdlib only: `.ci/run` calls this file before anything is installed).

    python tests/readme_blocks.py install-demo   # the README's first command (install + demo)
    python tests/readme_blocks.py install-test   # the README's second command (install + tests)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str, readme: Path = README) -> list[str]:
    """Every fenced block of `language` in the README, in order."""
    return [body for lang, body in FENCE.findall(readme.read_text(encoding="utf-8")) if lang == language]


def command(section: str, readme: Path = README) -> str:
    """The one-line bash command of the README section whose heading starts with `section`."""
    text = readme.read_text(encoding="utf-8")
    match = re.search(rf"^##+ {re.escape(section)}.*?^```bash\n(.*?)^```", text, re.S | re.M)
    if match is None:
        raise SystemExit(f"README.md has no bash block under a heading starting with {section!r}")
    lines = [ln for ln in match.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise SystemExit(f"README.md section {section!r}: expected one command line, found {len(lines)}")
    return lines[0]


SECTIONS = {"install-demo": "Install and run the demo", "install-test": "Run the tests",
            "install-vllm": "Serve with vLLM"}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SECTIONS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(SECTIONS)}}}")
    print(command(SECTIONS[sys.argv[1]]))

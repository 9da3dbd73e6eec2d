"""The README's install and test commands are the ones CI runs, verbatim."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fenced_block_after(text: str, heading: str) -> list[str]:
    """Command lines of the first ```bash block after a line containing `heading`."""
    start = text.index(heading)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, f"no ```bash block after {heading!r} in README.md"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_the_readme_commands_verbatim():
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    install = fenced_block_after(readme, "<!-- install -->")
    test = fenced_block_after(readme, "<!-- test -->")
    assert len(install) == 1 and len(test) == 1, (install, test)
    for command in install + test:
        assert command.strip() in ci_lines, f"README command not run verbatim by .ci/run: {command}"
    assert test[0].strip() == "pytest"
    # install before test, as a newcomer would
    assert ci_lines.index(install[0].strip()) < ci_lines.index(test[0].strip())

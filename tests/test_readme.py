"""README.md: the install and test commands are the ones CI runs, verbatim; it stays a short front door; every
relative link and image in README.md and docs/*.md points to an existing file."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick  # units, hand-made data, argument checks: `pytest -m quick`


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


README_MAX_LINES = 150
# [text](target) and ![alt](target), plus <img src="target">; the target up to a space or ')'
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.I)


def relative_targets(markdown: str) -> list[str]:
    """The relative link and image targets of a markdown text (anchors and URLs left out), outside code."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)  # fenced code
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    targets = MARKDOWN_LINK.findall(text) + HTML_SRC.findall(text)
    relative = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "//")):
            continue  # http:, https:, mailto:, in-page anchors
        relative.append(target.split("#", 1)[0].split("?", 1)[0])
    return relative


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it <= {README_MAX_LINES}, move detail to docs/"
    )


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_relative_links_point_to_existing_files():
    assert (ROOT / "docs").is_dir(), "docs/ is missing"
    broken = []
    for page in markdown_files():
        targets = relative_targets(page.read_text())
        for target in targets:
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_link_check_finds_broken_links():
    """The link check itself: it sees links and images, skips URLs, anchors and code, and reports a missing file."""
    sample = (
        "[a](docs/x.md#part) ![b](docs/images/y.png) [c](https://example.org/z) [d](#here)\n"
        '<img src="docs/images/w.png"> `[e](in_code.md)`\n```bash\n[f](in_block.md)\n```\n'
    )
    assert relative_targets(sample) == ["docs/x.md", "docs/images/y.png", "docs/images/w.png"]
    assert not (ROOT / "docs" / "no_such_page.md").exists()
    assert relative_targets("[gone](docs/no_such_page.md)") == ["docs/no_such_page.md"]

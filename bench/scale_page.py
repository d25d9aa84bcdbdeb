"""The page bench/results/scale/README.md, which two scripts share: each owns one section."""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).resolve().parent / "results" / "scale" / "README.md"


def replace_section(heading: str, section: str, page: Path = PAGE) -> None:
    """Replace the section starting at ``heading`` (up to the next ``## `` heading) with
    ``section``, or append it; the other sections are kept."""
    text = page.read_text() if page.is_file() else "# Scaling out\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + section.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text.rstrip("\n") + "\n")

"""The user documentation's relative links resolve to files in the checkout.

Pure Python, no JAX: reads the markdown files, finds every `[text](path)` and `![alt](path)`
outside code, and checks that each relative path (less its `#anchor`) exists, relative to the
file that links it. Web links (http, https, mailto) and links to an anchor of the same page are
not checked.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/guide.md", "docs/config.md", "BENCHMARKS.md", "docs/notes/benchmarks_history.md")

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) or ![alt](target), with an optional "title"; text may hold nested [...].
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_WEB = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def links(markdown: str) -> list[str]:
    """Every link target in `markdown` outside fenced code blocks and inline code spans."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    return _LINK.findall(text)


def local_path(target: str) -> str | None:
    """The file part of a relative link, or None for web links and same-page anchors."""
    if _WEB.match(target) or target.startswith("#"):
        return None
    return target.split("#", 1)[0].split("?", 1)[0] or None


def test_link_finder():
    md = (
        "See [the guide](docs/guide.md#train) and ![walk](docs/walk.gif \"a gif\").\n"
        "[web](https://example.com/x.md) [here](#anchor) [`code`](a/b.md) [x [y] z](c.md)\n"
        "`[not a link](nowhere.md)` and\n```bash\n[nor this](nowhere.md)\n```\n"
    )
    assert links(md) == ["docs/guide.md#train", "docs/walk.gif", "https://example.com/x.md", "#anchor",
                         "a/b.md", "c.md"]
    assert [local_path(t) for t in links(md)] == ["docs/guide.md", "docs/walk.gif", None, None, "a/b.md", "c.md"]


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_resolves(doc):
    path = ROOT / doc
    assert path.is_file(), f"{doc} is missing"
    targets = [t for t in links(path.read_text(encoding="utf-8")) if local_path(t)]
    missing = [t for t in targets if not (path.parent / local_path(t)).exists()]
    assert not missing, f"{doc}: links to files that do not exist: {missing}"


def test_readme_links_the_moved_documentation():
    found = {local_path(t) for t in links((ROOT / "README.md").read_text(encoding="utf-8"))}
    for target in ("docs/guide.md", "docs/config.md", "BENCHMARKS.md", "docs/notes/benchmarks_history.md"):
        assert target in found, f"README.md does not link {target}"

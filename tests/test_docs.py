"""The README is a short front page; the manual lives in docs/ and every link between them resolves."""
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]


def anchors(page):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-')
            for h in re.findall(r'^#+ (.*)$', page.read_text(), re.M)}


def links(page):
    return re.findall(r'\]\(([^)\s]+)\)', page.read_text())


def test_readme_front_page_stays_within_10000_characters():
    size = len((ROOT / 'README.md').read_bytes())
    assert size <= 10_000, f'README.md has {size} characters: move the detail to a docs/ page and link it'


def test_every_relative_link_and_anchor_in_readme_and_docs_resolves():
    broken = []
    for page in PAGES:
        for target in links(page):
            if re.match(r'[a-z]+:', target):
                continue
            path, _, anchor = target.partition('#')
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists() or (anchor and anchor not in anchors(dest)):
                broken.append(f'{page.relative_to(ROOT)}: {target}')
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme_and_links_back():
    readme_links = {os.path.normpath(t.partition('#')[0]) for t in links(ROOT / 'README.md')}
    for page in PAGES[1:]:
        assert f'docs/{page.name}' in readme_links, f'{page.name} is not linked from README.md'
        assert '../README.md' in links(page), f'{page.name} does not link back to README.md'

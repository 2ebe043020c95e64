"""The documentation is tested: README.md and docs/*.md.

- Every fenced block names its language, so no command hides in an untyped block.
- Every ``xception`` command in a bash or console block parses with today's CLI, and every Python
  block compiles, marked or not: a removed option or a renamed command fails here.
- Every bash and Python block runs, in a folder of its page's own (its blocks in order, so a
  later block may use what an earlier one wrote), unless the line before it is
  ``<!-- doc: skip REASON -->``: a block that needs what the suite lacks (your images, ImageNet,
  weights downloads, a GPU, a cluster, hours). ``<!-- doc: tiny ARGS -->`` runs it with ARGS
  added to each of its ``xception`` commands.
- Every relative link resolves to a file, and its ``#anchor`` to a heading of that file.
- ``xception --help`` and ``train --help`` state the quick recipe's real defaults and time, the
  README the same time; every subcommand's help ends with an example that parses.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import cli_env

from xception.cli.main import build_parser
from xception.training.recipes import QUICK_TIME, get_recipe, list_recipes, recipe_summary

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"^<!--\s*doc:\s*(skip|tiny)\b\s*(.*?)\s*-->$")
RUNNABLE = {"bash", "python"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    mark: str = ""      # "", "skip" or "tiny"
    arg: str = ""

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines, found, i = page.read_text().splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            start, lang = i, lines[i][3:].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = lines[start - 1].strip() if start else ""
            mark = MARK.match(before)
            found.append(Block(page, start + 1, lang, "\n".join(lines[start + 1:end]),
                               *(mark.groups() if mark else ())))
            i = end
        i += 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]


def xception_commands(block: Block) -> list[list[str]]:
    """The argument lists of the block's ``xception`` commands (``xception ...``, ``python -m
    xception ...``, ``torchrun ... -m xception ...``), continued lines joined."""
    text = block.code.replace("\\\n", " ")
    lines = text.splitlines()
    if block.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    commands = []
    for line in lines:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split, lexer.commenters = True, "#"
        tokens = list(lexer)
        while tokens:  # cut at ; & && | and redirections (a "2" before "2>&1" goes too)
            cut = next((i for i, t in enumerate(tokens) if set(t) <= set(";&|<>")), len(tokens))
            redirect = cut < len(tokens) and set(tokens[cut]) & set("<>")
            part, tokens = tokens[:cut], tokens[cut + 1:]
            if redirect and part and part[-1].isdigit():
                part = part[:-1]
            if part[:1] == ["xception"]:
                commands.append(part[1:])
            elif "xception" in part and part[part.index("xception") - 1] == "-m":
                commands.append(part[part.index("xception") + 1:])
    return commands


def test_every_block_names_its_language():
    untyped = [b.name for b in ALL if not b.lang]
    assert not untyped, f"fenced blocks without a language: {untyped}"


@pytest.mark.parametrize("block", [b for b in ALL if b.lang in ("bash", "console")],
                         ids=lambda b: b.name)
def test_every_documented_command_parses(block):
    parser = build_parser()
    for argv in xception_commands(block):
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{block.name}: `xception {shlex.join(argv)}` does not parse")


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "python"], ids=lambda b: b.name)
def test_every_python_block_compiles(block):
    compile(block.code, block.name, "exec")


def _with_tiny(block: Block) -> str:
    if block.mark != "tiny":
        return block.code
    return "\n".join(line + " " + block.arg if re.match(r"\s*(xception|python -m xception) ", line)
                     else line for line in block.code.replace("\\\n", " ").splitlines())


@pytest.fixture(scope="module")
def page_folders(tmp_path_factory) -> dict[Path, Path]:
    return {page: tmp_path_factory.mktemp(page.stem) for page in PAGES}


@pytest.mark.parametrize("block", [b for b in ALL if b.lang in RUNNABLE and b.mark != "skip"],
                         ids=lambda b: b.name)
def test_every_unmarked_block_runs(block, page_folders):
    code = _with_tiny(block)
    command = ["bash", "-euo", "pipefail", "-c", code] if block.lang == "bash" \
        else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=page_folders[block.page], env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_to_a_file_and_heading(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not fetched here
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: link {target!r}: no such file"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.name}: link {target!r}: no such heading"


def test_the_readme_is_short_and_links_every_guide_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"README does not link docs/{page.name}"


def test_help_states_the_real_default_and_every_subcommand_has_an_example():
    quick = get_recipe("quick")
    facts = (quick.model.name, quick.data.name, f"{quick.train.epochs} epochs", QUICK_TIME)
    top = subprocess.run([sys.executable, "-m", "xception", "--help"], env=cli_env(),
                         capture_output=True, text=True, check=True).stdout
    train = subprocess.run([sys.executable, "-m", "xception", "train", "--help"], env=cli_env(),
                           capture_output=True, text=True, check=True).stdout
    for fact in facts:
        assert fact in " ".join(top.split()) and fact in " ".join(train.split()), fact
    assert f"# the main job: {QUICK_TIME}" in (ROOT / "README.md").read_text()
    for name in list_recipes():
        assert f"  {name}" in train and recipe_summary(name) in train, name
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 (argparse's registry)
    for name, sub in commands.items():
        epilog = sub.epilog or ""
        assert "example:" in epilog, f"xception {name} --help has no example"
        for line in epilog.split("example:")[1].strip().splitlines():
            parser.parse_args(shlex.split(line)[1:])  # parses (SystemExit fails the test)

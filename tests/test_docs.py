"""The docs name only what exists: every `imseg <command>` and `--flag` the README shows is in
the command line, every config key it names is in the config model, every preset and recipe it
names ships, every relative link of README.md, docs/*.md and bench/README.md resolves, and every
source file the docs cite is there. A newcomer copies these lines; a renamed flag or key must
fail here, not on their machine."""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from imseg.cli import build_parser
from imseg.config import CONFIG_DIR, Config
from imseg.experiment.recipes import recipes_of

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
SOURCE_FILES = [f for folder in ("src/imseg", "tests", "bench") for f in (ROOT / folder).rglob("*.py")]

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`]+)`")
COMMAND = re.compile(r"(?:(?<=\s)|(?<=/bin/)|^)imseg[ \t]+(--[\w-]+|[a-z][\w-]*)(.*)", re.M)
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
SECTIONS = "train|augment|benchmark|ssl|evalnet|model|log"
CONFIG_KEY = re.compile(rf"(?<![\w/.$-])((?:{SECTIONS})\.[a-z_]+(?:\.[a-z_]+)*)")
FILE_NAME = re.compile(r"\.(txt|ya?ml|csv|py|pt|md|png|pdf|json|onnx|safetensors)$")
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
SOURCE_FILE = re.compile(r"(?<![\w/.-])((?:\w+/)*\w+\.py)(?::\s*(\w+))?")
PLACEHOLDER = re.compile(r"^[A-Z]+$|[<…]|\.\.\.")


# --------------------------------------------------------------------------- reading markdown
def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return FENCE.findall(text)


def code_lines(text: str) -> list[str]:
    """Every line of code a reader may copy: fenced lines (continuations joined, comments cut)
    and inline spans (a span wrapped over two lines is one line)."""
    lines = []
    for _, body in fenced_blocks(text):
        body = body.replace("\\\n", " ")
        lines += [re.split(r"\s#\s", line)[0] for line in body.splitlines()]
    prose = FENCE.sub("", text)
    lines += [" ".join(span.split()) for span in INLINE.findall(prose)]
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}


# --------------------------------------------------------------------------- the command line
def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def all_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every flag of the parser and of its commands, at any depth."""
    found = flags(parser)
    for sub in subcommands(parser).values():
        found |= all_flags(sub)
    return found


def command_problems(line: str, parser: argparse.ArgumentParser) -> list[str]:
    """What in one `imseg ...` line the command line does not have."""
    problems = []
    for match in COMMAND.finditer(line):
        name, rest = match.groups()
        if name.startswith("--"):  # `imseg --version`
            problems += [f"`imseg {name}`: no such option"] if name not in flags(parser) else []
            continue
        if name not in subcommands(parser):
            problems.append(f"`imseg {name}`: no such command")
            continue
        target = subcommands(parser)[name]
        if subcommands(target):  # `imseg prepare <source>`
            source = rest.split()[0] if rest.split() else ""
            if source not in subcommands(target):
                problems.append(f"`imseg {name} {source}`: no such {name} source")
                continue
            target = subcommands(target)[source]
        problems += [f"`imseg {name}`: no flag {flag}" for flag in FLAG.findall(rest)
                     if flag not in flags(target)]
        problems += preset_problems(rest)
    return problems


def preset_problems(args: str) -> list[str]:
    names = re.findall(r"--config\s+([\w-]+)(?=\s|$)", args)
    return [f"--config {name}: no such preset" for name in names
            if not PLACEHOLDER.search(name) and not (CONFIG_DIR / f"{name}.yaml").is_file()]


# --------------------------------------------------------------------------- the config model
def _section(annotation) -> type[BaseModel] | None:
    """The config section a field holds, through Optional/Union; None for a plain value."""
    options = typing.get_args(annotation) or (annotation,)
    for option in options:
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def _is_mapping(annotation) -> bool:
    options = typing.get_args(annotation) if typing.get_origin(annotation) is not dict else ()
    return typing.get_origin(annotation) is dict or any(
        typing.get_origin(o) is dict for o in options)


def config_key_exists(key: str) -> bool:
    """`train.lr` is a field of Config's `train`; under a free mapping (`recipes`,
    `model.options`) anything goes."""
    node: type[BaseModel] = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        field = node.model_fields.get(part)
        if field is None:
            return False
        if _is_mapping(field.annotation):
            return True
        section = _section(field.annotation)
        if section is None:
            return i == len(parts) - 1
        node = section
    return True


def yaml_keys(data: dict, prefix: str = "") -> list[str]:
    """Dotted paths of a YAML config's leaves (a mapping's own keys are not descended)."""
    keys = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += [path, *yaml_keys(value, f"{path}.")]
        else:
            keys.append(path)
    return keys


def config_problems(text: str) -> list[str]:
    """Config keys named in code (`--set k=v`, `train.lr`, YAML blocks) that Config lacks,
    and YAML recipes that do not validate."""
    problems = []
    for line in code_lines(text):
        for key in CONFIG_KEY.findall(line):
            if not FILE_NAME.search(key) and not config_key_exists(key):
                problems.append(f"config key {key}: not in the config model")
    for lang, body in fenced_blocks(text):
        if lang != "yaml":
            continue
        data = yaml.safe_load(body)
        problems += [f"YAML key {key}: not in the config model" for key in yaml_keys(data)
                     if not config_key_exists(key)]
        if "recipes" in data:
            try:
                recipes_of(Config(recipes=data["recipes"]))
            except Exception as exc:  # noqa: BLE001 - the message is the finding
                problems.append(f"YAML recipes do not validate: {exc}")
    return problems


# --------------------------------------------------------------------------- the whole page
def readme_problems(text: str) -> list[str]:
    """Everything a README names that imseg does not have."""
    parser = build_parser()
    known_flags = all_flags(parser)
    problems = []
    for line in code_lines(text):
        if COMMAND.search(line):
            problems += command_problems(line, parser)
        elif line.startswith("--"):
            problems += [f"{flag}: no imseg command has it" for flag in FLAG.findall(line)
                         if flag not in known_flags]
            problems += preset_problems(line)
    problems += config_problems(text)
    problems += table_problems(text)
    problems += make_problems(text)
    return problems


def table_problems(text: str) -> list[str]:
    """The presets and recipes tables name shipped presets and built-in recipes."""
    presets = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    recipes = set(recipes_of(Config()))
    problems = []
    for header, known, kind in (("| preset |", presets, "preset"),
                                ("| recipe |", recipes, "recipe")):
        for row in table_rows(text, header):
            problems += [f"{kind} {name}: does not exist"
                         for name in re.findall(r"`([\w-]+)`", row.split("|")[1])
                         if name not in known]
    for names in re.findall(r"--approaches\s+([\w,]+)", "\n".join(code_lines(text))):
        problems += [f"--approaches {n}: no such recipe" for n in names.split(",")
                     if n not in recipes]
    return problems


def table_rows(text: str, header: str) -> list[str]:
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
        elif inside and line.startswith("| ---"):
            continue
        elif inside and line.startswith("|"):
            rows.append(line)
        else:
            inside = False
    return rows


def make_problems(text: str) -> list[str]:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = [name for line in code_lines(text) for name in re.findall(
        r"(?:^|[ \t])make[ \t]+(?:[A-Z]+=\"[^\"]*\"[ \t]+|[A-Z]+=\S+[ \t]+)*([a-z][\w-]*)", line)]
    return [f"make {t}: no such Makefile target" for t in named if t not in targets]


def link_problems(page: Path) -> list[str]:
    """Relative links of a page that point at no file, or at no heading of it."""
    problems = []
    for _, target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{page.name}: link {target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{page.name}: link {target}: no such heading")
    return problems


def source_problems(page: Path) -> list[str]:
    """Source files the page cites (`pseudo/labelers.py: LABELERS`) that are not there, or
    that no longer hold the name cited."""
    problems = []
    for line in code_lines(page.read_text()):
        for path, name in SOURCE_FILE.findall(line):
            files = [f for f in SOURCE_FILES if f.as_posix().endswith(f"/{path}")]
            if not files:
                problems.append(f"{page.name}: {path}: no such file")
            elif name and not any(re.search(rf"\b{name}\b", f.read_text()) for f in files):
                problems.append(f"{page.name}: {path} has no {name}")
    return problems


# --------------------------------------------------------------------------- the tests
def test_the_two_commands_open_the_readme():
    lang, first = fenced_blocks(README.read_text())[0]
    assert [line.split("#")[0].strip() for line in first.splitlines()] == ["make demo", "make test"]


def test_readme_names_only_commands_flags_keys_presets_and_recipes_that_exist():
    assert readme_problems(README.read_text()) == []


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve(page):
    assert link_problems(page) == []


@pytest.mark.parametrize("page", [p for p in DOC_PAGES if p.parent.name == "docs"],
                         ids=lambda p: p.name)
def test_cited_source_files_exist(page):
    assert source_problems(page) == []


def test_readme_shows_every_command_and_preset():
    """A command or preset that exists but the guide never shows is one nobody finds."""
    parser = build_parser()
    text = README.read_text()
    shown = {m.group(1) for line in code_lines(text) for m in COMMAND.finditer(line)}
    assert set(subcommands(parser)) - shown == set()
    sources = set(subcommands(subcommands(parser)["prepare"]))
    assert {s for s in sources if f"prepare {s}" not in text} == set()
    listed = {n for row in table_rows(text, "| preset |")
              for n in re.findall(r"`([\w-]+)`", row.split("|")[1])}
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} - listed == set()


def test_the_checks_catch_what_does_not_exist(tmp_path):
    """The checks above are only worth something if they fail on a wrong name."""
    bad = "\n".join([
        "```bash",
        "imseg watch --out runs/x",
        "imseg run --data d --out r --no-such-flag --config no_such_preset",
        "imseg prepare nowhere --out d",
        "make no-such-target",
        "```",
        "Set `--set train.no_such_key=1` or `model.nothing`; `--bogus-flag`.",
        "Run `imseg run --approaches im,no_such_recipe`.",
        "```yaml",
        "train:",
        "  lr_typo: 0.1",
        "recipes:",
        "  mine: {teachers: top_n, labeler: no_such_labeler}",
        "```",
    ])
    problems = "\n".join(readme_problems(bad))
    for expected in ("imseg watch", "--no-such-flag", "no_such_preset", "prepare nowhere",
                     "make no-such-target", "train.no_such_key", "model.nothing",
                     "--bogus-flag", "no_such_recipe", "train.lr_typo", "recipes do not validate"):
        assert expected in problems, expected
    page = tmp_path / "page.md"
    page.write_text("[a](missing.md) [b](#nowhere) [c](page.md#heading)\n# Heading\n"
                    "`src/imseg/no_such.py` `config.py: no_such_name`\n")
    assert len(link_problems(page)) == 2
    assert len(source_problems(page)) == 2

"""The README runs as written, and the README and docs/ say only what is true.

Checked: every ```python block of README.md runs; the README's only shell blocks are the two
set-up commands; no words about how the work was organised; relative links resolve; every
documented benchmark command names an existing module and existing flags; every recorded JSON
that docs/results.md cites exists; the layering docs/design.md states holds.

Each python block is run in a fresh interpreter (working directory: a temporary folder,
``PYTHONPATH`` = the repository root), so a block can rely only on what it imports. A
block's first line is a comment ending in its run time on 2 CPU cores, ``(~N s)``; blocks
of 10 s or more are marked ``slow`` (run with ``-m slow``), the others run by default. Every
block, slow or not, is also compiled in the default run, so a syntax error never waits for
the slow tests.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
# A fenced block: ```lang on its own line, body, ``` on its own line.
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
TIME = re.compile(r"^#.*\(~(\d+) s\)\s*$")
SLOW_FROM_S = 10
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
SETUP = [
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[data]" && python -m benchmarks.infinite_ae',
    'python3 -m venv .venv && . .venv/bin/activate && pip install -q -e ".[test]" && python -m pytest -n 2',
]
# Words that describe how the work was organised rather than the library.
DENY = re.compile(r"\b(issues?|briefs?|sessions?|the lead|(?:was|were) lent)\b", re.I)


def blocks(text: str, lang: str) -> list[str]:
    """The bodies of the ```lang blocks of ``text``, in order."""
    return [body for fence_lang, body in FENCE.findall(text) if fence_lang == lang]


def declared_seconds(src: str) -> int:
    """The ``(~N s)`` run time a block declares on its first line."""
    m = TIME.match(src.splitlines()[0])
    if m is None:
        raise ValueError(f"README block must start with a comment ending in '(~N s)': {src.splitlines()[0]!r}")
    return int(m.group(1))


PYTHON_BLOCKS = blocks(README, "python")


def _params():
    out = []
    for i, src in enumerate(PYTHON_BLOCKS):
        try:
            slow = declared_seconds(src) >= SLOW_FROM_S
        except ValueError:
            slow = False  # test_every_block_declares_its_time reports it
        title = re.sub(r"\W+", "_", src.splitlines()[0].lstrip("# ")).strip("_")[:40]
        out.append(pytest.param(src, id=f"{i}-{title}", marks=[pytest.mark.slow] if slow else []))
    return out


def test_blocks_found():
    # One quick-start per method family plus the bring-your-own-data block.
    assert len(PYTHON_BLOCKS) == 7, len(PYTHON_BLOCKS)


@pytest.mark.parametrize("i", range(len(PYTHON_BLOCKS)))
def test_every_block_declares_its_time_and_compiles(i):
    src = PYTHON_BLOCKS[i]
    assert 0 < declared_seconds(src) < 60  # each quick-start stays under a minute on 2 cores
    compile(src, f"README.md python block {i}", "exec")


@pytest.mark.parametrize("src", _params())
def test_python_block_runs(src, tmp_path):
    _run_block(src, tmp_path)


@pytest.mark.slow
def test_design_doc_example_runs(tmp_path):
    # docs/design.md's one-shape example: two methods through the same calls.
    (src,) = blocks((ROOT / "docs" / "design.md").read_text(), "python")
    _run_block(src, tmp_path)


def _run_block(src, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("XLA_FLAGS", None)
    script = tmp_path / "block.py"
    script.write_text(src)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert proc.stdout.strip(), "every block prints what it computed"


def test_exactly_two_setup_commands():
    # The only shell blocks are the two set-up commands, verbatim, in this order.
    shell = [(lang, body.strip()) for lang, body in FENCE.findall(README) if lang in SHELL_LANGS or lang == ""]
    assert shell == [("bash", SETUP[0]), ("bash", SETUP[1])], shell


def test_no_words_about_how_the_work_was_organised():
    for path in [ROOT / "README.md", *DOCS]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = DENY.search(line)
            assert m is None, f"{path.name}:{n}: {m.group(0)!r} in {line!r}"


def test_deny_list_catches_what_it_should():
    assert DENY.search("the issue's target") and DENY.search("as the brief quotes") and DENY.search("a Session")
    assert not DENY.search("missing items, tissue, briefly")


def test_linked_files_exist():
    # Relative links of the README and docs point at files of the repository.
    for path in [ROOT / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_benchmark_commands_and_recorded_results_exist():
    # Every `python -m benchmarks.X` names a module, and every recorded file docs/results.md cites exists.
    text = README + "".join(p.read_text() for p in DOCS)
    modules = set(re.findall(r"python -m benchmarks\.([a-z][a-z0-9_]*)", text))
    assert {"infinite_ae", "distill_cf", "farzi", "matching", "psi"} <= modules
    # The README's benchmark table: `name`[, `name`...] in the first column of each row.
    section = README.split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    table = [re.findall(r"`(\w+)`", row.split("|")[1]) for row in section.splitlines() if row.startswith("| `")]
    assert len(table) >= 10, table
    for mod in modules | {m for row in table for m in row}:
        assert (ROOT / "benchmarks" / f"{mod}.py").is_file(), mod
    results = (ROOT / "docs" / "results.md").read_text()
    cited = set(re.findall(r"`([\w.-]+\.json)", results))
    assert len(cited) >= 15, cited
    recorded = {p.name for p in (ROOT / "benchmarks" / "results").rglob("*.json")}
    missing = sorted(cited - recorded)
    assert not missing, missing


def benchmark_commands(text: str) -> list[tuple[str, list[str]]]:
    """``(module, flags)`` of every ``python -m benchmarks.X ...`` command in backticks or code fences."""
    out = []
    for segment in text.split("`"):
        for cmd in re.split(r"(?=python -m benchmarks\.)", segment)[1:]:
            m = re.match(r"python -m benchmarks\.([a-z][a-z0-9_]*)", cmd)
            if m:
                out.append((m.group(1), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", cmd[m.end():])))
    return out


def test_benchmark_flags_exist():
    # Each flag of a documented command is defined by that benchmark (or by the shared parser).
    common = (ROOT / "benchmarks" / "_common.py").read_text()
    commands = benchmark_commands(README + "".join(p.read_text() for p in DOCS))
    assert sum(len(flags) for _, flags in commands) >= 50, commands
    for mod, flags in commands:
        src = (ROOT / "benchmarks" / f"{mod}.py").read_text()
        for flag in flags:
            # Literal '"--flag"', or an override flag built from its name ('("flag_name", ...').
            defined = f'"{flag}"' in src + common or f'("{flag[2:].replace("-", "_")}",' in src
            assert defined, f"python -m benchmarks.{mod}: {flag} is not one of its flags"


def test_benchmark_commands_parser_sees_flags():
    cmds = benchmark_commands("run `python -m benchmarks.psi --quick --out DIR` then\n```\npython -m benchmarks.farzi "
                              "--seeds 0\npython -m benchmarks.matching --ipcs 50\n```")
    assert cmds == [("psi", ["--quick", "--out"]), ("farzi", ["--seeds"]), ("matching", ["--ipcs"])], cmds


def _imports(path: pathlib.Path) -> set[str]:
    """Absolute module names ``path`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


METHODS = ("distill.distill_cf", "distill.farzi", "distill.matching")


def test_layering_stated_in_design_doc():
    # docs/design.md: models and selection never import the methods nor inner/loop/export; methods never
    # import each other or the benchmarks.
    design = (ROOT / "docs" / "design.md").read_text()
    assert "never import the methods" in design
    forbidden = (*METHODS, "distill.inner", "distill.loop", "distill.export", "benchmarks")
    for pkg in ("models", "selection"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            bad = {n for n in _imports(path) if n.startswith(forbidden)}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
    method_files = [ROOT / "distill" / "distill_cf.py", ROOT / "distill" / "farzi.py",
                    *sorted((ROOT / "distill" / "matching").glob("*.py"))]
    for path in method_files:
        own = "distill.matching" if path.parent.name == "matching" else f"distill.{path.stem}"
        others = tuple(m for m in METHODS if m != own) + ("benchmarks",)
        bad = {n for n in _imports(path) if n.startswith(others)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"

"""The README's Python snippets run as written (on the tiny recipe and run instead of the
demo's, which take minutes): `import compress` is enough for everything they use."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_snippets_run(tiny_run, tiny_bert, tmp_path, monkeypatch):
    import textwrap

    import pandas as pd

    from tests.conftest import RECIPE, SUITE, make_rows

    for split, n, seed in (("train", 48, 1), ("dev", 12, 2), ("test", 18, 3)):
        pd.DataFrame(make_rows(n, seed), columns=["text", "label"]).to_csv(
            tmp_path / f"{split}.csv", index=False)
    (tmp_path / "suite.yaml").write_text(SUITE.format(test=tmp_path / "test.csv"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(RECIPE).format(
        model=tiny_bert, **{s: tmp_path / f"{s}.csv" for s in ("train", "dev", "test")}))
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    monkeypatch.chdir(tmp_path)
    code = snippets()
    assert len(code) >= 2, "the README has lost its Python snippets"
    namespace: dict = {}
    for block in code:
        block = block.replace("recipes/demo-bbc-news.yaml", str(recipe))
        block = re.sub(r'"runs/demo-bbc-news-[^"]*"', repr(str(tiny_run)), block)
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    run = namespace["run"]
    assert len(run.summary()) == 3
    assert {"ci_low", "ci_high"} <= set(run.table().columns)


def test_readme_cli_list_names_every_command():
    """Every command the CLI registers has a line in the README's CLI list (calibrate and
    recommend were missing once), and the list names no command that does not exist."""
    import typer.main

    from compress.cli import app

    commands = set(typer.main.get_command(app).commands)
    block = (ROOT / "README.md").read_text().split("\n## CLI\n", 1)[1]
    block = block.split("```\n", 1)[1].split("```", 1)[0]
    listed = {line.split()[1] for line in block.splitlines() if line.startswith("compress ")}
    assert listed == commands, (sorted(commands - listed), sorted(listed - commands))

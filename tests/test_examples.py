"""The documentation's examples that show their output, run on the demo (`make demo`: the sample
`aef-zonal sample out/sample` writes, the job run over it with its defaults into out/result).

A page shows an example as a ```sh block of `.venv/bin/aef-zonal` commands, then the marker
below and the output of the block's last command. The test runs every command of such a block in
this process, its `out/…` paths in a folder holding the demo's out/ (the JVM's working folder is
not this process's: the paths are made absolute, and the folder taken out of what is printed),
and compares what the last one prints with the page. `AEF_ZONAL_WRITE_DOCS=1 pytest
tests/test_examples.py` writes what they print into the pages instead. The figures the pages
quote from the demo in prose are checked against its run here too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aef_zonal import cli, dataset

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- output: tests/test_examples.py -->"
EXAMPLE = re.compile(
    r"```sh\n(?P<commands>.*?)```\n" + re.escape(MARK) + r"\n```\n(?P<output>.*?)```", re.S
)
WRITE = os.environ.get("AEF_ZONAL_WRITE_DOCS") == "1"
DEMO = "--store out/sample/store.zarr --fields out/sample/fields.parquet --out out/result"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, job_out):
    """A folder holding out/sample and out/result as `make demo` leaves them (the session's
    Spark running already)."""
    from aef_zonal.demo.sample import make_sample

    folder = tmp_path_factory.mktemp("demo")
    make_sample(folder / "out" / "sample", log=lambda *_: None)
    assert run(f"aef-zonal run {DEMO} --mode overwrite", folder)[0] == 0
    return folder


def run(command: str, folder: Path) -> tuple[int, str]:
    """One `aef-zonal …` command as a page spells it, in this process, its out/ in `folder`: its
    exit code and what it printed on standard output."""
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[0].endswith("aef-zonal"), command
    argv = [f"{folder}/{a}" if a.startswith("out/") else a for a in argv[1:]]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(argv)
    return rc, out.getvalue().replace(f"{folder}/", "")


def commands(block: str) -> list[str]:
    """The commands of a ```sh block: each starts a line with .venv/bin/aef-zonal."""
    starts = [m.start() for m in re.finditer(r"^\.venv/bin/aef-zonal ", block, re.M)]
    return [block[a:b].strip() for a, b in zip(starts, starts[1:] + [len(block)])]


def examples() -> list[tuple[Path, int]]:
    return [(page, i) for page in PAGES for i, _ in enumerate(EXAMPLE.finditer(page.read_text()))]


@pytest.mark.parametrize(
    "page, index", examples(), ids=lambda v: v.name if isinstance(v, Path) else str(v)
)
def test_a_shown_output_is_what_its_command_prints(page, index, demo):
    example = list(EXAMPLE.finditer(page.read_text()))[index]
    for command in commands(example["commands"]):
        rc, printed = run(command, demo)
        assert rc == 0, (command, printed)
    if WRITE:
        text = page.read_text()
        m = list(EXAMPLE.finditer(text))[index]
        page.write_text(text[: m.start("output")] + printed + text[m.end("output") :])
        return
    assert printed == example["output"], (
        f"{page.name}: the output shown differs from what the command prints now; "
        "run AEF_ZONAL_WRITE_DOCS=1 pytest tests/test_examples.py to write it"
    )


def test_the_figures_quoted_from_the_demo(demo):
    """What README.md and docs/design.md say of the demo's run, in prose and its progress line."""
    report = json.loads((demo / "out" / "result" / dataset.REPORT).read_text())
    listed = pd.read_parquet(demo / "out" / "result" / dataset.WITHOUT_PIXELS)
    readme = " ".join((ROOT / "README.md").read_text().split())
    n = report["fields"]
    said = (
        f"`make demo` reduces {n:,} fields × {len(report['years'])} years = "
        f"{report['field_years']:,} field-years ({report['chunk_tasks']} chunk tasks, "
        f"{report['chunk_reads']} chunk reads): {report['rows']:,} rows with a valid pixel, "
        f"{len(listed)} listed without one"
    )
    assert said in readme
    assert report["rows"] + len(listed) == report["field_years"]
    # the progress line as the run ended: every chunk read and field-year, then the rate
    design_text = (ROOT / "docs" / "design.md").read_text()
    line = re.search(r"^\[aef-zonal\] reduce: .*$", design_text, re.M)[0]
    assert (
        f"{report['chunk_reads']}/{report['chunk_reads']} chunk reads, "
        f"{report['field_years']:,}/{report['field_years']:,} field-years, "
        f"{report['bytes_read'] / 1e6:,.0f} MB (" in line
    ), line
    # docs/design.md's demo: the crop rotation the notebook finds, the PCA's variance shares
    design = " ".join(design_text.split())
    t = pd.read_parquet(demo / "out" / "result", columns=["feature_id", "time", "mean"])
    wide = t.pivot(index="feature_id", columns="time", values="mean").dropna()
    u, v = (np.stack(wide[c].to_numpy()) for c in ("2024-01-01", "2025-01-01"))
    cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    assert f"in the demo {(cos < 0.9).sum():,} of {len(cos):,} fields change between 2024" in design
    model = json.loads((demo / "out" / "result" / dataset.MODEL).read_text())
    evr = model["explained_variance_ratio"]
    assert f"PC1 and PC2 hold only {evr[0]:.0%} and {evr[1]:.0%} of the variance" in design.replace(
        " %", "%"
    )


def test_the_plans_the_pages_quote(demo):
    """`--explain`'s partition filter (README.md) and pushed bbox filter (docs/sql.md), expression
    ids aside."""
    ids = re.compile(r"#\d+")
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"`(PartitionFilters: \[[^`]*\])`", readme)[1]
    rc, plan = run(
        "aef-zonal sql out/result \"SELECT * FROM fields WHERE time = '2024-01-01'\" --explain",
        demo,
    )
    assert rc == 0 and ids.sub("#", shown) in ids.sub("#", plan), plan
    sql = (ROOT / "docs" / "sql.md").read_text()
    pushed = re.search(r"`PushedFilters: \[\.\.\., (\w+\([^)]*\))", sql)[1]
    bbox = re.search(
        r"```sh\n(\.venv/bin/aef-zonal sql out/result \"\nSELECT feature_id.*?)```", sql, re.S
    )[1]
    rc, plan = run(bbox.strip() + " --explain", demo)
    assert rc == 0 and pushed in plan, plan


def test_the_most_similar_fields_are_as_docs_sql_says(demo):
    """docs/sql.md's reading of its similarity example: 11444 first, drawn overlapping 1049, then
    pastures and an alfalfa field."""
    import shapely

    t = pd.read_parquet(
        demo / "out" / "result", columns=["feature_id", "label", "mean", "geometry", "time"]
    )
    t = t[t.time == "2024-01-01"].set_index("feature_id")
    q = np.asarray(t.loc[1049, "mean"])
    others = t.drop(index=1049)
    m = np.stack(others["mean"].to_numpy())
    cos = m @ q / np.linalg.norm(m, axis=1) / np.linalg.norm(q)
    top = others.assign(cos=cos).sort_values("cos", ascending=False).head(10)
    assert t.loc[1049, "label"] == "pasture" and top.index[0] == 11444
    g = shapely.from_wkb(t.geometry)
    assert shapely.intersects(g[t.index == 1049][0], g[t.index == 11444][0])
    assert set(top.label[1:]) == {"pasture", "alfalfa"}

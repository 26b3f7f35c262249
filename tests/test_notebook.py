"""docs/notebook.ipynb, executed (nbclient + ipykernel) on the test sample so that it cannot rot:
the API in the kernel's own Spark session, then the analysis of what it wrote and what it answers
(similar, cluster, probe); and kept without outputs in git."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pyarrow.dataset as ds
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebook.ipynb"
pytestmark = pytest.mark.spark  # the session's job output (main's test tiers)


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_notebook_runs_the_api_and_reads_its_output(sample, job_out, tmp_path, monkeypatch):
    out = tmp_path / "notebook"
    monkeypatch.setenv("AEF_ZONAL_SAMPLE", str(sample))  # the kernel inherits the environment
    monkeypatch.setenv("AEF_ZONAL_OUT", str(out))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    data = ds.dataset(out, format="parquet", partitioning="hive")
    assert (
        f"{data.count_rows():,} rows written to" in text
        and f"{data.count_rows():,} rows in" in text
    )
    assert data.count_rows() == ds.dataset(job_out, format="parquet").count_rows()
    assert "years [2024, 2025]" in text and (out / "_SUCCESS").exists()
    changed = re.search(r"([\d,]+) of ([\d,]+) fields changed between 2024 and 2025", text)
    assert changed and int(changed.group(1).replace(",", "")) > 0, (
        text
    )  # the sample's crop rotation
    kinds = [
        k for o in outputs if o.output_type in ("display_data", "execute_result") for k in o.data
    ]
    assert kinds.count("image/png") == 2 and "text/html" in kinds
    frames = [o.data.get("text/html", "") for o in outputs if "data" in o]
    assert sum("<iframe srcdoc=" in f for f in frames) == 2  # the map, then the clusters' map
    # what the output answers, through the API
    assert "field-years compared" in text and "k-means of" in text
    probe = re.search(r"accuracy ([\d.]+) \(balanced [\d.]+\), majority baseline ([\d.]+)", text)
    assert probe and float(probe.group(1)) > float(probe.group(2)), text
    assert (tmp_path / "notebook-clusters" / "_SUCCESS").exists()

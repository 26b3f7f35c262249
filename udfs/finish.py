"""Partial sums of a field-year (one per chunk it touches) -> its statistics.

The aggregate SQL (sql/40_aggregate.sql) groups each field-year's partials from
udfs/partials.py into lists; this module merges the lists and finishes the asked statistics
(udfs/statistics.py's records), a batch of field-years at a time with numpy (vectorised, where
Spark's array lambdas go element by element). A field inside one chunk is finished the same way
by the reduce stage (udfs/tasks.py), from its one partial.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from aef_zonal.udfs import schemas, statistics
from aef_zonal.udfs.quantisation import Quantisation
from aef_zonal.udfs.schemas import rows_as_lists


@dataclass(frozen=True)
class Finish:
    """What every field-year of a run gets: the store's dequantisation and the asked statistics
    (by name: the records are looked up where they run)."""

    quant: Quantisation
    bands: int
    stats: tuple[str, ...] = ()  # besides those always written
    weighted: bool = False  # coverage-weighted sums (doubles), not integers

    @property
    def records(self) -> tuple[statistics.Statistic, ...]:
        return statistics.parse(self.stats)

    @property
    def extremes(self) -> bool:
        return statistics.EXTREMES in statistics.needs(self.records)

    @property
    def histograms(self) -> bool:
        return statistics.HISTOGRAMS in statistics.needs(self.records)

    def schema(self) -> pa.Schema:
        return schemas.statistics(statistics.finished(self.records), self.weighted)


def merge(lists: pa.ListArray, bands: int, op: np.ufunc) -> np.ndarray:
    """[rows, bands]: each row's partial arrays (list<list<number>>) combined with op."""
    offsets = lists.offsets.to_numpy()
    values = lists.flatten().flatten().to_numpy().reshape(-1, bands)
    return op.reduceat(values, offsets[:-1] - offsets[0], axis=0)


def merged(batch: pa.RecordBatch, f: Finish) -> statistics.Merged:
    """A batch of grouped partials (sql/40_aggregate.sql's rows), merged exactly."""
    col, records = batch.column, f.records
    partials = {}
    if f.extremes:
        partials["umin"] = merge(col("lmin"), f.bands, np.minimum)
        partials["umax"] = merge(col("lmax"), f.bands, np.maximum)
    if f.histograms:
        partials["hkeys"], partials["hcounts"] = col("hkeys"), col("hcounts")
    return statistics.Merged(
        f.quant,
        f.weighted,
        col("count").to_numpy(zero_copy_only=False),
        col("inside").to_numpy(zero_copy_only=False),
        merge(col("l1"), f.bands, np.add),
        merge(col("l2"), f.bands, np.add),
        levels=[s.level for s in records if s.level is not None],
        **partials,
    )


def finish_batch(batch: pa.RecordBatch, f: Finish) -> pa.RecordBatch:
    col = batch.column
    return finished(merged(batch, f), f, col("feature_id"), col("year"), col("skipped_chunks"))


def finished(
    m: statistics.Merged, f: Finish, feature_id, year, skipped_chunks: pa.Array
) -> pa.RecordBatch:
    """The statistics of merged field-years (f.schema()): those asked, finished by their
    records."""
    ok = m.n > 0
    values = []
    for s in statistics.finished(f.records):
        v = s.finish(m)
        values.append(rows_as_lists(v, ok) if s.per_band else pa.array(v))
    num = pa.float64() if f.weighted else pa.int64()
    return pa.RecordBatch.from_arrays(
        [
            pa.array(feature_id, pa.int64()),
            pa.array(year, pa.int32()),
            pa.array(m.n, num),
            pa.array(m.inside, num),
            *values,
            skipped_chunks,
        ],
        schema=f.schema(),
    )


def finish_batches(batches: Iterable[pa.RecordBatch], f: Finish) -> Iterator[pa.RecordBatch]:
    """mapInArrow body over the aggregate SQL's output: one row per field-year."""
    for batch in batches:
        if batch.num_rows:
            yield finish_batch(batch, f)

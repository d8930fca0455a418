"""Bulk loads: many batches of rows into a partitioned table as few, large, compact files and
ONE commit (a synthetic population of 100,000 patients, 8 billion step samples).

delta-rs' writer encodes about 2.5 M samples per second of CPU here; pyarrow's about twice
that, and it writes the partitions of a batch in parallel threads. So the files are written by
pyarrow, with the settings of every other write of the table (ZSTD, delta-encoded time columns,
dictionaries for the rest), and committed through delta-rs with their statistics read back from
their footers (:meth:`lakehouse.storage.Lake.commit_files`).

Each partition has one open file; every batch adds its rows of that partition to it as row
groups, in the order given (the generator hands each batch sorted by patient and time, its few
corrupt-but-valid twins as a row group of their own), and a file is closed once it holds
:data:`FILE_ROWS` rows. A file count therefore grows with the rows, never with the
batches. Nothing is visible before :meth:`BulkAppend.commit`; a load that fails or is abandoned
removes the files it wrote.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake.transaction import AddAction

from lakehouse.catalog import TableSpec
from lakehouse.storage import Lake

# Rows of one data file: at about 8.6 bytes a step sample, about 130 MB.
FILE_ROWS = 16_000_000
# Rows of a row group, at most (a batch's rows of one partition make one or more).
ROW_GROUP_ROWS = 1_048_576
_TIME_TYPES = (pa.timestamp("us", tz="UTC"), pa.date32())


def parquet_options(table: TableSpec) -> dict[str, Any]:
    """pyarrow's Parquet settings matching the table's other writes (lakehouse.storage), but
    ZSTD level 2: measured on 3 M step samples, 143 ns a sample to write for 8.03 bytes, against
    164 ns for 7.92 bytes at level 3 (a bulk load of 100,000 patients is CPU-bound)."""
    times = [
        f.name for f in table.schema if f.type in _TIME_TYPES and f.name not in table.partition_by
    ]
    return {
        "compression": "zstd",
        "compression_level": 2,
        "use_dictionary": [
            f.name for f in table.schema if f.name not in times and f.name not in table.partition_by
        ],
        "column_encoding": dict.fromkeys(times, "DELTA_BINARY_PACKED"),
        "write_statistics": True,
    }


def _stat(value: object) -> object:
    """A Parquet statistic as Delta's JSON statistics write it."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _usable(value: object) -> bool:
    """Whether a statistic can bound a column (JSON has no NaN or infinity)."""
    return not (isinstance(value, float) and not math.isfinite(value))


def file_statistics(metadata: pq.FileMetaData) -> str:
    """Delta's ``stats`` of a data file (rows, per column min, max and nulls) from its footer."""
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    unbounded: set[str] = set()  # a row group with values but no usable min/max
    unknown_nulls: set[str] = set()
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            name, stats = column.path_in_schema, column.statistics
            if stats is None:
                unbounded.add(name)
                unknown_nulls.add(name)
                continue
            nulls[name] = nulls.get(name, 0) + int(stats.null_count)
            if stats.null_count == row_group.num_rows:
                continue  # only nulls: nothing to bound
            if not (stats.has_min_max and _usable(stats.min) and _usable(stats.max)):
                unbounded.add(name)
                continue
            low[name] = stats.min if name not in low else min(low[name], stats.min)
            high[name] = stats.max if name not in high else max(high[name], stats.max)
    return json.dumps(
        {
            "numRecords": metadata.num_rows,
            "minValues": {k: _stat(v) for k, v in low.items() if k not in unbounded},
            "maxValues": {k: _stat(v) for k, v in high.items() if k not in unbounded},
            "nullCount": {k: v for k, v in nulls.items() if k not in unknown_nulls},
        }
    )


@dataclass
class _OpenFile:
    path: str  # relative to the table
    writer: pq.ParquetWriter
    partition: dict[str, str]
    rows: int = 0
    full: bool = False  # closed once its queued rows are written


@dataclass
class BulkAppend:
    """One bulk append to ``table``: :meth:`add` batches, then :meth:`commit` (or use it as a
    context manager: committed on success, the written files removed on error).

    Args:
        lake: the lake.
        table: a partitioned table (bronze/step_samples).
        metadata: custom commit metadata.
        threads: partitions written at the same time.
    """

    lake: Lake
    table: TableSpec
    metadata: dict[str, str] = field(default_factory=dict)
    threads: int = 2
    rows: int = 0
    _open: dict[tuple[str, ...], _OpenFile] = field(default_factory=dict)
    _done: list[AddAction] = field(default_factory=list)
    _written: list[str] = field(default_factory=list)
    _pending: list[Future[None]] = field(default_factory=list)
    _full: list[_OpenFile] = field(default_factory=list)
    _committed: bool = False

    def __post_init__(self) -> None:
        if not self.table.partition_by:
            raise ValueError(f"{self.table.path} is not partitioned: use Lake.append")
        self._filesystem, root = self.lake.filesystem()
        self._folder = f"{root.rstrip('/')}/{self.table.path}"
        self._schema = pa.schema(
            f for f in self.table.schema if f.name not in self.table.partition_by
        )
        # strings handed over as Polars holds them (views, no copy); the files carry no Arrow
        # schema, so readers see Parquet's plain strings
        self._file_schema = pa.schema(
            f.with_type(pa.string_view()) if f.type == pa.string() else f for f in self._schema
        )
        self._options = parquet_options(self.table)
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.threads))

    def __enter__(self) -> BulkAppend:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            if not self._committed:
                self.commit()
        elif not self._committed:  # failed before its commit: nothing of it is data
            self.abandon()

    def add(self, *batches: pl.DataFrame) -> None:
        """Queue rows (the table's columns, each batch sorted as the table is) for writing.

        Partitions are written in the background while the caller prepares the next batches;
        the ones before are waited for first, so at most two calls' rows are held in memory.
        """
        if self._committed:
            raise ValueError(f"{self.table.path}: this bulk load was committed already")
        for rows in batches:
            missing = [c for c in self.table.columns if c not in rows.columns]
            if missing:
                raise ValueError(f"{self.table.path}: rows lack columns {missing}")
        self._wait()
        # each file's tables of this call, written in order by one thread (a writer is not
        # thread-safe), then closed if it is full
        work: dict[str, tuple[_OpenFile, list[pa.Table]]] = {}
        for rows in batches:
            for values, part in self._partitions(rows):
                arrow = (
                    part.select(self._schema.names)
                    .to_arrow(compat_level=pl.CompatLevel.newest())
                    .cast(self._file_schema)
                )
                target = self._file_for(values, arrow.num_rows)
                work.setdefault(target.path, (target, []))[1].append(arrow)
            self.rows += rows.height
        for target, tables in work.values():
            self._pending.append(self._pool.submit(self._write, target, tables))
        for target in self._full:
            if target.path not in work:
                self._pending.append(self._pool.submit(self._write, target, []))
        self._full.clear()

    def _partitions(self, rows: pl.DataFrame) -> list[tuple[tuple[str, ...], pl.DataFrame]]:
        """The rows of each partition: slices (no copy) when the batch holds each partition's
        rows together (as the generator hands them), else a split."""
        keys = list(self.table.partition_by)
        if not rows.height:
            return []
        run = rows.select(pl.struct(keys).rle_id()).to_series().to_numpy()
        starts = np.flatnonzero(np.diff(run, prepend=-1)).tolist()
        firsts = rows.select(keys)[starts]
        if firsts.n_unique() == len(starts):
            bounds = [*starts, rows.height]
            return [
                (tuple(str(v) for v in firsts.row(i)), rows.slice(start, bounds[i + 1] - start))
                for i, start in enumerate(starts)
            ]
        return [
            (tuple(str(v) for v in values), part)
            for values, part in rows.partition_by(keys, as_dict=True, maintain_order=True).items()
        ]

    def _file_for(self, values: tuple[str, ...], rows: int) -> _OpenFile:
        """The partition's open file, a new one when it is full (closed in the background)."""
        current = self._open.get(values)
        if current is not None and current.rows + rows > FILE_ROWS and current.rows:
            current.full = True
            self._full.append(current)
            current = None
        if current is None:
            partition = dict(zip(self.table.partition_by, values, strict=True))
            # the log holds the path URI-encoded, the storage the plain name
            folder = "/".join(f"{k}={quote(v, safe='')}" for k, v in partition.items())
            path = f"{folder}/part-{uuid.uuid4().hex}.zstd.parquet"
            self._filesystem.create_dir(f"{self._folder}/{unquote(folder)}", recursive=True)
            self._written.append(path)
            writer = pq.ParquetWriter(
                f"{self._folder}/{unquote(path)}",
                self._file_schema,
                filesystem=self._filesystem,
                store_schema=False,
                **self._options,
            )
            current = self._open[values] = _OpenFile(path, writer, partition)
        current.rows += rows
        return current

    def _write(self, target: _OpenFile, tables: list[pa.Table]) -> None:
        for arrow in tables:
            target.writer.write_table(arrow, row_group_size=ROW_GROUP_ROWS)
        if target.full:
            self._close(target)

    def _close(self, target: _OpenFile) -> None:
        target.writer.close()
        full = f"{self._folder}/{unquote(target.path)}"
        metadata = pq.read_metadata(full, filesystem=self._filesystem)
        size = self._filesystem.get_file_info(full).size
        self._done.append(
            AddAction(
                target.path,
                int(size),
                target.partition,
                int(time.time() * 1000),
                True,
                file_statistics(metadata),
            )
        )

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def commit(self) -> int:
        """Close every file and add them all to the table in one commit; the rows added.

        If the commit itself fails the files stay (unreferenced, removed by the next vacuum):
        after an unclear storage failure the commit may have landed, and then they are data.
        A load is committed once; adding to it afterwards is refused.
        """
        if self._committed:
            raise ValueError(f"{self.table.path}: this bulk load was committed already")
        try:
            self._wait()
            for target in self._open.values():
                self._pending.append(self._pool.submit(self._close, target))
            self._open.clear()
            self._wait()
        except BaseException:
            self.abandon()
            raise
        self._pool.shutdown()
        self._committed = True
        if self._done:
            self.lake.commit_files(self.table, self._done, metadata=self.metadata)
        self._done.clear()
        return self.rows

    def abandon(self) -> None:
        """Stop and remove every file written (none of them was committed)."""
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        for target in [*self._open.values(), *self._full]:
            with contextlib.suppress(Exception):
                target.writer.close()
        for path in self._written:
            with contextlib.suppress(Exception):
                self._filesystem.delete_file(f"{self._folder}/{unquote(path)}")
        self._open.clear()
        self._full.clear()
        self._written.clear()
        self._done.clear()

"""How many samples the input holds, read from what is cheap: file lists, Parquet footers, tar headers."""

from __future__ import annotations

import logging
import os
import tarfile

import pyarrow.parquet as pq

from pipeline.io.shards import Shard

log = logging.getLogger(__name__)


def shard_samples(shard: Shard) -> int | None:
    """Samples in one unit: a folder chunk's files, a Parquet unit's rows (its footer), a local uncompressed
    tar's distinct keys (its headers, seeking past the data); None where only reading it all would tell
    (remote or compressed tars) or the file cannot be read (the extract run reports that itself)."""
    if shard.url is None:
        return len(shard.files)
    try:
        if shard.is_parquet:
            meta = pq.ParquetFile(shard.url).metadata
            first, stop = shard.row_groups
            return sum(meta.row_group(i).num_rows for i in range(first, stop))
        if "://" in shard.url or not shard.url.endswith(".tar") or not os.path.isfile(shard.url):
            return None
        keys = set()
        with tarfile.open(shard.url, "r:") as tar:
            for member in tar:
                if member.isfile():
                    name = member.name.rsplit("/", 1)
                    keys.add((name[0] if len(name) == 2 else "", name[-1].split(".", 1)[0]))
        return len(keys)
    except (OSError, tarfile.TarError, ValueError) as exc:
        log.debug("could not count the samples of %s: %s", shard.url, exc)
        return None


def count_samples(shards: list[Shard], enough: int | None = None) -> int | None:
    """Samples in all these units, or None when one of them cannot be counted cheaply; with `enough`, the count
    stops at the first unit that brings it there (what is asked is only whether there are that many)."""
    total = 0
    for shard in shards:
        n = shard_samples(shard)
        if n is None:
            return None
        total += n
        if enough is not None and total >= enough:
            break
    return total

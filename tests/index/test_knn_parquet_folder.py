"""`OUT/knn` is a Parquet folder other tools read as one table: no non-Parquet file among its parts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.index.build import IndexConfig, build_index
from pipeline.index.knn import KnnConfig, run_knn
from tests.conftest import clustered_vectors, write_feature_root


def test_pandas_reads_the_knn_folder_as_one_table(tmp_path):
    write_feature_root(tmp_path, clustered_vectors(40, 8, 3).astype(np.float32))
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    run_knn(KnnConfig(features=str(tmp_path), k=4, progress=False))
    knn = tmp_path / "knn"
    assert not [p.name for p in knn.iterdir() if p.is_file() and not p.name.endswith(".parquet")
                and not p.name.startswith(("_", "."))]
    table = pd.read_parquet(knn)
    assert len(table) == 40

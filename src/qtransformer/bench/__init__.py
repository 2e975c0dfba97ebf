"""The benchmark: studies declared as data, a resumable runner, tables and plots.

- :mod:`.studies`: the profiles (sizes) and the studies (which cells, which tables), once;
- :mod:`.runner`: datasets, one cell's training and evaluation, the resumable process-pool
  runner, and the summary (records -> ``benchmarks/results/cells/<study>.jsonl`` -> files);
- :mod:`.runner_pixels`: the same for the pixel study;
- :mod:`.tables` and :mod:`.plots`: records -> markdown, CSV and figures.

``qtransformer bench --study NAME`` runs one study (:func:`main`).
"""

from qtransformer.bench.runner import (
    BenchArgs,
    dataset_path,
    ensure_dataset,
    finished,
    main,
    read_records,
    run_cell,
    run_study,
    summarize,
)
from qtransformer.bench.studies import (
    ABLATIONS,
    ALGOS,
    EXPLORATION,
    PROFILES,
    QT_CPU,
    STUDIES,
    Cell,
    OGBenchStudy,
    PixelStudy,
    Profile,
    Study,
)

__all__ = [
    "ABLATIONS",
    "ALGOS",
    "EXPLORATION",
    "PROFILES",
    "QT_CPU",
    "STUDIES",
    "BenchArgs",
    "Cell",
    "OGBenchStudy",
    "PixelStudy",
    "Profile",
    "Study",
    "dataset_path",
    "ensure_dataset",
    "finished",
    "main",
    "read_records",
    "run_cell",
    "run_study",
    "summarize",
]

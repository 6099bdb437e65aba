"""The benchmark suite, installed as ``ecg_jepa.benchmarks``: one module per op or job
(``bench_cropa``, ``bench_patch_embed``, ``bench_block``, ``bench_train_step``, ``bench_data``), shared
timing and provenance (:mod:`.timing`), the result table and its writers (:mod:`.report`), and
:mod:`.suite`, which ``ecg-jepa bench`` runs. ``pytest benchmarks/ --benchmark-only`` gives the
pytest-benchmark view of the same cases."""

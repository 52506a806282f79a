"""Measurements of the product, each a script run as ``.venv/bin/python benchmarks/<script>.py``.

- top level: the maintained tools whose figures docs/BENCHMARKS.md holds (quality, robustness, serving,
  stages, training_speed, data_loading, compare_checkouts) and their helpers (photos, timing,
  mediapipe_worker);
- ``tuning/``: sweeps that set a constant of the served path; rerun them when the model changes;
- ``studies/``: one-off studies, each of which set one constant (README.md there says which).

Scoring (metrics, pairs, the shared data options) comes from ``evaluation``.
"""

"""The flexus-ops benchmark harness: ``python -m benchmarks [--quick] [--only NAME] [--output DIR]``.

Every figure is a ratio against a baseline measured in the same run on the same machine, because the
machines this runs on are shared and noisy: each case reports medians with their spread (min/max)
and keeps every raw sample in ``results/latest.json``. Benchmarks are not tests: nothing here asserts
a timing; ``tests/test_benchmarks_smoke.py`` only proves the harness runs.

Importing this package is light on purpose (the cases import what they need when they run), so the
smoke test and ``--only`` stay cheap.
"""

"""Result bundles: a finished tiny run's small files, copied out, give the same report."""
from __future__ import annotations

import csv

import numpy as np

from ser.bundle import bundle_files, write_bundle
from ser.report import write_report
from ser.train import run
from tests.conftest import compose
from tests.synthetic import tiny_overrides, write_pairs


def test_a_bundle_reports_like_the_runs_it_came_from(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=160)
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        run(compose(tiny_overrides(data, "loop.max_loops=2", f"seed={seed}", "compare_full=true"),
                    output_dir=sweep / f"seed={seed}"))
    (sweep / "unfinished" / "ser").mkdir(parents=True)  # a run that never finished is not bundled
    bundled = write_bundle(sweep, tmp_path / "bundle")
    assert sorted(p.name for p in bundled) == ["seed=0", "seed=1"]
    files = {str(f) for f in bundle_files(tmp_path / "bundle" / "seed=0")}
    assert {"results.json", "ser/loops.jsonl", "ser/eval_scores_loop0.npz", "ser/pool_scores_loop0.npz",
            "full/eval_scores_loop0.npz"} <= files
    assert not any(f.endswith((".ckpt", ".safetensors", ".pt")) for f in files)
    assert not (tmp_path / "bundle" / "seed=0" / "ser" / "reward_model").exists()
    size = sum(p.stat().st_size for p in (tmp_path / "bundle").rglob("*") if p.is_file())
    assert size < 1_000_000, size  # kilobytes, not weights

    (sweep / "unfinished" / "ser").rmdir()
    (sweep / "unfinished").rmdir()
    a = write_report(sweep, tmp_path / "report_runs")
    b = write_report(tmp_path / "bundle", tmp_path / "report_bundle")
    rows = lambda d: [{k: v for k, v in r.items() if k != "path"} for r in csv.DictReader(open(d / "runs.csv"))]  # noqa: E731
    assert rows(a) == rows(b)
    ta = (a / "report.md").read_text().splitlines()[1:]  # the first line names the folder
    tb = (b / "report.md").read_text().splitlines()[1:]
    assert ta == tb
    with np.load(tmp_path / "bundle" / "seed=0" / "ser" / "eval_scores_loop0.npz") as z:
        assert "test_key" in z.files and "test_chosen_tokens" in z.files

"""The install-time warm-up leaves every kernel an era needs in numba's cache (issue 9, item 4):
a fresh process computing a sample era with the warmed cache compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_ERA = """
import json
import numba.core.registry
from tsfresh.feature_extraction import ComprehensiveFCParameters, EfficientFCParameters, MinimalFCParameters
from stages.feature_engine import engine, entropy, fused, linear, peaks, simple, spectral, adf
from stages.feature_engine import extract_features_fast
from stages.sample_data import generate_sample

frame = generate_sample(days=1, freq="60s", seed=5, compartments=("gh_t",))
series = {c: frame[c].to_numpy(float) for c in frame.columns if c not in ("timestamp", "compartment_id")}
for params in (MinimalFCParameters(), EfficientFCParameters()):
    extract_features_fast(series, params)
extract_features_fast({k: v[:400] for k, v in series.items()}, ComprehensiveFCParameters())
misses, hits = {}, 0
for module in (engine, entropy, fused, linear, peaks, simple, spectral, adf):
    for name, obj in vars(module).items():
        if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.__module__ == module.__name__:
            hits += sum(obj.stats.cache_hits.values())
            if obj.stats.cache_misses:
                misses[f"{module.__name__}.{name}"] = sum(obj.stats.cache_misses.values())
print(json.dumps({"misses": misses, "hits": hits}))
"""


def _python(code: str, cache_dir: Path) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_after_the_warm_up_a_fresh_process_compiles_nothing(tmp_path):
    cold = json.loads(_python(_ERA, tmp_path / "cold").strip().splitlines()[-1])
    assert cold["misses"], "an empty cache must miss (else this test could not fail)"
    _python("from stages.feature_engine.warm import main; main()", tmp_path / "warm")
    warm = json.loads(_python(_ERA, tmp_path / "warm").strip().splitlines()[-1])
    assert warm["misses"] == {}, f"compiled after the warm-up: {warm['misses']}"
    assert warm["hits"] > 0

"""The API process imports no training-only library (the `train` and `dask` extras), nor xgboost
at start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: Training-only modules (extra `train`, and what xgboost drags in when they are installed).
TRAINING_ONLY = (
    "sklearn",
    "skl2onnx",
    "onnxmltools",
    "matplotlib",
    "lifetimes",
    "pandas",
    "xgboost",
    "app.training.train",
    "app.training.challengers",
    "app.training.report",
    "app.training.report_figures",
    "app.training.assemble",
    "app.training.refit",
    "app.training.backtest",
    # Extra `dask` (issue 13): offline work on a cluster only.
    "dask",
    "distributed",
    "app.distributed",
)
ROOT = Path(__file__).resolve().parents[2]


def test_import_app_main_pulls_no_training_library() -> None:
    probe = (
        "import json, sys, app.main, sklearn, matplotlib, skl2onnx, dask.distributed; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    # The probe first proves the extra is installed here (else the test would prove nothing)...
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, cwd=ROOT)
    # ...then imports the app alone and lists what it loaded.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, app.main; print(json.dumps(sorted(sys.modules)))",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    loaded = set(json.loads(out.stdout))
    leaked = sorted(m for m in TRAINING_ONLY if m in loaded)
    assert not leaked, f"import app.main loaded training-only modules: {leaked}"

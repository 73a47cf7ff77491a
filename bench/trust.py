"""Models a store can trust (issue 10), through the real commands, in one run:

1. CDNOW ageing: `clv train --as-of 1997-12-31 --clv-horizon-days 181 --churn-horizon-days 181`
   (default options otherwise), `clv score --as-of 1997-12-31`, against what customers really
   spent from 1998-01-01 to 1998-06-30 (from the raw file), beside BG/NBD + Gamma-Gamma fitted
   on the raw file up to 1997-12-31.
2. Online Retail: `clv train --as-of 2011-06-09 --clv-horizon-days 91 --churn-horizon-days 91`
   with default options must succeed (BG/NBD fails to converge there and is reported).
3. The default model: `python -m app.training.shipped --out TMP` again; its ONNX bytes must equal
   the shipped models/ ones.

    .venv/bin/python -m bench.trust
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from app.artifacts import current_directory
from app.config import ROOT_DIR
from app.training.metrics import churn_metrics, clv_metrics
from bench.cdnow_accuracy import bg_nbd_baseline, load_file
from bench.common import fresh_database, header, run_clv, write_section

ONLINE_RETAIL = ROOT_DIR.parent / "shared" / "data" / "online-retail" / "transactions.csv"
CDNOW_FILE = ROOT_DIR.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
AS_OF = pd.Timestamp("1997-12-31")
END = pd.Timestamp("1998-06-30")
HORIZON = 181
#: The same procedure run in-process at the start of this work (commit da525d5, same machine).
BEFORE = "| clv-service before issue 10 (da525d5) | 0.7617 | 0.4566 | 0.8046 | – | 1.215 |"


def bg_nbd(frame: pd.DataFrame, customers: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """BG/NBD + GG (no penalizer) on the raw file up to AS_OF; (CLV, churn score) over HORIZON."""
    clv, churn_score, _ = bg_nbd_baseline(frame, customers, end=AS_OF, horizon=HORIZON)
    return clv, churn_score


def row(name: str, m: dict[str, float]) -> str:
    brier = f"{m['brier']:.4f}" if "brier" in m else "–"
    return (
        f"| {name} | {m['gini']:.4f} | {m['spearman']:.4f} | {m['auc']:.4f} | {brier} | "
        f"{m['bias']:.3f} |"
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="clv-trust-"))
    frame = load_file()
    with fresh_database("clv_trust_cdnow") as url:
        env = {"CLV_DATABASE_URL": url, "CLV_MODEL_DIR": str(work / "cdnow")}
        run_clv(env, "import-transactions", "--format", "cdnow", str(CDNOW_FILE))
        trained, train_s = run_clv(
            env,
            "train",
            "--as-of",
            "1997-12-31",
            "--clv-horizon-days",
            str(HORIZON),
            "--churn-horizon-days",
            str(HORIZON),
        )
        out = work / "scores.parquet"
        run_clv(env, "score", "--as-of", "1997-12-31", "--out", str(out))
    scores = pd.read_parquet(out).set_index("customer_id")
    customers = pd.Index(sorted(frame["customer_id"].unique()))
    window = frame[(frame["date"] > AS_OF) & (frame["date"] <= END)]
    actual = (
        window.groupby("customer_id")["dollar_value"]
        .sum()
        .reindex(customers, fill_value=0.0)
        .to_numpy()
    )
    churned = (window.groupby("customer_id").size().reindex(customers, fill_value=0) == 0).to_numpy(
        dtype=float
    )
    predicted = scores.loc[customers]
    model = {
        **clv_metrics(actual, predicted["clv"].to_numpy()),
        **churn_metrics(
            churned,
            predicted["churn_probability"].to_numpy(),
            predicted["churn_probability"].to_numpy(),
        ),
    }
    base_clv, base_churn = bg_nbd(frame, customers)
    base = {**clv_metrics(actual, base_clv), **churn_metrics(churned, base_churn, None)}

    with fresh_database("clv_trust_retail") as url:
        env = {
            "CLV_DATABASE_URL": url,
            "CLV_MODEL_DIR": str(work / "retail"),
            "CLV_CURRENCY": "GBP",
        }
        run_clv(env, "import-transactions", "--format", "csv", str(ONLINE_RETAIL))
        retail, retail_s = run_clv(
            env,
            "train",
            "--as-of",
            "2011-06-09",
            "--clv-horizon-days",
            "91",
            "--churn-horizon-days",
            "91",
        )
    retail_dir = current_directory(work / "retail")
    assert retail_dir is not None
    retail_manifest = json.loads((retail_dir / "manifest.json").read_text())

    shipped = current_directory(ROOT_DIR / "models")
    assert shipped is not None
    _, default_s = run_clv({}, "--help")  # interpreter start, for scale
    rebuilt_out, rebuilt_s = _shipped_again(work / "default")
    rebuilt = current_directory(work / "default")
    assert rebuilt is not None
    same = all(sha(shipped / f) == sha(rebuilt / f) for f in ("clv.onnx", "churn.onnx"))
    default_manifest = json.loads((shipped / "manifest.json").read_text())
    dm = default_manifest["metrics"]

    lines = [
        header("python -m bench.trust"),
        "### CDNOW: a model scored six months after its training cutoff",
        "",
        f"`clv train --as-of 1997-12-31 --clv-horizon-days {HORIZON} --churn-horizon-days {HORIZON}` "
        "(default options otherwise), `clv score --as-of 1997-12-31` for all 23,570 customers, against "
        "their real spend 1998-01-01..1998-06-30 (raw file); BG/NBD + GG fitted on the raw file up to "
        "1997-12-31 in this run.",
        "",
        "| Model | Gini | Spearman | churn AUC | Brier | bias |",
        "|---|---:|---:|---:|---:|---:|",
        row("clv-service (this branch)", model),
        row("BG/NBD + Gamma-Gamma", base),
        BEFORE,
        "",
        f"Aggregate forecast {predicted['clv'].sum():,.0f} vs actual {actual.sum():,.0f} USD. "
        f"`clv train` took {train_s:.1f} s end to end (wall clock, busy machine). Its own table "
        "(holdout at the latest cutoff 1997-07-03; in time = final model, out of time = fold model):",
        "",
        "```",
        trained.strip(),
        "```",
        "",
        "### Online Retail: `clv train` with default options",
        "",
        "`CLV_CURRENCY=GBP clv train --as-of 2011-06-09 --clv-horizon-days 91 --churn-horizon-days 91`: "
        f"succeeded in {retail_s:.1f} s; BG/NBD baseline: "
        f"{retail_manifest['baseline_failures'].get('bg_nbd_gamma_gamma', 'evaluated')}.",
        "",
        "```",
        retail.strip(),
        "```",
        "",
        "### The shipped default model (demo shop)",
        "",
        f"`python -m app.training.shipped --out TMP` ({rebuilt_s:.1f} s): clv.onnx/churn.onnx "
        f"{'byte-identical to' if same else 'DIFFERENT from'} models/{shipped.name} "
        f"(sha256 {sha(shipped / 'clv.onnx')} / {sha(shipped / 'churn.onnx')}). Holdout at "
        f"{default_manifest['cutoffs']['clv'][0][:10]} (recomputed by tests/test_shipped_model.py):",
        "",
        "| Model | Gini | Spearman | churn AUC | Brier | bias |",
        "|---|---:|---:|---:|---:|---:|",
        *(row(name, values) for name, values in dm.items()),
        "",
        f"(`clv --help` alone takes {default_s:.1f} s here: interpreter start and imports. Load "
        f"average at the end of the run: {os.getloadavg()[0]:.1f} on 2 cores — timings are noisy.)",
    ]
    body = "\n".join(lines)
    print(body)
    print(rebuilt_out)
    write_section("trust", "## Models a store can trust (issue 10)\n\n" + body)
    shutil.rmtree(work, ignore_errors=True)


def _shipped_again(out: Path) -> tuple[str, float]:
    import subprocess
    import sys
    import time

    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "app.training.shipped", "--out", str(out)],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout, time.perf_counter() - started


if __name__ == "__main__":
    main()

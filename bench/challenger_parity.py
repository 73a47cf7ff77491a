"""Challenger ONNX parity on a real log at the backtest origins, without the full backtest.

At each origin of bench/backtest.py, the CLV and churn rows are built as `clv train` builds them
(same stacked cutoffs, split and holdout), the chosen challenger families are trained exactly as
`clv train --challengers` trains them (`challengers.train_family`: fold model, final refit, ONNX
export, parity on the holdout rows), and each family's parity and out-of-time Gini / AUC are
printed. The full `clv backtest --challengers` does the same and more (XGBoost, baselines); this
is the cheap check when the machine is too busy for it.

    .venv/bin/python -m bench.challenger_parity --only cdnow [--families linear mlp]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.config import Settings
from app.db import create_sync_engine
from app.features.definitions import end_of_day
from app.training import challengers, evaluate
from app.training.dataset import Panel, churn_label, clv_label, split_rows, training_cutoffs
from app.training.options import TrainOptions
from app.training.repository import data_fingerprint
from bench.backtest import DATA_SETS, OUT
from bench.common import fresh_database, run_clv


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=[d.key for d in DATA_SETS], required=True)
    parser.add_argument("--families", nargs="+", default=list(challengers.FAMILIES))
    args = parser.parse_args()
    [data] = [d for d in DATA_SETS if d.key == args.only]
    results: list[dict[str, Any]] = []
    with fresh_database("clv_bench_parity") as url:
        env = {"CLV_DATABASE_URL": url, "CLV_CURRENCY": data.currency}
        run_clv(env, "import-transactions", "--format", data.format, str(data.path))
        engine = create_sync_engine(Settings(database_url=url))
        first = data_fingerprint(engine)["min_occurred_at"]
        last = end_of_day(dt.date.fromisoformat(data.last_origin))
        for k in reversed(range(data.origins)):
            origin = last - dt.timedelta(days=k * data.step_days)
            options = TrainOptions(
                as_of=origin,
                model_dir=OUT,
                clv_horizon_days=data.horizon_days,
                churn_horizon_days=data.horizon_days,
            )
            cutoffs = training_cutoffs(
                origin,
                data.horizon_days,
                options.stack,
                options.stack_step_days,
                dt.datetime.fromisoformat(first) if first else None,
            )
            panel = Panel(engine, False)
            splits = {
                target: split_rows(
                    panel.rows(cutoffs, data.horizon_days, label),
                    cutoffs,
                    data.horizon_days,
                    options.holdout_fraction,
                    options.split,
                    options.validation_fraction,
                    options.seed,
                )
                for target, label in (("clv", clv_label), ("churn", churn_label))
            }
            for family in args.families:
                with tempfile.TemporaryDirectory() as tmp:
                    trained = challengers.train_family(
                        family, splits["clv"], splits["churn"], options.seed, Path(tmp)
                    )
                scores = evaluate.score(
                    splits["clv"].holdout.label,
                    splits["churn"].holdout.label,
                    trained.fold_holdout["clv"],
                    trained.fold_holdout["churn"],
                )
                row = {
                    "origin": origin.date().isoformat(),
                    "family": family,
                    "parity": trained.parity,
                    "gini_out_of_time": scores.get("gini"),
                    "auc_out_of_time": scores.get("auc"),
                    "bias_out_of_time": scores.get("bias"),
                }
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        engine.dispose()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"challenger-parity-{data.key}.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""`clv train --dask`: rows built on the workers, boosters fitted with `xgboost.dask`.

Everything after the fit is the single-node code, unchanged: the same out-of-time fold, CLV
scale, churn calibration and intervals (from the validation rows, gathered), the same ONNX
export and parity gate, manifest, report and atomic promotion (`app.training.train`). What
differs is where the rows live (`DaskPanel`: one partition per customer-id range, on the worker
that built it) and who boosts (`xgboost.dask.train` over those partitions). The manifest's
`training.engine` says which engine trained and on how many workers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import xgboost as xgb
from sqlalchemy import Engine

from app.distributed import tasks
from app.distributed.cluster import Cluster
from app.distributed.rows import DaskPanel, DaskSplit, RemoteRows
from app.features.definitions import FEATURE_NAMES
from app.training.dataset import Rows
from app.training.export import native_predict
from app.training.fit import EARLY_STOPPING_ROUNDS, MAX_ROUNDS, MIN_ROUNDS, params, trim

TARGETS = ("clv", "churn", "orders", "propensity")


def plan(
    cutoffs: dict[str, list[dt.datetime]],
    horizons: dict[str, int],
    propensity_days: int,
    as_of: dt.datetime,
) -> tasks.Plan:
    """What each partition builds: the single-node targets, cutoffs and label windows, and the
    features at `as_of` ("now", never fitted): the customers the CLV interval's expected share
    of non-buyers is estimated on and the manifest's served percentiles are computed from, read
    once on the workers as single-node training reads Panel.at(as_of) once."""
    return {
        "clv": (cutoffs["clv"], horizons["clv"], "clv"),
        "churn": (cutoffs["churn"], horizons["churn"], "churn"),
        "orders": (cutoffs["clv"], horizons["clv"], "orders"),
        "propensity": (cutoffs["churn"], propensity_days, "propensity"),
        "now": ([as_of], 1, "clv"),
    }


def boost(
    client: Any,
    parameters: dict[str, Any],
    train: RemoteRows,
    rounds: int,
    validation: RemoteRows | None = None,
) -> xgb.Booster:
    """`xgboost.dask.train` on the partitions; early stopping on `validation` when given."""
    from xgboost import dask as dxgb

    output = dxgb.train(
        client,
        parameters,
        train.dask_matrix(),
        num_boost_round=rounds,
        evals=[(validation.dask_matrix(), "validation")] if validation is not None else None,
        early_stopping_rounds=EARLY_STOPPING_ROUNDS if validation is not None else None,
        verbose_eval=False,
    )
    booster: xgb.Booster = output["booster"]
    return booster


def fit_target(
    cluster: Cluster, target: str, split: DaskSplit, seed: int, threads: int
) -> tuple[xgb.Booster, int, xgb.Booster, np.ndarray, np.ndarray]:
    """(fold model, rounds, final model, fold predictions on validation and on holdout)."""
    parameters = params(target, seed, threads)
    fold_rows = split.split.fold
    assert isinstance(fold_rows, RemoteRows)
    fold = boost(cluster.client, parameters, fold_rows, MAX_ROUNDS, split.remote_validation)
    rounds = max(fold.best_iteration + 1, MIN_ROUNDS)
    fold = trim(fold, rounds)
    train_rows = split.split.train
    assert isinstance(train_rows, RemoteRows)
    final = trim(boost(cluster.client, parameters, train_rows, rounds), rounds)
    validation: Rows = split.split.validation
    holdout: Rows = split.split.holdout
    return (
        fold,
        rounds,
        final,
        native_predict(fold, validation.features.reshape(-1, len(FEATURE_NAMES))),
        native_predict(fold, holdout.features.reshape(-1, len(FEATURE_NAMES))),
    )


def train_on_dask(
    engine: Engine,
    options: Any,
    cluster: Cluster,
    database_url: str,
    chunk_customers: int | None = None,
) -> Any:
    """`app.training.train.train` with the rows on the workers and `xgboost.dask` boosting.

    The steps and their order are the single-node ones; the artifact is written by the same
    code. Challengers (scikit-learn on in-memory rows) are single-node only.
    """
    import dataclasses
    import sys
    import time

    from app.training.dataset import training_cutoffs
    from app.training.eligibility import check_eligibility
    from app.training.options import TrainingFailed
    from app.training.refit import Fitted
    from app.training.repository import data_fingerprint
    from app.training.train import finish_training, require_rows

    if options.challengers:
        raise TrainingFailed("--challengers is single-node only: drop it or --dask")
    options = dataclasses.replace(options, threads=cluster.threads_per_worker)
    started = time.perf_counter()
    say = (lambda m: sys.stderr.write(m + "\n")) if options.progress else (lambda _m: None)
    client = cluster.client
    content = sum(
        client.gather(
            [
                client.submit(tasks.range_content, database_url, lo, hi, pure=False)
                for lo, hi in DaskPanel.ranges_of(engine, chunk_customers)
            ]
        )
    )
    data = data_fingerprint(engine, f"{content % 2**256:064x}")
    first = dt.datetime.fromisoformat(data["min_occurred_at"]) if data["min_occurred_at"] else None
    horizons = {"clv": options.clv_horizon_days, "churn": options.churn_horizon_days}
    cutoffs = {
        target: training_cutoffs(options.as_of, days, options.stack, options.stack_step_days, first)
        for target, days in horizons.items()
    }
    panel = DaskPanel(
        cluster,
        engine,
        database_url,
        plan(cutoffs, horizons, options.propensity_days, options.as_of),
        chunk_customers,
    )
    rows = {target: panel.rows(target) for target in TARGETS}
    if not len(rows["clv"]) or not len(rows["churn"]):
        raise TrainingFailed(
            f"no customers with events before the cutoffs {cutoffs['clv'][0]:%Y-%m-%d} / "
            f"{cutoffs['churn'][0]:%Y-%m-%d}: load data first or pick a later --as-of"
        )
    eligibility = check_eligibility(panel, options, cutoffs, rows, data)  # type: ignore[arg-type]
    days = {**horizons, "orders": horizons["clv"], "propensity": options.propensity_days}
    splits: dict[str, DaskSplit] = {}
    for target in TARGETS:
        splits[target] = panel.split(
            target,
            days[target],
            options.holdout_fraction,
            options.split,
            options.validation_fraction,
            options.seed,
        )
        require_rows(target, splits[target].split)
    say(
        f"rows on {cluster.workers} Dask workers: CLV {len(rows['clv']):,} over "
        f"{len(cutoffs['clv'])} cutoffs, churn {len(rows['churn']):,}; out-of-time gap "
        f"{splits['clv'].split.gap_days} / {splits['churn'].split.gap_days} days"
    )
    fitted: dict[str, Any] = {}
    for target in TARGETS:
        say(f"boosting {target} on the cluster (xgboost.dask)")
        _, rounds, final, fold_validation, fold_holdout = fit_target(
            cluster, target, splits[target], options.seed, options.threads
        )
        fitted[target] = Fitted(
            split=splits[target].split,
            rounds=rounds,
            fold_validation=fold_validation,
            fold_holdout=fold_holdout,
            final=final,
        )
    return finish_training(
        options,
        panel,
        cutoffs,
        data,
        fitted,
        started,
        say,
        {"eligibility": eligibility, "engine": cluster.describe()},
    )

"""Scoring: feature vectors -> predictions -> segments, shared by the API and `clv score`."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence

import numpy as np

from app.config import Settings
from app.db import Reader
from app.errors import NotFound
from app.features.repository import FeatureMatrix, FeatureRepository
from app.observability import metrics
from app.scoring.evidence import NO_HISTORY_NOTICE, prediction_bases
from app.scoring.explain import Contribution, Explanation, churn_sentence, clv_sentence
from app.scoring.lifecycle import lifecycle_stages, value_tiers
from app.scoring.registry import LoadedModel
from app.scoring.schemas import (
    BatchPredictionItem,
    BatchPredictionOut,
    ChurnOut,
    ClvOut,
    ExpectedOrdersOut,
    ExplanationOut,
    ModelExplanation,
    OrderProbabilityOut,
    OutOfRangeOut,
    PredictionOut,
    Reason,
    SegmentOut,
)
from app.scoring.scores import Score

__all__ = ["PredictionService", "Score", "score_matrix"]

REASONS = 5


def score_matrix(matrix: FeatureMatrix, model: LoadedModel, settings: Settings) -> list[Score]:
    """Scores for every row of a feature matrix (one ONNX run per model for all rows)."""
    if not len(matrix):
        return []
    predictions = model.predictor.predict(matrix.values)
    manifest = model.manifest
    stages = lifecycle_stages(
        matrix.values,
        predictions.churn_probability,
        churn_horizon_days=manifest.churn_horizon_days,
        new_customer_days=settings.new_customer_days,
        at_risk_threshold=settings.at_risk_threshold,
    )
    tiers = value_tiers(predictions.clv, manifest.clv_quantiles, settings.tier_percentiles)
    at_risk = predictions.clv * predictions.churn_probability
    bases = prediction_bases(matrix.n_events, matrix.values)
    n = len(matrix)
    # Issue 11: rounded like the CLV (cents) and churn (6 digits); None for older models.
    p10, p50, p90 = (
        _rounded(predictions.clv_p10, 2, n),
        _rounded(predictions.clv_p50, 2, n),
        _rounded(predictions.clv_p90, 2, n),
    )
    orders = _rounded(predictions.expected_orders, 4, n)
    propensity = _rounded(predictions.order_probability, 6, n)
    return [
        Score(
            customer_id=customer_id,
            clv=round(float(clv), 2),
            churn_probability=round(float(p), 6),
            lifecycle_stage=stage,
            value_tier=tier,
            expected_value_at_risk=round(float(risk), 2),
            basis=basis,
            clv_p10=p10[i],
            clv_p50=p50[i],
            clv_p90=p90[i],
            expected_orders=orders[i],
            order_probability=propensity[i],
        )
        for i, (customer_id, clv, p, stage, tier, risk, basis) in enumerate(
            zip(
                matrix.customer_ids,
                predictions.clv,
                predictions.churn_probability,
                stages,
                tiers,
                at_risk,
                bases,
                strict=True,
            )
        )
    ]


def _rounded(values: np.ndarray | None, digits: int, n: int) -> list[float | None]:
    """Python floats rounded to `digits`, or n Nones when the model has no such output."""
    if values is None:
        return [None] * n
    return [round(float(v), digits) for v in values.tolist()]


def _model_explanation(
    explanation: Explanation, words: Callable[[Contribution, str], str], currency: str
) -> ModelExplanation:
    return ModelExplanation(
        base_value=explanation.base_value,
        raw_margin=explanation.raw_margin,
        reasons=[
            Reason(
                feature=c.feature,
                description=c.description,
                value=c.value,
                contribution=c.contribution,
                text=words(c, currency),
            )
            for c in explanation.top(REASONS)
        ],
        contributions={c.feature: c.contribution for c in explanation.contributions},
    )


def explanation_for(model: LoadedModel, features: np.ndarray, currency: str) -> ExplanationOut:
    """Both models' TreeSHAP explanations of one feature vector."""
    row = features.reshape(1, -1)
    [clv] = model.explain("clv", row)
    [churn] = model.explain("churn", row)
    return ExplanationOut(
        clv=_model_explanation(clv, clv_sentence, currency),
        churn=_model_explanation(churn, churn_sentence, currency),
        out_of_range=[
            OutOfRangeOut(
                feature=flag.feature,
                value=flag.value,
                training_min=flag.training_min,
                training_max=flag.training_max,
            )
            for flag in model.ranges.flags(features)
        ],
    )


def prediction_out(
    score: Score,
    as_of: dt.datetime,
    model: LoadedModel,
    settings: Settings,
    explanation: ExplanationOut | None = None,
) -> PredictionOut:
    """The API document for one score."""
    manifest = model.manifest
    # model_construct: every value here comes typed from the model and the manifest, so
    # validating it again would only cost time (a fifth of a 1,000-customer batch).
    return PredictionOut.model_construct(
        customer_id=score.customer_id,
        as_of=as_of,
        model_version=manifest.version,
        clv=ClvOut.model_construct(
            value=score.clv,
            currency=settings.currency,
            horizon_days=manifest.clv_horizon_days,
            p10=score.clv_p10,
            p50=score.clv_p50,
            p90=score.clv_p90,
        ),
        churn=ChurnOut.model_construct(
            probability=score.churn_probability, horizon_days=manifest.churn_horizon_days
        ),
        expected_orders=(
            ExpectedOrdersOut.model_construct(
                value=score.expected_orders, horizon_days=manifest.clv_horizon_days
            )
            if score.expected_orders is not None
            else None
        ),
        order_probability=(
            OrderProbabilityOut.model_construct(
                probability=score.order_probability, days=manifest.propensity_days
            )
            if score.order_probability is not None and manifest.propensity_days is not None
            else None
        ),
        segment=SegmentOut.model_construct(
            lifecycle_stage=score.lifecycle_stage, value_tier=score.value_tier
        ),
        expected_value_at_risk=score.expected_value_at_risk,
        basis=score.basis,
        notice=NO_HISTORY_NOTICE if score.basis == "no_history" else None,
        scored_at=dt.datetime.now(dt.UTC),
        explanation=explanation,
    )


class PredictionService:
    """Online predictions through the request's session and the worker's active model."""

    def __init__(self, session: Reader, settings: Settings, model: LoadedModel) -> None:
        self.settings = settings
        self.model = model
        self.features = FeatureRepository(session)

    async def one(
        self, customer_id: str, as_of: dt.datetime, with_explanation: bool = False
    ) -> PredictionOut:
        """One customer's prediction (one SQL round trip, one ONNX run per model), or NotFound."""
        if with_explanation:
            self.model.check_explainable()  # before any work: refused, not half answered
        started = time.perf_counter()
        try:
            matrix = await self.features.for_customers([customer_id], as_of)
        except BaseException:
            metrics.observe_steps("single", time.perf_counter() - started)
            raise
        fetched = time.perf_counter()
        if not len(matrix):
            metrics.observe_steps("single", fetched - started)
            raise NotFound(f"no customer with id {customer_id!r}")
        try:
            [score] = score_matrix(matrix, self.model, self.settings)
        finally:
            metrics.observe_steps("single", fetched - started, time.perf_counter() - fetched)
        metrics.observe_scores("single", [score.clv], [score.churn_probability])
        metrics.observe_out_of_range(self.model.ranges.counts(matrix.values))
        explanation = (
            explanation_for(self.model, matrix.values[0], self.settings.currency)
            if with_explanation
            else None
        )
        return prediction_out(score, as_of, self.model, self.settings, explanation)

    async def many(self, customer_ids: Sequence[str], as_of: dt.datetime) -> BatchPredictionOut:
        """Predictions for many customers: one set-based feature query, one ONNX run per model."""
        wanted = list(dict.fromkeys(customer_ids))
        with metrics.time_feature_fetch("batch"):
            matrix = await self.features.for_customers(wanted, as_of) if wanted else None
        with metrics.time_inference("batch"):
            # Off the event loop: ONNX releases the GIL, so other requests go on meanwhile.
            scored = (
                await asyncio.to_thread(score_matrix, matrix, self.model, self.settings)
                if matrix
                else []
            )
        metrics.observe_scores(
            "batch", [s.clv for s in scored], [s.churn_probability for s in scored]
        )
        if matrix:
            metrics.observe_out_of_range(self.model.ranges.counts(matrix.values))
        scores = {s.customer_id: s for s in scored}
        results = []
        for index, customer_id in enumerate(customer_ids):
            score = scores.get(customer_id)
            results.append(
                BatchPredictionItem.model_construct(
                    index=index,
                    customer_id=customer_id,
                    status="ok" if score else "not_found",
                    prediction=prediction_out(score, as_of, self.model, self.settings)
                    if score
                    else None,
                )
            )
        found = sum(r.status == "ok" for r in results)
        return BatchPredictionOut(
            model_version=self.model.version,
            as_of=as_of,
            found=found,
            not_found=len(results) - found,
            results=results,
        )

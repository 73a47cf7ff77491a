"""The promotion gate: out-of-time sanity first, then "not worse than the model serving now"."""

from __future__ import annotations

from pathlib import Path

from app.artifacts import current_directory
from app.scoring.predictor import ArtifactMismatch, Predictor
from app.training import metrics
from app.training.dataset import Rows

#: "Not worse" for promotion: rank metrics may drop by at most this much (holdout noise).
PROMOTION_SLACK = 0.002


def out_of_time_check(out_of_time: dict[str, dict[str, float]]) -> str | None:
    """Why the recipe fails out of time (None = passes): it must beat the spend-rate heuristic.

    The out-of-time fold model was fitted only on cutoffs older than the latest one and judged on
    customers it never saw at that latest cutoff; a recipe that cannot beat a one-line heuristic
    there would not be trusted on the future either.
    """
    model, heuristic = out_of_time.get("model"), out_of_time.get("spend_rate")
    if not model or not heuristic:
        return None
    if model["gini"] + PROMOTION_SLACK < heuristic["gini"]:
        return (
            f"out-of-time Gini {model['gini']:.4f} is below the spend-rate heuristic's "
            f"{heuristic['gini']:.4f}"
        )
    if model["auc"] + PROMOTION_SLACK < heuristic["auc"]:
        return (
            f"out-of-time churn AUC {model['auc']:.4f} is below the recency heuristic's "
            f"{heuristic['auc']:.4f}"
        )
    return None


def decide(
    model_dir: Path,
    out_of_time: dict[str, dict[str, float]],
    holdout_clv: Rows,
    holdout_churn: Rows,
    predictor: Predictor,
    force: bool,
    out_of_time_gap: int,
) -> tuple[bool, str]:
    """(promote?, reason). The incumbent is compared on this very holdout, as this model is."""
    new = predictor.predict(holdout_clv.features).clv
    gini = metrics.normalized_gini(holdout_clv.label, new)
    auc = metrics.roc_auc(
        holdout_churn.label, predictor.predict(holdout_churn.features).churn_probability
    )
    failure = out_of_time_check(out_of_time) if out_of_time_gap > 0 else None
    current = current_directory(model_dir)
    if current is None or not current.exists():
        # Nothing serves yet: a weak model beats none, but say so.
        warning = f"; warning: {failure}" if failure else ""
        return (
            True,
            f"promoted: no current model (holdout Gini {gini:.4f}, churn AUC {auc:.4f}{warning})",
        )
    if failure is not None:
        if force:
            return True, f"promoted with --force although {failure}"
        return False, f"NOT promoted: {failure}; --force overrides"
    try:
        incumbent = Predictor(current)
    except (ArtifactMismatch, ValueError) as exc:
        return True, f"promoted: the current model cannot serve this code ({exc})"
    old_gini = metrics.normalized_gini(
        holdout_clv.label, incumbent.predict(holdout_clv.features).clv
    )
    old_auc = metrics.roc_auc(
        holdout_churn.label, incumbent.predict(holdout_churn.features).churn_probability
    )
    comparison = (
        f"holdout Gini {gini:.4f} vs current {old_gini:.4f}, churn AUC {auc:.4f} vs {old_auc:.4f}"
    )
    if gini >= old_gini - PROMOTION_SLACK and auc >= old_auc - PROMOTION_SLACK:
        return True, f"promoted: not worse than {incumbent.manifest.version} ({comparison})"
    if force:
        return (
            True,
            f"promoted with --force although worse than {incumbent.manifest.version} ({comparison})",
        )
    return (
        False,
        f"NOT promoted: worse than {incumbent.manifest.version} ({comparison}); --force overrides",
    )

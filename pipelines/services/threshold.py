"""Which reject threshold applies to a model now, and for which gallery size.

In order of precedence:
1. given explicitly (``--threshold``);
2. calibrated with ``siamid calibrate`` on people who are not enrolled, at a target FPIR; for
   a gallery of another size, the threshold set again when it was published (the calibration's
   searches run against it, pooled with its own people searched against each other:
   :func:`~pipelines.services.calibration.threshold_for_published`), else set for the size at
   load time by the per-comparison rule
   (:func:`~pipelines.services.scoring.threshold_for_gallery`);
3. :func:`~pipelines.services.scoring.margin_threshold` of the training margin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipelines.services.models import ModelRef
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import margin_threshold, set_for_size, threshold_for_gallery

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Threshold:
    value: float
    source: str
    gallery_identities: int | None = None  # the gallery size it was set for (None: any)


def resolve_threshold(rt: Runtime, model: ModelRef, explicit: float | None = None) -> Threshold:
    """Explicit, else the newest calibration of the model set for today's gallery size (as
    searched again at publish time, else :func:`~pipelines.services.scoring.
    threshold_for_gallery`), else the margin rule."""
    from storage.calibration import latest_calibration
    from storage.embeddings import count_live_identities

    if explicit is not None:
        return Threshold(float(explicit), "explicit")
    with rt.sessions() as s:
        cal = latest_calibration(session=s, model_version_id=model.id)
        if cal is None:
            return Threshold(margin_threshold(model.margin), "margin/2")
        now = count_live_identities(session=s)
        source = f"calibrated@fpir={cal.target_fpir:g}"
        again = (cal.details or {}).get("for_gallery") or {}
        if now != cal.gallery_identities and set_for_size(now, again.get("identities")):
            # set again when a gallery of about this size was published
            # (calibration.threshold_for_published)
            value, size = float(again["threshold"]), int(again["identities"])
            return Threshold(value, f"{source}, searched again", size)
        tail = (cal.details or {}).get("false_match_tail")
        if tail and cal.gallery_identities:
            value = threshold_for_gallery(cal.threshold, tail, cal.gallery_identities, now)
            if now != cal.gallery_identities:
                logger.info(
                    "threshold %.4f (calibration %d, %d identities) set for %d identities: %.4f",
                    cal.threshold,
                    cal.id,
                    cal.gallery_identities,
                    now,
                    value,
                )
            return Threshold(value, source, now)
        growth = rt.settings.gallery_growth_warning
        if cal.gallery_identities and now > growth * cal.gallery_identities:
            logger.warning(
                "the gallery has grown from %d to %d identities since calibration %d; "
                "FPIR grows with gallery size: run `siamid calibrate` again",
                cal.gallery_identities,
                now,
                cal.id,
            )
        return Threshold(float(cal.threshold), source, cal.gallery_identities or None)

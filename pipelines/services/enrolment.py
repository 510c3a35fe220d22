"""Changing who is enrolled. Removal deletes SQL rows at once; vectors follow at the next embed.

The one place vectors leave the index is the ``embed`` flow: it drops every index id that no
longer has an accepted image behind it. Until then, identification skips ids whose rows are
gone, so a removed person is never returned.
"""

from __future__ import annotations

import logging

from pipelines.services.runtime import Runtime
from storage.identities import remove_identity as _remove_identity_rows

logger = logging.getLogger(__name__)


def remove_identity(rt: Runtime, name: str) -> list[int]:
    """Delete the identity's rows in one transaction; returns the removed face_image ids."""
    with rt.sessions.begin() as session:
        removed = _remove_identity_rows(session=session, name=name)
    logger.info("removed %r (%d images); the next embed drops their vectors", name, len(removed))
    return removed

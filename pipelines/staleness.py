"""The one rule of what needs to run, for ``conescope materialize`` and the automation sensors alike:
an asset partition runs when Dagster calls it stale or missing, as the UI shows it. Stale: its code
version differs from the one its last materialization recorded, or a dependency's data version
changed since (``dagster/input_data_version`` and ``dagster/input_event_pointer`` of that
materialization); missing: never materialized.

Dagster's UI and its GraphQL API compute this with ``CachingStaleStatusResolver``; no public API
returns it in Dagster 1.13 (declarative automation's operands see only changes since the previous
tick: ``code_version_changed``, ``data_version_changed``), so it comes through the adapter
(pipelines/dagster_private.py). The CLI asks per planned run (:func:`not_fresh`); the automation asks
per candidate partition each tick (``StaleOrMissing`` in pipelines/automation.py), so a change made
while the sensors were off is still found when they run.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from pipelines.dagster_private import (
    AssetGraphView,
    CachingStaleStatusResolver,
    StaleStatus,
    TemporalContext,
    get_current_datetime,
)


def resolver(instance: dg.DagsterInstance, graph, view=None) -> CachingStaleStatusResolver:
    """A resolver of the stale status of ``graph``'s asset partitions against ``instance`` now (or at
    ``view``, an ``AssetGraphView``: the automation's tick). It caches what it reads: one per tick or
    planned run."""
    if view is None:
        view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                              instance=instance, asset_graph=graph)
    return CachingStaleStatusResolver(instance, graph, view)


def not_fresh(statuses: CachingStaleStatusResolver, keys: Iterable[dg.AssetKey],
              partition_key: str | None) -> dict[dg.AssetKey, str]:
    """The assets of ``keys`` that are not fresh at ``partition_key``: ``STALE`` or ``MISSING``."""
    found = {k: statuses.get_status(k, partition_key) for k in keys}
    return {k: status.name for k, status in found.items() if status != StaleStatus.FRESH}

"""Declarative automation of the whole graph: what Dagster's automation sensor requests, and when.

Every asset gets an ``AutomationCondition`` built from Dagster's own operands (no custom
evaluation code), attached centrally by :func:`with_automation`.

- The datasets (the roots) are requested when the profile's cron tick passes (the nightly
  refresh), when they are newly missing, or when their code version changed.
- Every other asset is requested when it is *stale*: newly missing, its own code version changed,
  or a dependency's data version changed since the previous tick. A dataset rebuilt with identical
  content keeps its data version (its content hash), so the nightly refresh requests nothing else.
- An asset is also requested when a dependency that can run in the same run (same partitions,
  identity mapping) is requested this tick, so that the assets of one partition that become stale
  together run in one run (Dagster groups a tick's requests by partition).
- Two ``AutomationConditionSensorDefinition`` s evaluate the conditions (:func:`automation_sensors`):
  the image layer's runs go first in the run queue.
- Nothing is requested while a dependency is missing or in progress, nor while a dependency that
  runs in another run (another partitioning) is itself pending, requested this tick or not: a child
  never starts before or beside its parent's run, and waits for it instead of running twice. A
  per-model summary depends on every language of its model, so it waits for all of them.
- A pending trigger is kept until the asset is requested or updated (``since`` those), so a trigger
  that fires while the asset is blocked is acted on once the block lifts; a failed run is not
  retried until something changes again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import dagster as dg

from conescope.profile import Profile

AC = dg.AutomationCondition
SENSOR_NAME = "refresh_automation"
IMAGE_SENSOR_NAME = "refresh_automation_images"
IMAGE_PRIORITY = 1  # Dagster's run queue starts higher priorities first (default 0)
# Off switch for the sensors' default state (the UI's Automation page toggles them too, persistently).
AUTOMATION_ENV = "CONESCOPE_AUTOMATION"
# Seconds between two evaluations. Each layer of the graph (datasets, images, model x lang,
# summaries, final reports) waits for a tick after its parent's run, half the interval on average;
# a tick costs about a second of one core (evaluating the tiny graph: 1 s on a loaded 2-core
# machine), taken from the runs. 10 s: about 25 s of latency over the five layers and a tenth of a
# core; 5 s would halve the latency and double the cost, 30 s (Dagster's default) triple the latency.
MINIMUM_INTERVAL_S = 10


def _handled() -> dg.AutomationCondition:
    """Requested on the previous tick, or updated since it. Unlike ``since_last_handled`` this does
    not reset on the first evaluation, so a fresh instance requests what is missing at once."""
    return (AC.newly_requested() | AC.newly_updated()).with_label("handled")


def root_trigger(cron: str, timezone: str) -> dg.AutomationCondition:
    return (AC.cron_tick_passed(cron, timezone) | AC.newly_missing() | AC.code_version_changed()
            ).with_label(f"cron tick ({cron} {timezone}), newly missing or code changed")


def stale_trigger() -> dg.AutomationCondition:
    return (AC.newly_missing() | AC.code_version_changed() | AC.any_deps_match(AC.data_version_changed())
            ).with_label("newly missing, code changed or a dependency's data changed")


def root_condition(cron: str, timezone: str) -> dg.AutomationCondition:
    return (~AC.in_progress() & root_trigger(cron, timezone).since(_handled())).with_label("nightly refresh")


def refresh_condition(roots: dg.AssetSelection, same_run: dg.AssetSelection, other_run: dg.AssetSelection,
                      cron: str, timezone: str) -> dg.AutomationCondition:
    """The condition of a non-root asset. ``roots`` are the datasets (``cron`` is theirs); ``same_run``
    are its dependencies of the same partitioning (identity mapping: Dagster puts a tick's requests of
    one partition and partitioning in one run), ``other_run`` those of another partitioning, which
    always run in another run (Dagster groups a tick's requests by partitions definition and key)."""
    pending = stale_trigger().since(_handled())
    # A dependency pending in another run blocks, even if it is requested this tick: the two runs would
    # start together. One requested this tick in the same run does not block: the run orders them.
    parent_pending = (
        AC.any_deps_match(root_trigger(cron, timezone).since(_handled())).allow(roots & other_run)
        | AC.any_deps_match(pending).allow(other_run - roots)
        | AC.any_deps_match(pending & ~AC.will_be_requested()).allow(same_run - roots)
    ).with_label("a dependency is pending in another run")
    with_parent = AC.any_deps_match(AC.will_be_requested()).allow(same_run - roots).with_label(
        "a dependency is requested in this run")
    # `in_progress` first: the operands of an AND are evaluated in order, against the live event log,
    # during a tick that takes seconds. A run that materializes the asset between an `in_progress`
    # read and a later `handled` read is then either still in progress (not requested) or handled
    # (its trigger reset); in the other order it could be neither, and be requested again.
    return (~AC.in_progress() & ~AC.any_deps_in_progress() & ~AC.any_deps_missing()
            & (pending | with_parent) & ~parent_pending).with_label("stale")


def with_automation(assets: Sequence[dg.AssetsDefinition], profile: Profile) -> list[dg.AssetsDefinition]:
    """``assets`` with their automation condition: :func:`root_condition` on the roots (the assets
    without dependencies: the datasets), :func:`refresh_condition` on every other asset (``@asset``
    and ``@multi_asset`` alike, through ``map_asset_specs``), with its dependencies split by whether
    they share its partitioning (the same ``PartitionsDefinition`` object: two partitionings with equal
    keys are still two layers, pipelines/partitions.py)."""
    cron, tz = profile.schedule.cron, profile.schedule.timezone
    specs = {spec.key: spec for a in assets for spec in a.specs}
    root_keys = {key for key, spec in specs.items() if not spec.deps}
    roots, nightly = dg.AssetSelection.assets(*root_keys), root_condition(cron, tz)

    def condition(spec: dg.AssetSpec) -> dg.AutomationCondition:
        parents = [dep.asset_key for dep in spec.deps]
        same = [k for k in parents if k in specs and specs[k].partitions_def is spec.partitions_def]
        return refresh_condition(roots, dg.AssetSelection.assets(*same),
                                 dg.AssetSelection.assets(*(k for k in parents if k not in same)), cron, tz)

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(automation_condition=nightly if spec.key in root_keys else condition(spec))

    return [a.map_asset_specs(attach) for a in assets]


def automation_enabled() -> bool:
    value = os.environ.get(AUTOMATION_ENV, "on").lower()
    if value not in ("on", "off"):
        raise ValueError(f"{AUTOMATION_ENV}={value!r}: expected on or off")
    return value == "on"


def automation_sensors(first: Sequence[dg.AssetKey]) -> list[dg.AutomationConditionSensorDefinition]:
    """The sensors that evaluate every asset's condition, running by default: one for ``first``
    (the image layer: the model x lang partitions of a model wait for it), whose runs go first in
    the run queue (``dagster/priority``), and one for every other asset. A tick requests the image
    runs together with the text embeddings; Dagster's queue would start them in the order of their
    partition keys (``en|...`` before ``vit-b-32...``), leaving the longest runs on the critical path
    for last.

    ``emit_backfills=False``: a tick's requests become one run per partition (Dagster groups the
    assets of a partition), launched at once. With backfills, every layer would also wait for the
    backfill daemon's next iteration (every 30 s in Dagster's daemon; when a run of the backfill ends
    in ``conescope dev``'s, pipelines/daemon.py); the conditions already order the layers."""
    status = dg.DefaultSensorStatus.RUNNING if automation_enabled() else dg.DefaultSensorStatus.STOPPED
    description = ("Requests the datasets on the profile's nightly cron tick, and every asset partition that is "
                   "missing or stale (its code or a dependency's data changed), parents before children")

    def sensor(name: str, target: dg.AssetSelection, run_tags: dict[str, str], what: str):
        return dg.AutomationConditionSensorDefinition(
            name, target=target, default_status=status, minimum_interval_seconds=MINIMUM_INTERVAL_S,
            emit_backfills=False, run_tags=run_tags, description=f"{description}: {what}")

    if not first:  # no image model
        return [sensor(SENSOR_NAME, dg.AssetSelection.all(), {}, "every asset")]
    selection = dg.AssetSelection.assets(*first)
    return [sensor(SENSOR_NAME, dg.AssetSelection.all() - selection, {}, "every asset but the image layer"),
            sensor(IMAGE_SENSOR_NAME, selection, {"dagster/priority": str(IMAGE_PRIORITY)},
                   "the image layer, first in the run queue")]

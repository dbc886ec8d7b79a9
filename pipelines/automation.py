"""Declarative automation of the whole graph: what Dagster's automation sensor requests, and when.

Every asset gets an ``AutomationCondition`` built from Dagster's own operands and one of the
project's, :class:`StaleOrMissing` (the rule ``conescope materialize`` applies: pipelines/staleness.py),
attached centrally by :func:`with_automation`.

- The datasets (the roots) are requested when the profile's cron tick passes (the nightly
  refresh), when they are missing, or when their code version changed.
- Every other asset is requested when it is *stale or missing* as Dagster's UI shows it: never
  materialized, its own code version changed, or a dependency's data version changed since its last
  materialization. The rule is level-triggered: whatever is stale when a tick runs is requested,
  whether the change happened while the sensors were on or off. A dataset rebuilt with identical
  content keeps its data version (its content hash), so the nightly refresh requests nothing else.
- A partition whose latest run failed is not requested again until something changes while the
  sensors run (``execution_failed``, lifted by a new change since): no retry loop.
- A missing asset is also requested when a dependency that can run in the same run (same partitions,
  identity mapping) is requested this tick, so that a new partition is built in one run (Dagster
  groups a tick's requests by partition). An asset that exists waits for such a dependency's run and
  runs only if its data version changed: exactly what ``conescope materialize`` runs.
- Two ``AutomationConditionSensorDefinition`` s evaluate the conditions (:func:`automation_sensors`):
  the image layer's runs go first in the run queue.
- Nothing is requested while a dependency is missing or in progress, nor while a dependency that
  runs in another run (another partitioning) is itself pending, requested this tick or not: a child
  never starts before or beside its parent's run, and waits for it instead of running twice. A
  per-model summary depends on every language of its model, so it waits for all of them.
- Being level-triggered, a partition blocked by a dependency is requested once the block lifts.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import dagster as dg

from conescope.profile import Profile
from pipelines.staleness import not_fresh, resolver

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


class StaleOrMissing(dg.AutomationCondition):
    """The candidate partitions that are stale or missing now, by pipelines/staleness.py (Dagster's
    stale status): a level, not a change since the previous tick. Custom Python, so the sensors
    evaluate it in the code server (``use_user_code_server``), as Dagster documents for such
    conditions. One resolver per tick (its caches are the tick's reads).

    A partition's status changes only with the event log (its own and its dependencies'
    materializations) or its own code version. When neither changed since the previous evaluation (the
    cursor holds both), the previous answer stands for the partitions evaluated then, and only new
    candidates are resolved: an idle tick reads nothing (on the demo a full evaluation takes seconds)."""

    _tick: tuple[object, object] | None = None  # (the tick's AssetGraphView, its resolver)

    @property
    def name(self) -> str:
        return "stale_or_missing"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        candidates = context.candidate_subset
        stamp = None if context.max_storage_id is None else \
            f"{context.max_storage_id}:{context.asset_graph.get(context.key).code_version}"
        previous, evaluated = context.previous_true_subset, context.previous_candidate_subset
        if stamp is not None and stamp == context.cursor and previous is not None and evaluated is not None:
            true = candidates.compute_intersection(previous).compute_union(
                self._resolve(context, candidates.compute_difference(evaluated)))
        else:
            true = self._resolve(context, candidates)
        return dg.AutomationResult(context, true_subset=true, cursor=stamp)

    @staticmethod
    def _resolve(context: dg.AutomationContext, subset):
        """The partitions of ``subset`` that are stale or missing, resolved now."""
        if subset.is_empty:
            return subset
        view = context.asset_graph_view
        if StaleOrMissing._tick is None or StaleOrMissing._tick[0] is not view:
            StaleOrMissing._tick = (view, resolver(view.instance, context.asset_graph, view))
        statuses = StaleOrMissing._tick[1]
        if context.partitions_def is None:
            return subset if not_fresh(statuses, [context.key], None) else context.get_empty_subset()
        keys = {p for p in subset.expensively_compute_partition_keys() if not_fresh(statuses, [context.key], p)}
        return subset.compute_intersection_with_partition_keys(keys)


def _stale(trigger: dg.AutomationCondition) -> dg.AutomationCondition:
    """Stale or missing now, not requested on the previous tick, and not failed in its latest run
    unless ``trigger`` (a change) fired since it was last requested or updated."""
    retry = (~AC.execution_failed() | trigger.since(_handled())).with_label("not failed, or changed since")
    return (~AC.newly_requested() & retry & StaleOrMissing()).with_label("stale or missing")


def stale_trigger() -> dg.AutomationCondition:
    return (AC.newly_missing() | AC.code_version_changed() | AC.any_deps_match(AC.data_version_changed())
            ).with_label("newly missing, code changed or a dependency's data changed")


def root_pending(cron: str, timezone: str) -> dg.AutomationCondition:
    return AC.cron_tick_passed(cron, timezone).since(_handled()) | _stale(root_trigger(cron, timezone))


def root_condition(cron: str, timezone: str) -> dg.AutomationCondition:
    return (~AC.in_progress() & root_pending(cron, timezone)).with_label("nightly refresh")


def refresh_condition(roots: dg.AssetSelection, same_run: dg.AssetSelection, other_run: dg.AssetSelection,
                      cron: str, timezone: str) -> dg.AutomationCondition:
    """The condition of a non-root asset. ``roots`` are the datasets (``cron`` is theirs); ``same_run``
    are its dependencies of the same partitioning (identity mapping: Dagster puts a tick's requests of
    one partition and partitioning in one run), ``other_run`` those of another partitioning, which
    always run in another run (Dagster groups a tick's requests by partitions definition and key)."""
    pending = _stale(stale_trigger())
    # A dependency pending in another run blocks, even if it is requested this tick: the two runs would
    # start together. One requested this tick in the same run does not block: the run orders them.
    parent_pending = (
        AC.any_deps_match(root_pending(cron, timezone)).allow(roots & other_run)
        | AC.any_deps_match(pending).allow(other_run - roots)
        | AC.any_deps_match(pending & ~AC.will_be_requested()).allow(same_run - roots)
    ).with_label("a dependency is pending in another run")
    # A missing asset runs with its dependencies of the same run (it must run anyway). One that exists waits
    # for their new data versions, and runs only if they changed, as ``conescope materialize`` does.
    with_parent = (AC.missing() & AC.any_deps_match(AC.will_be_requested()).allow(same_run - roots)).with_label(
        "missing, and a dependency is requested in this run")
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
    backfill daemon's next iteration (every 30 s); the conditions already order the layers."""
    status = dg.DefaultSensorStatus.RUNNING if automation_enabled() else dg.DefaultSensorStatus.STOPPED
    description = ("Requests the datasets on the profile's nightly cron tick, and every asset partition that is "
                   "missing or stale (its code or a dependency's data changed since it ran), parents before children")

    def sensor(name: str, target: dg.AssetSelection, run_tags: dict[str, str], what: str):
        with warnings.catch_warnings():
            # `use_user_code_server` is a beta parameter of Dagster 1.13, the one Dagster documents for
            # custom conditions (StaleOrMissing); its behaviour here is tested (tests/test_automation.py,
            # tests/test_crash.py), so the warning it prints at every load says nothing to a user.
            warnings.simplefilter("ignore", dg.BetaWarning)
            return dg.AutomationConditionSensorDefinition(
                name, target=target, default_status=status, minimum_interval_seconds=MINIMUM_INTERVAL_S,
                emit_backfills=False, use_user_code_server=True, run_tags=run_tags,
                description=f"{description}: {what}")

    if not first:  # no image model
        return [sensor(SENSOR_NAME, dg.AssetSelection.all(), {}, "every asset")]
    selection = dg.AssetSelection.assets(*first)
    return [sensor(SENSOR_NAME, dg.AssetSelection.all() - selection, {}, "every asset but the image layer"),
            sensor(IMAGE_SENSOR_NAME, selection, {"dagster/priority": str(IMAGE_PRIORITY)},
                   "the image layer, first in the run queue")]

"""The refresh plan of ``conescope materialize``: which runs recompute every partition of a profile,
in dependency order, in one process and without a daemon.

Layers: the datasets (one run), then the checkpoint of each model the pipeline trains (one run per
trained model), then each model's image layer (one run per model; text-only models
have none and go straight on), then each model x lang partition's text layer, its pairs (image models
only) and its report, then each model's summary (metrics and the report that read every language),
then the reports over every model (one run), so a layer never reads an upstream that is still being
rewritten. The order of the jobs is not written here: :func:`job_order` takes it from the asset graph.
Under ``conescope dev`` the automation sensors request runs instead, from each asset's automation
condition (pipelines/automation.py), which waits on the same dependencies.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field

import dagster as dg

from conescope.profile import Profile
from pipelines.jobs import DATASETS_JOB
from pipelines.partitions import model_and_lang, model_lang_key
from pipelines.staleness import not_fresh, resolver
from pipelines.terminal import TerminalLines

REFRESH_TAG = "conescope/refresh"


@dataclass(frozen=True)
class PlannedRun:
    job: str
    partition_key: str | None
    tags: dict[str, str] = field(default_factory=dict, compare=False)


def _check(profile: Profile, models: list[str], langs: list[str]) -> None:
    unknown_models = [m for m in models if m not in profile.models]
    unknown_langs = [lang for lang in langs if lang not in profile.languages]
    valid = ([f"its models: {', '.join(profile.models)}"] if unknown_models else []) + \
        ([f"its languages: {', '.join(profile.languages)}"] if unknown_langs else [])
    if valid:
        raise ValueError(f"not in profile {profile.name!r}: {', '.join(unknown_models + unknown_langs)} "
                         f"({'; '.join(valid)})")


def job_order(defs: dg.Definitions) -> list[str]:
    """The jobs of ``defs`` in dependency order, from the asset graph alone (the dependencies the
    automation conditions wait on too): a job comes after every job holding a dependency of one of its
    assets. Of jobs that do not depend on each other, one over model x lang keys that follows another
    goes first, so that :func:`full_plan` runs a partition's layers together (its report as soon as its
    pairs); the rest go by name. Jobs that depend on each other both ways cannot be ordered: an error
    names them."""
    graph = defs.resolve_asset_graph()
    names = [job.name for job in defs.jobs]
    job_of = {key: name for name in names for key in defs.resolve_job_def(name).asset_layer.selected_asset_keys}
    after: dict[str, set[str]] = {name: set() for name in names}
    for key, name in job_of.items():
        after[name] |= {job_of[p] for p in graph.get(key).parent_keys if p in job_of and job_of[p] != name}
    sorter = graphlib.TopologicalSorter(after)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise ValueError(f"jobs that depend on each other both ways: {', '.join(exc.args[1])}") from None
    order: list[str] = []
    ready: set[str] = set()
    while sorter.is_active():  # one job at a time: a job made ready by the last one can go next
        ready |= set(sorter.get_ready())
        group_open = bool(order) and _over_model_lang(defs, order[-1])
        job = min(ready, key=lambda name: (not (group_open and _over_model_lang(defs, name)), name))
        ready.discard(job)
        order.append(job)
        sorter.done(job)
    return order


def _over_model_lang(defs: dg.Definitions, job: str) -> bool:
    partitions = defs.resolve_job_def(job).partitions_def
    return partitions is not None and all("|" in key for key in partitions.get_partition_keys())


def full_plan(profile: Profile, refresh_id: str, models: list[str] | None = None,
              langs: list[str] | None = None, defs: dg.Definitions | None = None) -> list[PlannedRun]:
    """Every run of the chain, the jobs in :func:`job_order` (``defs``: the profile's definitions, built
    when not given), each over its partitions: the datasets; the checkpoint of each model the pipeline
    trains; each image model's image layer; the model x
    lang partitions, each as its text layer, its pairs (an image model's) and its report (consecutive jobs
    over model x lang keys run one key after another, a text-only model's first: they have no image layer
    to wait for); each model's summary, then the final reports. A job ordered after the model x lang
    layers reads every language of the profile and is left out when ``langs`` is a subset. ``models``
    restricts the per-model and model x lang runs; the final reports still follow."""
    models = models or list(profile.models)
    langs = langs or list(profile.languages)
    _check(profile, models, langs)
    if defs is None:
        from pipelines.definitions import build_definitions

        defs = build_definitions(profile)
    tags = {REFRESH_TAG: refresh_id}
    with_images = [m for m in models if profile.models[m].has_image_tower]
    ordered = [m for m in models if m not in with_images] + with_images

    def keys(job: str) -> list[str | None] | list[tuple[str, str]]:
        partitions = defs.resolve_job_def(job).partitions_def
        if partitions is None:
            return [None]
        found = partitions.get_partition_keys()
        if all(k in profile.models for k in found):
            return [m for m in ordered if m in found]
        pairs = {model_and_lang(k) for k in found}
        return [(m, lang) for m in ordered for lang in langs if (m, lang) in pairs]

    plan: list[PlannedRun] = []
    group: list[tuple[str, list]] = []  # consecutive model x lang jobs, run key by key

    def flush() -> None:
        for m, lang in dict.fromkeys(pair for _, pairs in group for pair in pairs):
            plan.extend(PlannedRun(job, model_lang_key(m, lang), tags) for job, pairs in group if (m, lang) in pairs)
        group.clear()

    every_language, after_model_lang = set(profile.languages) <= set(langs), False
    for job in job_order(defs):
        job_keys = keys(job)
        if job_keys and isinstance(job_keys[0], tuple):
            group.append((job, job_keys))
            after_model_lang = True
            continue
        flush()
        if every_language or not after_model_lang:
            plan += [PlannedRun(job, key, tags) for key in job_keys]
    flush()
    return plan


def failure_message(error) -> str:
    """The message of a step failure with its causes: Dagster wraps the asset's exception in a step
    execution error whose own message names only the op."""
    parts = []
    while error is not None:
        parts.append(error.message.strip())
        error = error.cause
    return "\n".join(parts)


def stale_or_missing(defs: dg.Definitions, instance: dg.DagsterInstance, job: str,
                     partition_key: str | None) -> dict[dg.AssetKey, str]:
    """The assets of ``job`` that are not fresh for ``partition_key``, with their status (``STALE``
    or ``MISSING``), by the rule the automation applies too (pipelines/staleness.py)."""
    graph = defs.resolve_asset_graph()
    return not_fresh(resolver(instance, graph), defs.resolve_job_def(job).asset_layer.selected_asset_keys,
                     partition_key)


def next_selection(defs: dg.Definitions, job: str, not_fresh: dict[dg.AssetKey, str]) -> list[dg.AssetKey]:
    """What to run now of what is not fresh: every missing asset, and every stale one none of whose
    ancestors in the job is stale or missing (those run first: the asset may have to run after them
    anyway, and must not run twice). A multi-asset that cannot be subset comes whole."""
    graph = defs.resolve_asset_graph()
    in_job = defs.resolve_job_def(job).asset_layer.selected_asset_keys

    def ancestors(key: dg.AssetKey) -> set[dg.AssetKey]:
        out, todo = set(), [key]
        while todo:
            for parent in graph.get(todo.pop()).parent_keys:
                if parent in in_job and parent not in out:
                    out.add(parent)
                    todo.append(parent)
        return out

    selected = {k for k, status in not_fresh.items() if status == "MISSING" or not ancestors(k) & set(not_fresh)}
    for key in list(selected):
        assets_def = graph.get(key).assets_def
        if not assets_def.can_subset:
            selected |= set(assets_def.keys) & in_job
    return sorted(selected)


def damaged_assets(defs: dg.Definitions, job: str, partition_key: str | None,
                   log=print) -> dict[dg.AssetKey, str]:
    """The assets of ``job`` whose stored files for ``partition_key`` are damaged (assets/stored.py:
    embedding parts, dataset manifests), each ``DAMAGED``; one line per damaged file, naming it
    (relative to the data root), why, and what the run does about it."""
    from assets.stored import verify_stored

    home = defs.resources.get("conescope")
    if home is None:
        return {}
    found = {}
    for key in sorted(defs.resolve_job_def(job).asset_layer.selected_asset_keys):
        stored = verify_stored(home, key, partition_key)
        if stored is None:
            continue
        found[key] = "DAMAGED"
        for damage in stored.damages:
            log(f"{_relative(damage.path, home.paths.root)} is damaged ({damage.reason}); {stored.remedy}")
    return found


def damaged_lake(defs: dg.Definitions, log=print) -> int:
    """Name every DuckLake data file without a readable footer (not rewritten: which partitions its
    rows belong to is the catalog's); returns how many."""
    from assets.stored import verify_lake

    home = defs.resources.get("conescope")
    damages = verify_lake(home) if home is not None else []
    for damage in damages:
        log(f"{_relative(damage.path, home.paths.root)} is damaged ({damage.reason}): the warehouse rows it "
            f"holds cannot be read; restore it from a backup, or delete the warehouse (the lake folder and its "
            f"catalog) and run conescope materialize --force")
    return len(damages)


def _relative(path, root) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _names(keys) -> str:
    return ", ".join(k.to_user_string() for k in keys)


def run_summary(ran: list[dg.AssetKey], every: list[dg.AssetKey]) -> str:
    """What one planned run did, for its line of ``conescope materialize``: every asset of its job, some
    of them (the others were fresh), or none."""
    fresh = len(every) - len(ran)
    if not ran:
        return f"nothing stale ({fresh} asset{'s' * (fresh != 1)} fresh)"
    if not fresh:
        return f"ran all {len(ran)} asset{'s' * (len(ran) != 1)}"
    return f"ran {_names(ran)}; {fresh} fresh asset{'s' * (fresh != 1)} skipped"


def execute_plan(defs: dg.Definitions, plan: list[PlannedRun], instance: dg.DagsterInstance,
                 log=print, debug: bool = False, force: bool = False, terminal: TerminalLines | None = None) -> bool:
    """Run the plan in this process, stopping at the first failure, recomputing only what is stale or
    missing (``stale_or_missing``): for each planned run, what is not fresh in its job and partition
    runs in one Dagster run (``next_selection``: a stale asset waits while an ancestor in the job is
    stale), then staleness is evaluated again (an asset whose dependency changed within the run is
    stale now; one whose dependency was rewritten with the same data version is not), until every
    asset of the job is fresh; each asset runs at most once per planned run. The
    datasets run always rebuilds every dataset: it is cheap (CPU only) and the only way to notice
    changed source files; an unchanged manifest keeps its data version, so nothing below reruns.
    Before each planned run the files its assets keep are verified (``damaged_assets``): a damaged
    one is named in a line and its asset runs with what is stale (the embedding step embeds the
    damaged parts again: the same fingerprint, so nothing downstream is stale). ``force``: every
    asset of every planned run, in one run each, tagged ``conescope/force=true`` (the embedding
    steps then re-embed even a complete partition whose fingerprint matches).

    Runs are recorded in ``instance`` (the UI shows them with their full event logs) and tagged with
    this process (``conescope/owner``), so that a later ``conescope materialize`` can tell a run
    whose process died (pipelines/instance.py). One line per planned run says what ran and what was
    fresh, one per asset check that failed in it; a failure is reported as its message in one line,
    ``debug`` adds the traceback. With ``terminal`` (its loggers in ``defs``), the models created and
    the progress of long embedding steps are printed under the run in progress."""
    import time

    from assets.keys import FORCE_TAG
    from pipelines.instance import OWNER_TAG, owner_tag

    # The terminal gets nothing from Dagster's loggers but failures with --debug; the instance keeps
    # the whole event log.
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR" if debug else "CRITICAL"}},
                         **({TerminalLines.LOGGER: {}} if terminal is not None else {})}}
    tags = {OWNER_TAG: owner_tag(), **({FORCE_TAG: "true"} if force else {})}
    damaged_lake(defs, log)
    for i, planned in enumerate(plan, 1):
        t0, ran = time.perf_counter(), []
        name = f"[{i}/{len(plan)}] {planned.job} {planned.partition_key or ''}"
        if terminal is not None:
            terminal.run(name)
        job = defs.resolve_job_def(planned.job)
        every = sorted(job.asset_layer.selected_asset_keys)
        # --force rewrites everything anyway; the datasets run rewrites every manifest: named only
        damaged = {} if force else damaged_assets(defs, planned.job, planned.partition_key, log)
        while True:
            if force or planned.job == DATASETS_JOB:
                selection = every
            else:
                not_fresh = stale_or_missing(defs, instance, planned.job, planned.partition_key)
                if not ran:
                    not_fresh = {**damaged, **not_fresh}
                selection = next_selection(defs, planned.job, not_fresh)
                selection = [k for k in selection if k not in ran]  # at most once per planned run
            if not selection:
                break
            result = job.execute_in_process(
                instance=instance, partition_key=planned.partition_key, tags={**planned.tags, **tags},
                asset_selection=selection, raise_on_error=False, run_config=quiet)
            ran += selection
            _report_checks(result, log)
            if not result.success:
                log(f"{name} FAILED ({time.perf_counter() - t0:.1f} s)")
                return _report_failure(result, debug)
            if force or planned.job == DATASETS_JOB:
                break
        log(f"{name} ok ({time.perf_counter() - t0:.1f} s): {run_summary(ran, every)}")
    return True


def _report_checks(result, log) -> None:
    """One line per asset check that failed in the run (its description names the partition and the
    offending rows or files); a non-blocking check does not fail the run, so this is where the
    terminal hears of it."""
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.asset_check_evaluation_data
        if not evaluation.passed:
            level = "warning" if evaluation.severity == dg.AssetCheckSeverity.WARN else "error"
            log(f"check {evaluation.asset_key.to_user_string()} {evaluation.check_name} failed ({level}): "
                f"{evaluation.description}")


def _report_failure(result, debug: bool) -> bool:
    import sys

    failure = next((e for e in result.all_events if e.is_step_failure), None)
    if failure is None:
        print(f"run {result.run_id} failed; see its log in the UI (conescope dev)", file=sys.stderr)
        return False
    error = failure.step_failure_data.error
    if debug:
        print(f"run {result.run_id} failed: {failure_message(error)}\n"
              f"{''.join(error.stack)}", file=sys.stderr)
    else:
        print(f"conescope: error: {failure.step_key}: {_root_cause(error)} (run {result.run_id}; "
              f"--debug shows the traceback)", file=sys.stderr)
    return False


def _root_cause(error) -> str:
    """The innermost error's message on one line: the user's problem, not Dagster's wrapping."""
    while error.cause is not None:
        error = error.cause
    return " ".join(error.message.split())

"""The Ray backend's supervision policy: incidents from cluster views, a crash loop's rollback."""

from __future__ import annotations

from dataclasses import replace

from selfheal_daemon.supervision.ray_policy import (
    CRASH_LOOP,
    SERVICE_CRASH,
    ClusterView,
    Decision,
    Incident,
    NodeView,
    RayPolicyConfig,
    RayState,
    ReplicaView,
    RollBack,
    model_changed,
    observe,
)

CFG = RayPolicyConfig(budget=3, window_s=60.0)
HEAD, SECOND = "node-head", "node-2"


def _view(
    at: float,
    replicas: dict[str, str],
    *,
    running: int | None = None,
    version: str = "v1",
    dead: tuple[str, ...] = (),
) -> ClusterView:
    """Replicas by id -> node, all on ``version``; ``running`` as Serve counts them."""
    return ClusterView(
        at=at,
        status="RUNNING",
        message="",
        target=2,
        replica_states={"RUNNING": len(replicas) if running is None else running},
        replicas=tuple(
            ReplicaView(rid, version, "sha", 100 + i, node)
            for i, (rid, node) in enumerate(sorted(replicas.items()))
        ),
        nodes=tuple(NodeView(n, "127.0.0.1", n not in dead, 1.0) for n in (HEAD, SECOND)),
    )


def _run(state: RayState, *views: ClusterView) -> tuple[RayState, list[Incident | RollBack]]:
    actions: list[Incident | RollBack] = []
    for view in views:
        decision: Decision = observe(view, state, CFG)
        state = decision.state
        actions.extend(decision.actions)
    return state, actions


def test_the_first_view_is_adopted_without_an_incident() -> None:
    state, actions = _run(RayState("v1", "v1"), _view(0.0, {"a": HEAD, "b": SECOND}))
    assert actions == []
    assert state.replicas == {"a", "b"}
    assert state.nodes == {HEAD, SECOND}


def test_a_replica_that_vanishes_is_an_incident_resolved_with_its_time_to_recover() -> None:
    state, _ = _run(RayState("v1", "v1"), _view(0.0, {"a": HEAD, "b": SECOND}))
    state, actions = _run(
        state,
        _view(1.0, {"b": SECOND}, running=1),
        _view(2.0, {"b": SECOND}, running=1),  # still missing: nothing new
        _view(4.5, {"b": SECOND, "c": HEAD}),
    )
    assert [(a.detection, a.outcome) for a in actions if isinstance(a, Incident)] == [
        ("replica_exited", None),
        ("replica_exited", "resolved"),
    ]
    opened, resolved = actions
    assert isinstance(opened, Incident)
    assert isinstance(resolved, Incident)
    assert (opened.issue, opened.scope, opened.action) == (
        SERVICE_CRASH,
        "replica:a",
        "ray_restarts",
    )
    assert opened.details == {"replica": "a", "node": HEAD, "version": "v1"}
    assert resolved.scope == "replica:a"
    assert resolved.details["recovered_s"] == 3.5
    assert resolved.details["new_replicas"] == ["c"]
    assert state.outages == ()


def test_a_replacement_that_is_not_on_the_version_yet_does_not_resolve() -> None:
    state, _ = _run(RayState("v2", "v1"), _view(0.0, {"a": HEAD, "b": SECOND}, version="v2"))
    starting = _view(1.0, {"b": SECOND, "c": HEAD}, version="v2")
    starting = ClusterView(
        starting.at,
        "RUNNING",
        "",
        2,
        {"RUNNING": 1, "STARTING": 1},
        starting.replicas[:1],
        starting.nodes,
    )
    state, actions = _run(state, starting)
    assert [a.outcome for a in actions if isinstance(a, Incident)] == [None]
    assert len(state.outages) == 1


def test_a_lost_node_is_one_incident_besides_its_replicas() -> None:
    state, _ = _run(RayState("v1", "v1"), _view(0.0, {"a": HEAD, "b": SECOND}))
    state, actions = _run(
        state,
        _view(2.0, {"a": HEAD}, running=1, dead=(SECOND,)),
        _view(15.0, {"a": HEAD, "c": HEAD}, dead=(SECOND,)),
    )
    incidents = [a for a in actions if isinstance(a, Incident)]
    assert [(a.scope, a.detection, a.outcome) for a in incidents] == [
        (f"node:{SECOND}", "node_lost", None),
        ("replica:b", "replica_exited", None),
        (f"node:{SECOND}", "node_lost", "resolved"),
        ("replica:b", "replica_exited", "resolved"),
    ]
    assert incidents[0].details == {"node": SECOND, "replicas": ["b"]}
    assert incidents[2].action == "rescheduled"
    assert incidents[2].details["recovered_s"] == 13.0


def _churn(state: RayState, start: float, times: int) -> tuple[RayState, list[Incident | RollBack]]:
    """``times`` replicas fail and come back, one second apart each."""
    views = []
    t = start
    for i in range(times):
        views.append(_view(t, {f"r{i + 1}": HEAD}, running=1, version=state.serving or ""))
        views.append(
            _view(t + 0.5, {f"r{i + 1}": HEAD, f"r{i + 2}": SECOND}, version=state.serving or "")
        )
        t += 1.0
    return _run(state, *views)


def test_replicas_failing_soon_after_a_model_change_roll_the_model_back_once() -> None:
    state, _ = _run(RayState("v1", "v1"), _view(0.0, {"r0": HEAD, "r1": SECOND}, version="v2"))
    state = model_changed(state, "v2", "v1", now=0.0)
    state, actions = _churn(state, 1.0, 4)
    rollbacks = [a for a in actions if isinstance(a, RollBack)]
    assert rollbacks == [RollBack("v1", "3 replica failures within 60 s of serving v2")]
    loop = [a for a in actions if isinstance(a, Incident) and a.issue == CRASH_LOOP]
    assert [(a.action, a.outcome) for a in loop] == [("rollback", None)]
    assert loop[0].details["rollback_to"] == "v1"
    assert state.crash_loop
    state = model_changed(state, "v1", "v1", now=10.0)  # the rollback landed: a fresh count
    assert not state.crash_loop
    assert state.failures == ()


def test_failures_with_no_recent_model_change_escalate_instead() -> None:
    state, _ = _run(RayState("v1", "v1"), _view(0.0, {"r0": HEAD, "r1": SECOND}))
    state = model_changed(state, "v1", "v1", now=-1000.0)
    state, actions = _churn(state, 1.0, 3)
    loop = [a for a in actions if isinstance(a, Incident) and a.issue == CRASH_LOOP]
    assert [(a.action, a.outcome) for a in loop] == [("escalate", "escalated")]
    assert loop[0].details["reason"] == "no recent model change to roll back"
    assert not [a for a in actions if isinstance(a, RollBack)]


def test_failures_spread_wider_than_the_window_are_no_crash_loop() -> None:
    state, _ = _run(RayState("v2", "v1"), _view(0.0, {"r0": HEAD, "r1": SECOND}, version="v2"))
    state = model_changed(state, "v2", "v1", now=0.0)
    for start in (1.0, 70.0, 140.0):
        state, actions = _churn(state, start, 1)
        assert not any(isinstance(a, RollBack) for a in actions)
    assert not state.crash_loop
    assert len(state.failures) == 1


def test_a_crash_loop_while_paused_is_recorded_as_skipped_and_not_rolled_back() -> None:
    state, _ = _run(RayState("v1", "v1"), _view(0.0, {"r0": HEAD, "r1": SECOND}, version="v2"))
    state = replace(model_changed(state, "v2", "v1", now=0.0), paused=True)
    state, actions = _churn(state, 1.0, 4)
    assert not [a for a in actions if isinstance(a, RollBack)]
    loop = [a for a in actions if isinstance(a, Incident) and a.issue == CRASH_LOOP]
    assert [(a.action, a.outcome, a.details["reason"]) for a in loop] == [
        ("none", "skipped", "healing paused")
    ]
    failures = [a for a in actions if isinstance(a, Incident) and a.issue == SERVICE_CRASH]
    assert failures  # each failure is still on the record while paused


def test_replicas_replaced_on_purpose_leave_without_an_incident() -> None:
    """A restart marks the replicas it replaces as retiring: their going is no failure, while
    another replica that dies meanwhile still is."""
    state, _ = _run(RayState("v1", "v1"), _view(0.0, {"a": HEAD, "b": SECOND}))
    state = replace(state, retiring=frozenset({"a"}))
    state, actions = _run(
        state,
        _view(1.0, {"b": SECOND, "c": HEAD}),  # a left, c is its successor
        _view(2.0, {"c": HEAD}, running=1),  # b died: a real failure
        _view(3.0, {"c": HEAD, "d": SECOND}),
    )
    incidents = [a for a in actions if isinstance(a, Incident)]
    assert [(a.scope, a.outcome) for a in incidents] == [
        ("replica:b", None),
        ("replica:b", "resolved"),
    ]
    assert state.retiring == frozenset()
    assert len(state.failures) == 1

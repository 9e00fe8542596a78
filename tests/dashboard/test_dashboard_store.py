"""The dashboard's store on SQLite and on a real PostgreSQL: migrations, events once by id, invalid messages
kept aside, alerts, acknowledgement, retention, sign-in rows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import event, inspect, text

from dashboard_parts import store, store_url  # noqa: F401  (fixtures)
from rackwatch.dashboard import samples
from rackwatch.dashboard.store import Message, Store, utcnow


def message(event: dict) -> Message:
    return Message(f"rackwatch/{event['rack']}/{event['type']}", json.dumps(event).encode())


def test_migrations_create_every_table_and_run_again_without_change(store_url):
    store = Store(store_url)
    store.migrate()
    store.migrate()   # every start runs them: the second run finds nothing to do
    tables = set(inspect(store.engine).get_table_names())
    assert {"racks", "events", "reps", "sets", "health", "replies", "commands", "invalid_messages", "alerts",
            "users", "sessions", "alembic_version"} <= tables
    with store.engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == "0002"
    # 0002: the events are read by type (a rack's movements not counted) without scanning the table
    assert {"name": "ix_events_type_rack_time", "column_names": ["type", "rack", "time"]} in [
        {"name": ix["name"], "column_names": ix["column_names"]} for ix in inspect(store.engine).get_indexes("events")]
    store.close()


def test_an_event_delivered_twice_is_stored_once(store):
    rep = samples.rep("rack01", "set-a", 1, "clean")
    first = store.ingest([message(rep), message(rep)])
    again = store.ingest([message(rep)])   # QoS 1 redelivery in a later batch
    assert (first.stored, first.duplicates, again.stored, again.duplicates) == (1, 1, 0, 1)
    assert store.event_ids() == [rep["id"]]
    assert [r.id for r in store.reps()] == [rep["id"]]


def test_invalid_messages_are_counted_and_kept_aside_and_the_rest_of_the_batch_is_stored(store):
    good = samples.rep("rack01", "set-a", 1, "clean")
    no_verdict = samples.rep("rack01", "set-a", 2, "clean")
    del no_verdict["verdict"]
    other_rack = samples.rep("rack02", "set-b", 1, "clean")
    batch = [Message("rackwatch/rack01/rep", b"{not json"), message(no_verdict),
             Message("rackwatch/rack01/rep", json.dumps(other_rack).encode()),   # rack02's rep on rack01's topic
             Message("rackwatch/rack01/availability", b"maybe"), Message("rackwatch/rack01/panic", b"{}"),
             Message("rackwatch/rack01/state", b"\xff\xfe"), message(good)]
    result = store.ingest(batch)
    assert (result.stored, result.invalid) == (1, 6)
    count, kept = store.invalid_messages()
    assert count == 6
    errors = " | ".join(m.error for m in kept)
    assert "verdict" in errors and "rack 'rack02' published on rack 'rack01'" in errors and "not UTF-8 JSON" in errors
    assert store.event_ids() == [good["id"]]


def test_commands_to_racks_are_not_taken_for_rack_messages(store):
    result = store.ingest([Message("rackwatch/rack01/cmd/identify", b'{"id": "c1"}')])
    assert (result.stored, result.invalid) == (0, 0)


def test_availability_and_the_newest_state_are_kept_on_the_rack(store):
    newer = samples.state("rack01", set_id="s1", reps_in_set=3)
    older = samples.state("rack01", set_id="s1", reps_in_set=1)
    older["time"] = "2020-01-01T00:00:00.000Z"   # a retained copy arriving late
    store.ingest([Message("rackwatch/rack01/availability", b"online"), message(newer), message(older)])
    rack = store.rack("rack01")
    assert rack["online"] is True and rack["state"]["reps_in_set"] == 3
    store.ingest([Message("rackwatch/rack01/availability", b"offline")])
    assert store.rack("rack01")["online"] is False


def test_a_cave_at_a_working_load_raises_an_alert_and_near_the_max_it_does_not(store):
    working = samples.rep("rack01", "s1", 1, "cave", load_kg=100, one_rm_kg=140)    # 71 %
    heavy = samples.rep("rack02", "s2", 1, "cave", load_kg=130, one_rm_kg=140)      # 93 %
    clean = samples.rep("rack03", "s3", 1, "clean", load_kg=100, one_rm_kg=140)
    result = store.ingest([message(working), message(heavy), message(clean)])
    assert [(a.rack, a.kind) for a in result.alerts] == [("rack01", "cave_at_working_load")]


def test_a_repeated_cave_in_a_set_raises_one_alert_however_often_it_is_delivered(store):
    reps = [samples.rep("rack01", "s1", n, "cave", load_kg=130, one_rm_kg=140) for n in (1, 2, 3)]
    store.ingest([message(r) for r in reps] + [message(reps[2])])
    repeated = [a for a in store.alerts() if a.kind == "repeated_cave"]
    assert len(repeated) == 1 and "3 reps" not in repeated[0].message   # raised at the second cave
    assert "2 reps" in repeated[0].message


def test_an_unhealthy_rack_raises_one_open_alert_until_acknowledged(store):
    store.ingest([message(samples.health("rack01", fps=14.9))])
    assert store.alerts() == []
    store.ingest([message(samples.health("rack01", fps=2.5, cpu_temp_c=84.0, throttled=True))])
    store.ingest([message(samples.health("rack01", fps=2.0))])   # still bad: the open alert stands for it
    alerts = store.alerts()
    assert len(alerts) == 1 and alerts[0].kind == "unhealthy"
    assert alerts[0].message == "Low frame rate (2.5 fps); hot CPU (84 °C); CPU throttled (power supply or heat)."
    assert store.acknowledge(alerts[0].id, "sam") is True
    assert store.acknowledge(alerts[0].id, "ada") is False   # the first acknowledgement is kept
    kept = store.alerts()[0]
    assert kept.acked_by == "sam" and kept.acked_at is not None
    store.ingest([message(samples.health("rack01", outbox_depth=60)), message(samples.health("rack01", outbox_depth=90))])
    assert "waiting to be sent" in store.alerts(open_only=True)[0].message


def test_events_lost_on_a_rack_or_its_full_disk_raise_an_unhealthy_alert(store):
    store.ingest([message(samples.health("rack01"))])
    store.ingest([message(samples.health("rack01", events_dropped=0, pump_failures=0))])
    assert store.alerts() == []                                      # counters at zero: nothing lost
    store.ingest([message(samples.health("rack01", events_dropped=3, pump_failures=1))])
    alerts = store.alerts()
    assert [a.kind for a in alerts] == ["unhealthy"]
    assert "3 more reps, sets, replies or movements not counted dropped" in alerts[0].message
    assert "1 more failures sending from the outbox" in alerts[0].message
    store.acknowledge(alerts[0].id, "sam")
    store.ingest([message(samples.health("rack01", events_dropped=3, pump_failures=1))])
    assert store.alerts(open_only=True) == []                        # the same counts again: no new loss
    store.ingest([message(samples.health("rack01", events_dropped=3, pump_failures=1, disk_full=True,
                                         events_in_memory=12))])
    [full] = store.alerts(open_only=True)
    assert full.message == "The rack's disk is full (12 events held in memory)."
    store.ingest([message(samples.health("rack02", events_refused=2))])   # the first report seen: since zero
    assert [a.message for a in store.alerts(open_only=True) if a.rack == "rack02"] == [
        "2 events the broker refused for good (its access list)."]
    assert store.rack("rack01")["health"]["disk_full"] is True       # what the health page shows


def test_a_rack_offline_past_the_grace_period_raises_one_alert(store):
    store.ingest([Message("rackwatch/rack01/availability", b"online")])
    store.ingest([Message("rackwatch/rack01/availability", b"offline")])
    assert store.raise_offline_alerts(grace_s=3600) == []           # not yet: it may be restarting
    alerts = store.raise_offline_alerts(grace_s=0)
    assert [a.kind for a in alerts] == ["offline"]
    assert store.raise_offline_alerts(grace_s=0) == []              # once per time it went offline


def test_sets_by_rack_and_day_with_filters(store):
    batch = [samples.rep("rack01", "s1", n, v) for n, v in ((1, "clean"), (2, "cave"))]
    batch += [samples.rep("rack02", "s2", n, "clean") for n in (1, 2, 3)]
    batch += [samples.set_summary("rack02", "s2", 3, 3, remarks=("Very wide stance.",))]
    store.ingest([message(e) for e in batch])
    today = utcnow().date()
    assert {(s["rack"], s["reps"], s["caves"]) for s in store.sets(day=today)} == {("rack01", 2, 1), ("rack02", 3, 0)}
    assert [s["rack"] for s in store.sets(rack="rack02")] == ["rack02"]
    assert [s["rack"] for s in store.sets(verdict="cave")] == ["rack01"]
    assert [s["rack"] for s in store.sets(verdict="clean")] == ["rack02"]
    assert store.sets(day=today - timedelta(days=1)) == []
    reps, summary = store.set_detail("rack02", "s2")
    assert [r.rep for r in reps] == [1, 2, 3] and summary.clean_reps == 3
    assert store.set_words(summary) == {"remarks": ["Very wide stance."], "cues": []}


def test_retention_deletes_old_events_with_what_was_drawn_from_them(store):
    old = samples.rep("rack01", "s0", 1, "clean")
    old["time"] = "2020-01-01T00:00:00.000Z"
    new = samples.rep("rack01", "s1", 1, "clean")
    store.ingest([message(old), message(new)])
    assert store.prune(keep_days=30) == 1
    assert store.event_ids() == [new["id"]] and [r.id for r in store.reps()] == [new["id"]]


def test_users_and_sign_ins(store):
    from rackwatch.dashboard.auth import hash_password, verify_password

    store.add_user("sam", "staff", hash_password("sam-password"))
    user = store.user("sam")
    assert user.password_hash.startswith("$argon2") and verify_password("sam-password", user.password_hash)
    assert not verify_password("wrong", user.password_hash)
    store.open_sign_in(user.id, "token-1", "csrf-1", hours=1)
    found, csrf = store.signed_in("token-1")
    assert found.name == "sam" and csrf == "csrf-1"
    store.add_user("sam", "admin", hash_password("new-password"))   # a new password ends the old sign-ins
    assert store.signed_in("token-1") is None and store.user("sam").role == "admin"


def test_two_stores_on_one_database_store_an_event_once(store_url):
    """Two dashboard processes sharing the ingestion and one database never store an event twice."""
    first, second = Store(store_url), Store(store_url)
    first.migrate()
    rep = samples.rep("rack01", "s1", 1, "cave", load_kg=100, one_rm_kg=140)
    a = first.ingest([message(rep)])
    b = second.ingest([message(rep)])
    assert (a.stored, b.stored, b.duplicates) == (1, 0, 1)
    assert len(first.alerts()) == 1
    first.close()
    second.close()


def test_a_movement_not_counted_is_stored_and_the_newest_comes_back_with_the_rack(store):
    at = datetime.now(timezone.utc).replace(microsecond=0)
    older = samples.not_counted("rack01", "jump", at=at - timedelta(seconds=30))
    newer = samples.not_counted("rack01", "step", set_id="set-a", at=at)
    other = samples.not_counted("rack02", "start_unseen", at=at - timedelta(seconds=60))
    result = store.ingest([Message("rackwatch/rack01/availability", b"online"), message(newer), message(older),
                           message(older), message(other)])
    assert (result.stored, result.duplicates, result.invalid) == (3, 1, 0)
    assert [m["id"] for m in store.not_counted("rack01")] == [newer["id"], older["id"]]   # newest first
    assert store.not_counted("rack01")[0]["time_utc"] == at.replace(tzinfo=None)   # the stored time, for the page
    rack = store.rack("rack01")
    assert rack["last_not_counted"] == newer and rack["last_not_counted_time"] == at.replace(tzinfo=None)
    assert {r["rack"]: r["last_not_counted"]["why"] for r in store.racks()} == {"rack01": "step",
                                                                              "rack02": "start_unseen"}
    assert store.rack_names() == ["rack01", "rack02"]


def test_the_movements_not_counted_are_read_by_the_index_not_by_scanning_the_events(store):
    if store.dialect != "sqlite":
        return   # the plan is SQLite's; the index's existence on both is checked with the migrations
    store.ingest([message(samples.not_counted("rack01")), message(samples.health("rack01"))])
    statements = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", keep)
    try:
        store.not_counted("rack01")
        store.rack("rack01")
        store.racks()
    finally:
        event.remove(store.engine, "before_cursor_execute", keep)
    on_events = [(sql, params) for sql, params in statements if "FROM events" in sql]
    assert len(on_events) == 3, statements
    with store.engine.connect() as conn:
        for sql, params in on_events:
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
            assert "ix_events_type_rack_time" in plan and "SCAN events" not in plan, (sql, plan)


def test_a_malformed_not_counted_event_is_refused_with_why_and_kept_aside(store):
    unknown_why = samples.not_counted("rack01") | {"why": "cartwheel"}
    no_reason = {k: v for k, v in samples.not_counted("rack01").items() if k != "reason"}
    smuggled = samples.not_counted("rack01") | {"video": "base64..."}
    on_the_rep_topic = samples.not_counted("rack01")
    batch = [message(unknown_why), message(no_reason), message(smuggled),
             Message("rackwatch/rack01/rep", json.dumps(on_the_rep_topic).encode())]
    result = store.ingest(batch)
    assert (result.stored, result.invalid) == (0, 4)
    errors = sorted(m.error for m in store.invalid_messages()[1])
    assert any(e.startswith("why: Input should be 'jump'") for e in errors), errors
    assert "reason: Field required" in errors and "video: Extra inputs are not permitted" in errors
    assert "type 'not_counted' on the rep topic" in errors
    assert store.event_ids() == []

"""What a tile shows (pure), and that a busy rack's updates reach a browser coalesced."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

from rackwatch.dashboard import samples
from rackwatch.dashboard.alerts import AlertRules
from rackwatch.dashboard.board import (NOT_COUNTED_SHOWN, Board, RackNews, empty_snapshot, fold, tile_view,
                                      verdict_colour)
from rackwatch.dashboard.store import Message, Store, check, utcnow

RULES = AlertRules()


def message(event) -> Message:
    return Message(f"rackwatch/{event['rack']}/{event['type']}", json.dumps(event).encode())


def snapshot(**fields):
    return {"rack": "rack01", "online": True, "state": None, "last_rep": None, "health": None,
            "health_time": None, **fields}


def test_each_verdict_has_its_colour_and_an_unjudged_rep_is_never_clean():
    assert verdict_colour(None) == "none"
    assert verdict_colour(samples.rep("r", "s", 1, "clean")) == "clean"
    assert verdict_colour(samples.rep("r", "s", 1, "minor")) == "minor"   # clean, with a minor cave
    assert verdict_colour(samples.rep("r", "s", 1, "note")) == "minor"
    assert verdict_colour(samples.rep("r", "s", 1, "cave")) == "cave"
    assert verdict_colour(samples.rep("r", "s", 1, "unjudged")) == "unjudged"
    assert verdict_colour({"verdict": "something new", "rep": 1}) == "unjudged"


def test_a_tile_shows_the_set_the_load_and_the_camera():
    state = samples.state("rack01", set_id="s1", reps_in_set=4, load_kg=100, one_rm_kg=140)
    now = utcnow()
    tile = tile_view(snapshot(state=state, last_rep=samples.rep("rack01", "s1", 4, "cave"),
                              health=samples.health("rack01"), health_time=now), RULES, now)
    assert (tile["status"], tile["activity"], tile["lifter_seen"], tile["reps"]) == ("online", "in set", True, 4)
    assert (tile["load"], tile["percent"], tile["verdict"]) == ("100 kg", "71.4 % of max", "cave")
    assert tile["camera"] == "camera ready" and not tile["attention"]
    slow = tile_view(snapshot(health=samples.health("rack01", fps=2.0), health_time=now), RULES, now)
    assert slow["attention"] and "low frame rate" in slow["camera"]
    quiet = tile_view(snapshot(health=samples.health("rack01"), health_time=now - timedelta(minutes=2)), RULES, now)
    assert quiet["attention"] and "no health report" in quiet["camera"]
    gone = tile_view(snapshot(online=False, state=state), RULES)
    assert (gone["status"], gone["activity"], gone["lifter_seen"]) == ("offline", "idle", False)


def test_a_tile_says_when_the_rack_finds_its_camera_needs_attention_and_why():
    now, health = utcnow(), samples.health("rack01")
    side = "The camera sees the lifter from the side: knee cave cannot be judged from there, only reps counted."
    state = samples.state("rack01", camera="needs attention", camera_reason=side)
    tile = tile_view(snapshot(state=state, health=health, health_time=now), RULES, now)
    assert tile["camera"] == f"camera needs attention: {side}" and tile["attention"]
    slow = tile_view(snapshot(state=state, health=samples.health("rack01", fps=2.0), health_time=now), RULES, now)
    assert slow["camera"].startswith(f"camera needs attention: {side}; ") and "low frame rate" in slow["camera"]
    ready = samples.state("rack01", camera="ready", camera_reason="camera ready")
    assert tile_view(snapshot(state=ready, health=health, health_time=now), RULES, now)["camera"] == "camera ready"
    gone = tile_view(snapshot(online=False, state=state, health=health, health_time=now), RULES, now)
    assert gone["camera"] == "—" and not gone["attention"]


def test_many_updates_of_one_rack_reach_a_browser_as_a_handful():
    async def scenario():
        board = Board(RULES, flush_s=0.2)
        browser = board.subscribe()
        flusher = asyncio.create_task(board.run(lambda view: f"<b>{view['reps']}</b>", lambda: ""))
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in range(100):   # a rack sending 100 states in one second
            state = samples.state("rack01", set_id="s1", reps_in_set=n)
            board.show([RackNews.of(check(message(state)))])
            await asyncio.sleep(0.01)
        received = []
        while loop.time() - start < 1.5:
            try:
                received.append(await asyncio.wait_for(browser.get(), timeout=0.5))
            except asyncio.TimeoutError:
                break
        flusher.cancel()
        return received

    received = asyncio.run(scenario())
    tiles = [json.loads(update.data)["tiles"] for update, frame in received if update.kind == "tiles"]
    assert all(frame.startswith(b"event: tiles\ndata: {") for update, frame in received if update.kind == "tiles")
    assert 2 <= len(tiles) <= 8                              # at most five a second, not a hundred
    assert tiles[-1] == [{"rack": "rack01", "html": "<b>99</b>", "event": tiles[-1][0]["event"]}]
    assert tiles[-1][0]["event"] is not None                 # the newest state, with its event id


def test_the_live_board_shows_what_the_store_keeps_whatever_the_order_and_repeats(tmp_path):
    """The board folds each message as it arrives, before it is stored; QoS 1 repeats and late copies (a retained
    state, a redelivery after a reconnect) must leave it showing what the store keeps for the rack."""
    import random

    t0 = datetime.now(timezone.utc) - timedelta(minutes=5)
    events = []
    for n in range(1, 7):
        at = t0 + timedelta(seconds=10 * n)
        events.append(samples.state("rack01", set_id="s1", reps_in_set=n - 1, phase="descent", at=at))
        events.append(samples.rep("rack01", "s1", n, ("clean", "cave", "minor")[n % 3], at=at + timedelta(seconds=2)))
        events.append(samples.state("rack01", set_id="s1", reps_in_set=n, at=at + timedelta(seconds=2)))
        events.append(samples.health("rack01", fps=14.0 + n, at=at + timedelta(seconds=3)))
        events.append(samples.not_counted("rack01", ("jump", "step")[n % 2], at=at + timedelta(seconds=5)))
    messages = [Message("rackwatch/rack01/availability", b"online")] + [message(e) for e in events]
    store = Store(f"sqlite:///{tmp_path / 'board.db'}")
    store.migrate()
    shuffled = random.Random(7)
    for _ in range(5):
        arrivals = messages[:1] + shuffled.sample(messages[1:], len(messages) - 1)
        arrivals += shuffled.sample(messages[1:], 8)                            # repeats, late
        board = Board(RULES)
        board.show(news for news in map(RackNews.of, map(check, arrivals)) if news is not None)
        store.ingest(arrivals)
        kept = store.rack("rack01")
        shown = board.snapshots["rack01"]
        for field in ("online", "state", "last_rep", "health", "health_time", "last_not_counted",
                      "last_not_counted_time"):
            assert shown[field] == kept[field], field
        assert tile_view(shown, RULES) == tile_view(kept, RULES)
        assert shown["last_rep"]["rep"] == 6 and shown["state"]["reps_in_set"] == 6


def test_news_of_a_broken_message_or_a_set_summary_changes_no_tile():
    broken = Message("rackwatch/rack01/state", b'{"type": "state"}')
    assert check(broken).error and RackNews.of(check(broken)) is None
    summary = samples.set_summary("rack01", "s1", reps=5, clean_reps=5)
    assert RackNews.of(check(message(summary))) is None
    snapshot = empty_snapshot("rack01")
    state = samples.state("rack01", reps_in_set=2)
    assert fold(snapshot, RackNews.of(check(message(state)))) == state["id"]
    assert snapshot["state"] == state


def test_a_busy_tile_waits_its_turn_but_a_rep_and_its_state_are_not_held_apart():
    """A rack's rep and the state sent with it may land in two flushes: the second goes at once. A third change
    within 0.4 s waits (coalesced), so a tile changes at most five times a second."""
    now = [100.0]
    board = Board(RULES, flush_s=0.2, clock=lambda: now[0])
    browser = board.subscribe()

    def flush_at(t: float, *events) -> list[str]:
        now[0] = 100.0 + t
        board.show(RackNews.of(check(message(e))) for e in events)
        asyncio.run(board._flush(lambda view: f"<b>{view['reps']}</b>", lambda: ""))
        sent = []
        while not browser.empty():
            update, _frame = browser.get_nowait()
            sent += [tile["event"] for tile in json.loads(update.data)["tiles"]]
        return sent

    rep = samples.rep("rack01", "s1", 1, "clean")
    state = samples.state("rack01", set_id="s1", reps_in_set=1)
    assert flush_at(0.0, rep) == [rep["id"]]
    assert flush_at(0.01, state) == [state["id"]]                  # the state sent with the rep: not held back
    third = samples.state("rack01", set_id="s1", reps_in_set=2)
    assert flush_at(0.05, third) == []                              # a third within 0.4 s waits its turn
    fourth = samples.state("rack01", set_id="s1", reps_in_set=3)
    assert flush_at(0.2, fourth) == []
    assert flush_at(0.39) == []
    assert flush_at(0.4) == [fourth["id"]]                          # then the newest, coalesced


def test_the_board_stops_when_cancelled_even_as_news_wakes_it():
    """Stopping the dashboard cancels the board's loop; news arriving at that very moment (a busy gym: every
    message wakes it) must not keep it running, or the dashboard never exits on Ctrl-C."""
    async def stops(turns: int) -> bool:
        board = Board(RULES)
        loop = asyncio.create_task(board.run(lambda view: "", lambda: ""))
        await asyncio.sleep(0.05)                       # waiting for news
        board.show([RackNews.of(check(message(samples.state("rack01"))))])
        for _ in range(turns):                          # the moment the news is taken in, turn by turn
            await asyncio.sleep(0)
        loop.cancel()
        done, _ = await asyncio.wait([loop], timeout=2)
        if not done:
            loop.cancel()
        return bool(done)

    assert all(asyncio.run(stops(turns)) for turns in range(6))


def test_a_tile_says_a_movement_was_not_counted_and_why_for_a_while():
    now = utcnow()
    jump = samples.not_counted("rack01", "jump")
    tile = tile_view(snapshot(last_not_counted=jump, last_not_counted_time=now - timedelta(seconds=5)), RULES, now)
    assert tile["not_counted"] == "not counted: a jump, not a squat"
    assert tile["not_counted_reason"] == samples.NOT_COUNTED_REASONS["jump"]
    assert tile["verdict"] == "none" and tile["activity"] == "idle"   # no rep, no set: still shown
    stale = tile_view(snapshot(last_not_counted=jump, last_not_counted_time=now - NOT_COUNTED_SHOWN), RULES, now)
    gone = tile_view(snapshot(online=False, last_not_counted=jump, last_not_counted_time=now), RULES, now)
    never = tile_view(snapshot(), RULES, now)
    assert stale["not_counted"] == gone["not_counted"] == never["not_counted"] == ""


def test_the_board_folds_the_newest_movement_not_counted_by_its_own_time():
    now = datetime.now(timezone.utc)
    older = samples.not_counted("rack01", "jump", at=now - timedelta(seconds=20))
    newer = samples.not_counted("rack01", "step", at=now)
    board = Board(RULES)
    board.show(RackNews.of(check(message(event))) for event in (newer, older))   # the older arrives late
    assert board.snapshots["rack01"]["last_not_counted"] == newer
    assert RackNews.of(check(message(newer))).leaf == "not_counted"


def test_a_rep_counted_after_the_movement_not_counted_hides_the_note():
    now = datetime.now(timezone.utc).replace(microsecond=0)
    jump = samples.not_counted("rack01", "jump", at=now - timedelta(seconds=30))
    before = samples.rep("rack01", "set-a", 1, at=now - timedelta(seconds=40))
    after = samples.rep("rack01", "set-a", 2, at=now - timedelta(seconds=10))
    board = Board(RULES)
    news = [Message("rackwatch/rack01/availability", b"online"), message(before), message(jump)]
    board.show(RackNews.of(check(m)) for m in news)
    shown = tile_view(board.snapshots["rack01"], RULES, now.replace(tzinfo=None))
    assert shown["not_counted"] == "not counted: a jump, not a squat"   # the rep before it does not hide it
    board.show([RackNews.of(check(message(after)))])
    tile = tile_view(board.snapshots["rack01"], RULES, now.replace(tzinfo=None))
    assert tile["verdict_text"] == "rep 2: clean"
    assert tile["not_counted"] == tile["not_counted_reason"] == ""   # a rep counted since: no "not counted" beside it

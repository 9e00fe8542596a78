"""What a tile shows (pure), and that a busy rack's updates reach a browser coalesced."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from rackwatch.dashboard import samples
from rackwatch.dashboard.alerts import AlertRules
from rackwatch.dashboard.board import Board, tile_view, verdict_colour
from rackwatch.dashboard.store import IngestResult, utcnow

RULES = AlertRules()


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
            board.apply(IngestResult(stored=1, racks={"rack01": snapshot(state=state)}, stored_events=[state]))
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

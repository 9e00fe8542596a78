"""The command-line options of ``rackwatch dashboard`` and ``rackwatch demo``.

Only the standard library here: ``rackwatch``'s CLI reads this module to build its parser on any machine, racks
included, where the dashboard's own packages are not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "rackwatch" / "dashboard.db"
ROLES = ("staff", "admin")


def add_dashboard_arguments(parser) -> None:
    """The ``dashboard`` subcommand's options (cli.py calls this)."""
    parser.add_argument("--db", default=str(DEFAULT_DB),
                        help=f"SQLite file or database URL, e.g. postgresql+psycopg://USER@HOST/DB (default {DEFAULT_DB})")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://HOST:PORT (default local 1883)")
    parser.add_argument("--username", help="broker username (default: $RACKWATCH_DASHBOARD_MQTT_USER)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to serve on (default 8080)")
    parser.add_argument("--retention-days", type=float, default=180.0,
                        help="delete events older than this many days (default 180)")
    parser.add_argument("--offline-grace", type=float, default=30.0, metavar="S",
                        help="alert when a rack has been offline this long (default 30 s)")
    parser.add_argument("--share", metavar="GROUP",
                        help="share the ingestion with other dashboard processes (MQTT 5 $share/GROUP/...)")
    parser.add_argument("--plain-http", action="store_true",
                        help="allow sign-in over plain HTTP on a non-loopback address (trusted networks only)")
    actions = parser.add_subparsers(dest="dashboard_action")
    user = actions.add_parser("user", help="manage dashboard users")
    user_actions = user.add_subparsers(dest="user_action", required=True)
    add = user_actions.add_parser("add", help="add a user, or set a new password and role for one")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="staff")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")




def add_demo_arguments(parser) -> None:
    """The ``demo`` subcommand's options."""
    parser.add_argument("--racks", type=int, default=4, help="racks to run (default 4; each runs the model)")
    parser.add_argument("--video", metavar="FILE|DIR",
                        help="clip or folder of clips to replay (default: the front-view clips of ../shared/footage)")
    parser.add_argument("--port", type=int, help="dashboard port (default 8080, or a free one when 8080 is taken)")
    parser.add_argument("--db", help="database (default: a SQLite file in a temporary folder)")


def add_loadtest_arguments(parser) -> None:
    """The ``loadtest`` subcommand's options."""
    parser.add_argument("--racks", type=int, default=100, help="simulated racks (default 100)")
    parser.add_argument("--seconds", type=float, default=30, help="how long they publish (default 30)")
    parser.add_argument("--clients", type=int, default=50, help="browser-like stream clients (default 50)")
    parser.add_argument("--broker", help="mqtt://HOST:PORT of a running broker (default: a private Mosquitto)")
    parser.add_argument("--url", help="URL of a running dashboard (default: one started for the test)")
    parser.add_argument("--db", help="that dashboard's database, to count what it stored")
    parser.add_argument("--user", help="a sign-in of that dashboard, for its streams")
    parser.add_argument("--password", help="its password")
    parser.add_argument("--json", action="store_true", help="print one JSON object")

"""The gym staff's dashboard: every rack at a glance, alerts, history, rack actions.

It runs on a gym's server (or a laptop), never on a rack: it is installed with the ``dashboard`` extra
(``pip install rackwatch[dashboard]``) and no module of the rack imports it. The parts, in the order a message
travels through them:

``ingest``    an MQTT 5 subscriber (aiomqtt) that takes every message under ``rackwatch/+/#``, checks it against
              the contract (``rackwatch.contract``), and hands it to the store;
``store``     SQLAlchemy 2 tables (SQLite file by default, PostgreSQL by URL), migrated by Alembic at start;
              events stored once by id; invalid messages kept aside; alerts raised by ``alerts``;
``board``     the live tiles in memory, pushed to browsers as server-sent events, coalesced per tile;
``web``       the FastAPI app: sign-in, board, alerts, history, CSV, health, rack actions;
``server``    ``rackwatch dashboard``: the app and the ingester in one process;
``demo``      ``rackwatch demo``: a broker, several racks replaying footage, and the dashboard.

The dashboard reads the JSON on the wire, as any consumer of the contract does.
"""

-- nb-management schema, SQLite. Times are milliseconds since the Unix epoch.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Bumped by every change to services; proxies' streams follow it.
CREATE TABLE revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);

CREATE TABLE services (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE proxies (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    token_hash        TEXT NOT NULL UNIQUE,
    created_at        INTEGER NOT NULL,
    last_seen         INTEGER,
    version           TEXT,
    supports_crowdsec INTEGER NOT NULL DEFAULT 0,
    report            TEXT
);

CREATE TABLE events (
    id               INTEGER PRIMARY KEY,
    ts               INTEGER NOT NULL,
    proxy_id         TEXT NOT NULL,
    service_id       TEXT NOT NULL,
    protocol         TEXT NOT NULL,
    source_ip        TEXT NOT NULL,
    host             TEXT,
    method           TEXT,
    path             TEXT,
    status           INTEGER,
    duration_ms      REAL NOT NULL,
    bytes_in         INTEGER NOT NULL,
    bytes_out        INTEGER NOT NULL,
    deny_reason      TEXT NOT NULL,
    crowdsec_verdict TEXT NOT NULL,
    crowdsec_mode    TEXT NOT NULL,
    metadata         TEXT NOT NULL
);
-- Every query pages newest first by (ts, id); each filter has an index ending in that order.
CREATE INDEX events_by_time ON events (ts, id);
CREATE INDEX events_by_service ON events (service_id, ts, id);
CREATE INDEX events_by_deny_reason ON events (deny_reason, ts, id);
CREATE INDEX events_by_source ON events (source_ip, ts, id);
CREATE INDEX events_by_crowdsec_mode ON events (crowdsec_mode, ts, id);

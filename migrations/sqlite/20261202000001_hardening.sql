-- A proxy is live only while its stream is open: the stream marks it seen (last_seen) and,
-- when it ends, closed. Reports no longer count as being seen.
ALTER TABLE proxies ADD COLUMN stream_closed_at INTEGER;
-- Access-log lines management refused (oversized fields, bad lines), counted per proxy.
ALTER TABLE proxies ADD COLUMN events_rejected INTEGER NOT NULL DEFAULT 0;

-- What each service claims (an HTTP host, a TCP listen address), unique across services, so
-- that a write checks for conflicts without reading every service. Filled by nb-management at
-- start from the services already stored.
CREATE TABLE service_routes (
    kind       TEXT NOT NULL,
    route      TEXT NOT NULL,
    service_id TEXT NOT NULL,
    PRIMARY KEY (kind, route)
);
CREATE INDEX service_routes_by_service ON service_routes (service_id);

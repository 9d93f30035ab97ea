-- Events at scale: the overview's aggregates kept as events arrive, the country of denied
-- clients, and indexes that allowed traffic (most of it) does not pay for.

-- The country of a denied or flagged client (ISO 3166-1 alpha-2), when the proxy has a GeoIP
-- database; '' when unknown.
ALTER TABLE events ADD COLUMN country TEXT NOT NULL DEFAULT '';

-- Events are looked up by deny reason and by CrowdSec mode only for denied or flagged ones:
-- index those alone. Queries repeat the condition so that SQLite can use the partial index.
DROP INDEX events_by_deny_reason;
CREATE INDEX events_by_deny_reason ON events (deny_reason, ts, id) WHERE deny_reason <> '';
DROP INDEX events_by_crowdsec_mode;
CREATE INDEX events_by_crowdsec_mode ON events (crowdsec_mode, ts, id) WHERE crowdsec_mode <> '';

-- Source addresses are indexed within their hour (ts / 3600000 first): each batch then writes
-- the index pages of one hour instead of pages all over the index, which halved ingestion at
-- 10M events. A page filtered by source is read hour by hour, newest first.
DROP INDEX events_by_source;
CREATE INDEX events_by_source ON events (ts / 3600000, source_ip, ts, id);

-- Requests by time bucket, service and verdict, at three widths (seconds): 60 for the last
-- hour, 900 for the last day, 3600 for the last week. `verdict` is 'allow' or the deny reason.
CREATE TABLE event_counts (
    resolution       INTEGER NOT NULL,
    bucket           INTEGER NOT NULL,
    service_id       TEXT NOT NULL,
    verdict          TEXT NOT NULL,
    crowdsec_mode    TEXT NOT NULL,
    crowdsec_verdict TEXT NOT NULL,
    n                INTEGER NOT NULL,
    PRIMARY KEY (resolution, bucket, service_id, verdict, crowdsec_mode, crowdsec_verdict)
) WITHOUT ROWID;

-- Denied requests ('denied') and requests CrowdSec flagged in observe mode ('observed') by
-- source address, per hour (3600), six hours (21600) and day (86400): the top lists (of the
-- last hour, day and week, rounded out to those widths) and what switching a
-- service to enforce would change, per service and under '*' for all of them. Keyed so that
-- a top list reads one service's rows of the buckets it covers, and nothing else. `country` is
-- the source's last known one.
CREATE TABLE event_sources (
    resolution INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    service_id TEXT NOT NULL,
    bucket     INTEGER NOT NULL,
    source_ip  TEXT NOT NULL,
    country    TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (resolution, kind, service_id, bucket, source_ip)
) WITHOUT ROWID;

-- The same requests by country ('' when unknown).
CREATE TABLE event_countries (
    resolution INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    service_id TEXT NOT NULL,
    bucket     INTEGER NOT NULL,
    country    TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (resolution, kind, service_id, bucket, country)
) WITHOUT ROWID;

-- The events already stored, counted once.
INSERT INTO event_counts
SELECT r.s, (e.ts / (r.s * 1000)) * (r.s * 1000), e.service_id,
       CASE e.deny_reason WHEN '' THEN 'allow' ELSE e.deny_reason END,
       e.crowdsec_mode, e.crowdsec_verdict, COUNT(*)
FROM events e, (SELECT 60 AS s UNION ALL SELECT 900 UNION ALL SELECT 3600) r
GROUP BY 1, 2, 3, 4, 5, 6;

-- Each source once per service, and once under '*' for all services.
INSERT INTO event_sources
SELECT r.s, CASE WHEN e.deny_reason <> '' THEN 'denied' ELSE 'observed' END,
       e.service_id, (e.ts / (r.s * 1000)) * (r.s * 1000), e.source_ip, '', COUNT(*)
FROM events e, (SELECT 3600 AS s UNION ALL SELECT 21600 UNION ALL SELECT 86400) r
WHERE e.deny_reason <> '' OR (e.crowdsec_mode = 'observe' AND e.crowdsec_verdict <> '')
GROUP BY 1, 2, 3, 4, 5;
INSERT INTO event_sources
SELECT r.s, CASE WHEN e.deny_reason <> '' THEN 'denied' ELSE 'observed' END,
       '*', (e.ts / (r.s * 1000)) * (r.s * 1000), e.source_ip, '', COUNT(*)
FROM events e, (SELECT 3600 AS s UNION ALL SELECT 21600 UNION ALL SELECT 86400) r
WHERE e.deny_reason <> '' OR (e.crowdsec_mode = 'observe' AND e.crowdsec_verdict <> '')
GROUP BY 1, 2, 3, 4, 5;
-- Events stored before had no country.
INSERT INTO event_countries
SELECT resolution, kind, service_id, bucket, '', CAST(SUM(n) AS INTEGER) FROM event_sources
GROUP BY resolution, kind, service_id, bucket;

-- Proxy groups: each proxy belongs to one group, each service targets one or more, and a proxy
-- is sent only the services of its group. Everything starts in 'default'.
ALTER TABLE proxies ADD COLUMN group_name TEXT NOT NULL DEFAULT 'default';
-- A JSON array of group names.
ALTER TABLE services ADD COLUMN groups TEXT NOT NULL DEFAULT '["default"]';

-- sqltrack-core schema, SQLite dialect. The schema is public API: users write SQL against it.
-- Timestamps are ISO 8601 text in UTC ('2026-11-28T05:06:21.123Z'); JSON columns hold JSON text.

CREATE TABLE experiments (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    comment     TEXT,
    tags        JSON NOT NULL DEFAULT '[]',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    uuid          TEXT NOT NULL UNIQUE,
    experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    name          TEXT,
    status        TEXT NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at    TEXT,
    ended_at      TEXT,
    heartbeat_at  TEXT,
    params        JSON NOT NULL DEFAULT '{}',
    env           JSON NOT NULL DEFAULT '{}',
    tags          JSON NOT NULL DEFAULT '[]',
    comment       TEXT,
    owner         TEXT
);
CREATE INDEX runs_experiment_id_idx ON runs (experiment_id);

-- One row per run and step; one typed column per metric is added on the fly.
-- run_id has no foreign key: its per-row check cost a large share of ingest time, and only
-- the writer inserts here, always for a run it created. A trigger keeps ON DELETE CASCADE.
CREATE TABLE metrics (
    run_id     INTEGER NOT NULL,
    step       INTEGER NOT NULL,
    logged_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    extra      JSON,
    PRIMARY KEY (run_id, step)
);

CREATE TRIGGER runs_delete_metrics AFTER DELETE ON runs
BEGIN
    DELETE FROM metrics WHERE run_id = OLD.id;
END;

-- Logged key -> column of metrics, with the column's SQL type.
CREATE TABLE metric_columns (
    key          TEXT NOT NULL UNIQUE,
    column_name  TEXT NOT NULL UNIQUE,
    sql_type     TEXT NOT NULL,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE run_links (
    from_run_id  INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind <> ''),
    to_run_id    INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    evidence     JSON NOT NULL DEFAULT '{}',
    PRIMARY KEY (from_run_id, kind, to_run_id)
);
CREATE INDEX run_links_to_run_id_idx ON run_links (to_run_id);

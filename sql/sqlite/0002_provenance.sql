-- Provenance (issue 3): the checkpoints each run registered, and per-tensor content
-- fingerprints of their weights. A fingerprint is `produced` by its run only if the run changed
-- that tensor (its hash is not among the run's own 'initial' weights), so shared random inits
-- and frozen parts credit nobody but the run that made them. Booleans are 0/1.

CREATE TABLE checkpoints (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step        INTEGER,
    path        TEXT,
    kind        TEXT NOT NULL DEFAULT 'checkpoint'
                CHECK (kind IN ('checkpoint', 'final', 'initial')),
    token       JSON NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX checkpoints_run_id_idx ON checkpoints (run_id);

CREATE TABLE tensor_fingerprints (
    checkpoint_id  INTEGER NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    hash           TEXT NOT NULL,
    dtype          TEXT NOT NULL,
    shape          JSON NOT NULL,
    numel          INTEGER NOT NULL,
    sampled        BOOLEAN NOT NULL DEFAULT 0 CHECK (sampled IN (0, 1)),
    produced       BOOLEAN NOT NULL CHECK (produced IN (0, 1)),
    PRIMARY KEY (checkpoint_id, name)
);
CREATE INDEX tensor_fingerprints_hash_idx ON tensor_fingerprints (hash);

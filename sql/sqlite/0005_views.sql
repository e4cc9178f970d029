-- Saved views (issue 15): named selections of runs, shared by everyone who reads this database
-- (`Tracker.save_view`, `sqltrack views`). `definition` is a JSON object with the keys
-- experiment, params, varying, metrics, where, args, order_by and limit: the arguments of
-- `Tracker.runs`. `owner` is who saved the name first; replacing a view keeps it.
CREATE TABLE views (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (name <> ''),
    definition  JSON NOT NULL CHECK (json_valid(definition) AND json_type(definition) = 'object'),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    owner       TEXT
);

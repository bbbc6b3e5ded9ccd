-- taskspool's schema on PostgreSQL, migration 1: the tables the engine's claims, leases and
-- schedule fires need. `{schema}` is the schema the user chose (checked to be a plain
-- identifier, then quoted). A task keeps the columns that are indexed or locked on as
-- columns, and the rest of its record in `record`: postcard in a version envelope, as every
-- record the library stores.

-- The processes that own attempts: a lease each, kept alive by a heartbeat. A rescuer requeues
-- the attempts of a process whose lease has expired.
CREATE TABLE {schema}.processes (
    id           bigserial   PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lease_ms     bigint      NOT NULL
);

CREATE TABLE {schema}.tasks (
    id         bigserial PRIMARY KEY,
    name       text      NOT NULL,
    queue      text      NOT NULL,
    priority   smallint  NOT NULL,
    -- `TaskState::code`: 0 scheduled, 1 ready, 2 running, 3 retrying, 4 succeeded, 5 failed,
    -- 6 revoked, 7 expired, 8 waiting.
    state      smallint  NOT NULL,
    -- When a scheduled or retrying task is due, on the spool's clock (ms since the epoch).
    due_at_ms  bigint    NOT NULL,
    -- Attempts claimed so far (an attempt given back uncounted is subtracted again).
    attempts    integer  NOT NULL DEFAULT 0,
    max_retries integer  NOT NULL DEFAULT 3,
    -- The retries it was enqueued with: a manual retry gives a fresh budget of these.
    base_retries integer NOT NULL DEFAULT 3,
    -- The process running its current attempt (while `state` is running).
    owner       bigint   REFERENCES {schema}.processes (id) ON DELETE SET NULL,
    -- A revoke was asked while an attempt ran: however the attempt ends (or is rescued),
    -- the task ends revoked.
    revoke_requested boolean NOT NULL DEFAULT false,
    -- When the current attempt's handler started (on the spool's clock); NULL while it was
    -- only claimed, so that a rescue gives an attempt that never started back uncounted.
    started_at_ms  bigint,
    finished_at_ms bigint,
    -- When it expires if it has not started by then (`Options::expires`).
    expires_at_ms  bigint,
    -- When it was enqueued, and the periodic schedule that enqueued it: what listings filter
    -- on (`TaskFilter`).
    enqueued_at_ms bigint NOT NULL,
    schedule       text,
    -- The JSON arguments (NULL once it succeeded: the output replaces them) and the JSON
    -- output of a success, as stored by the file engine; bytes, so that they read back
    -- exactly (`convert_from(payload, 'UTF8')::json` shows them in SQL).
    payload     bytea,
    output      bytea,
    -- The handler's latest progress (JSON, `Context::progress`), kept after the attempt.
    progress    bytea,
    record      bytea    NOT NULL,
    -- Workflows (chains, groups with callbacks, chords): the id of the workflow's first task
    -- (NULL for a task of none); how many of the tasks it waits for have not ended (it waits,
    -- state 8, while any have not); whether it runs however they ended (`after_settled`).
    workflow     bigint,
    parents_left integer NOT NULL DEFAULT 0,
    settled      boolean NOT NULL DEFAULT false,
    -- The tasks whose outputs it receives, in order, as runs of consecutive ids:
    -- first, count, first, count, ... (a chord's body of a million members has one run).
    inputs       bigint[],
    -- The tasks that wait for it or read its output: the steps after it, the callbacks it
    -- fired.
    children     bigint[],
    -- Its final state is followed up: it belongs to a workflow, or has callbacks (in its
    -- record). False for every other task, so that their ends cost nothing more.
    follows      boolean NOT NULL DEFAULT false,
    -- Flow limits (`limits`): the key its type's per-key limit counts it under; whether it
    -- is parked (ready, passed over by claims while its key is at that limit, until a claim
    -- of its type finds room again); whether its current attempt was claimed under a
    -- concurrency limit (its end then wakes every process: a slot of that limit is free).
    limit_key    text,
    parked       boolean NOT NULL DEFAULT false,
    limited      boolean NOT NULL DEFAULT false
);
CREATE INDEX tasks_workflow ON {schema}.tasks (workflow, id) WHERE workflow IS NOT NULL;

-- Each workflow: how many of its tasks are not final yet, and when the last one became
-- final. Its results are kept for the results TTL after the whole workflow ended, so a
-- chain's first output is there as long as its last step's. Gone with its first task.
CREATE TABLE {schema}.workflows (
    base        bigint PRIMARY KEY,
    left_count  bigint NOT NULL,
    ended_at_ms bigint
);

-- Flow limits (`Spool::limit`) on a task type (kind 0) or a queue (kind 1): a rate (count
-- per period, burst), a concurrency, and for a task type a concurrency per key. A claim of a
-- limited target locks its row until it commits, so every limit holds exactly across every
-- process; `tat` is the rate's state (the generic cell rate algorithm's theoretical arrival
-- time, in ns since the epoch times the rate's count).
CREATE TABLE {schema}.limits (
    kind        smallint NOT NULL,
    name        text     NOT NULL,
    rate_count  bigint,
    rate_per_ms bigint,
    rate_burst  bigint,
    concurrency integer,
    per_key     integer,
    tat         numeric  NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, name)
);

-- The processes with subscribers to lifecycle events (`Spool::events`): while there are any,
-- every change notifies its events on the schema's events channel, for all of them; while
-- there are none, nothing is notified. Gone with their process's lease.
CREATE TABLE {schema}.event_listeners (
    process bigint PRIMARY KEY REFERENCES {schema}.processes (id) ON DELETE CASCADE
);

-- The paused queues (`Spool::pause_queue`): no process claims their tasks until they are
-- resumed; their tasks still expire.
CREATE TABLE {schema}.paused_queues (
    queue text PRIMARY KEY
);

-- A chord stored in parts, not sealed yet: the ids it reserved (from `base` on, its body's
-- the last) and the process storing it. Its members wait for the seal; if that process's
-- lease is rescued first, they are deleted with this row.
CREATE TABLE {schema}.open_chords (
    base    bigint PRIMARY KEY,
    count   bigint NOT NULL,
    process bigint NOT NULL REFERENCES {schema}.processes (id) ON DELETE CASCADE
);

-- Every attempt's error, in order (`AttemptError`; `kind` is `AttemptErrorKind::code`). An
-- attempt may have two (a failure, then a revoke before the retry ran).
CREATE TABLE {schema}.attempt_errors (
    id      bigserial PRIMARY KEY,
    task    bigint   NOT NULL REFERENCES {schema}.tasks (id) ON DELETE CASCADE,
    attempt integer  NOT NULL,
    at_ms   bigint   NOT NULL,
    kind    smallint NOT NULL,
    message text     NOT NULL
);
CREATE INDEX attempt_errors_task ON {schema}.attempt_errors (task, id);

-- Claims: the ready tasks of each (queue, task name) a pool serves, higher priority first,
-- then older — the heads of these runs are merged (FOR UPDATE SKIP LOCKED), so tasks of a
-- name no pool knows never stand in the way.
CREATE INDEX tasks_ready ON {schema}.tasks (queue, name, priority DESC, id)
    WHERE state = 1 AND NOT parked;
-- Parked tasks, by task name and key, in claim order: what a claim moves back when their key
-- has room (a claim never walks past them: a backlog of one key costs the others nothing).
CREATE INDEX tasks_parked ON {schema}.tasks (name, limit_key, priority DESC, id)
    WHERE parked AND state = 1;
-- Promotion of due work, and the next due time to sleep until.
CREATE INDEX tasks_due ON {schema}.tasks (due_at_ms) WHERE state IN (0, 3);
-- Listings by state, and the attempts of a process whose lease expired.
CREATE INDEX tasks_state ON {schema}.tasks (state, id);
CREATE INDEX tasks_owner ON {schema}.tasks (owner) WHERE state = 2;
-- The results TTL: finished tasks (succeeded, failed, revoked, expired), oldest first.
CREATE INDEX tasks_finished ON {schema}.tasks (finished_at_ms) WHERE state IN (4, 5, 6, 7);
-- Expiry of what has not started (scheduled, ready, retrying).
CREATE INDEX tasks_expiry ON {schema}.tasks (expires_at_ms)
    WHERE expires_at_ms IS NOT NULL AND state IN (0, 1, 3);

CREATE TABLE {schema}.schedules (
    name         text   PRIMARY KEY,
    next_fire_ms bigint,
    record       bytea  NOT NULL
);

-- Exactly-once fires across processes: a fire is inserted in the transaction that advances
-- its schedule, and a second process's insert of the same (schedule, fire time) conflicts.
CREATE TABLE {schema}.schedule_fires (
    schedule text   NOT NULL,
    fire_ms  bigint NOT NULL,
    task     bigint NOT NULL,
    PRIMARY KEY (schedule, fire_ms)
);

-- Unique keys (`Options::unique`), by task name: the task that took each. Whether it still
-- holds it is decided when another task asks for the key, under the key's row lock: until
-- `until_ms` whatever its state (`Unique::For`), else until its first attempt starts
-- (`until_started`), else until it is final. A key goes with its task (pruned, forgotten).
-- The reference is checked at commit: a key is taken before its task's row is inserted.
CREATE TABLE {schema}.unique_keys (
    name          text    NOT NULL,
    key           text    NOT NULL,
    task          bigint  NOT NULL REFERENCES {schema}.tasks (id) ON DELETE CASCADE
                          DEFERRABLE INITIALLY DEFERRED,
    until_ms      bigint,
    until_started boolean NOT NULL,
    PRIMARY KEY (name, key)
);
CREATE INDEX unique_keys_task ON {schema}.unique_keys (task);

-- The pools each live process runs: what `stats` lists in any process, and what decides that
-- a ready task is `unregistered` (a pool serves its queue, none knows its name). Gone with
-- their process's lease.
CREATE TABLE {schema}.pools (
    process     bigint  NOT NULL REFERENCES {schema}.processes (id) ON DELETE CASCADE,
    pool        bigint  NOT NULL,
    queues      text[]  NOT NULL,
    names       text[]  NOT NULL,
    concurrency integer NOT NULL,
    PRIMARY KEY (process, pool)
);

//! Claims under flow limits on PostgreSQL: rates, concurrency limits and per-key limits held
//! exactly across every process. A claim first tries the plain claim (`claim`), which claims
//! nothing when a limit applies to its pairs; then, in one transaction, it locks the rows of
//! the limits that apply (in key order, so claimers never deadlock), counts what runs under
//! them — every claim of a limited target waits for that lock, so nothing it counts can
//! change under it but ends, which only leave more room — and admits the ready tasks one by
//! one in claim order, as the file engine's writer does (`store::flow`): a rate's bucket
//! (`flow::Bucket`) lets a claim go or says when the next will; a task whose key is at its
//! type's per-key limit is parked — passed over by every claim after it, so a backlog of one
//! key costs the others nothing — until a claim of its type finds its key has room again.
//!
//! An attempt claimed under a concurrency limit is marked `limited`: its end wakes every
//! process (`complete`), since a slot of that limit is free for any of them.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::Error;
use crate::flow::{Bucket, LimitTarget, Rate};
use crate::store::pg::claim::{
    CLAIMED, Claimed, Lock, READY, RUNNING, claim_unlimited, claimed_from,
};
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::notify::{listening, task_event};
use crate::store::pg::sql::Sql;

/// Most tasks one claim parks: the rest are parked by the claims that follow at once (see
/// [`Claim::again`]), so no transaction grows with the backlog.
const PARK_BUDGET: usize = 1_024;

/// Candidates read beyond a claim's free slots, for those its limits pass over.
const SLACK: usize = 64;

/// What a claim gave.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    pub(crate) claimed: Vec<Claimed>,
    /// A limit applied to the pairs: the next claim for them may go to the limits at once.
    pub(crate) limited: bool,
    /// The earliest time, in ms, a claim a rate refused could go.
    pub(crate) wake_at_ms: Option<u64>,
    /// It stopped parking at its budget: claim again at once.
    pub(crate) again: bool,
}

/// Claims at most `max` ready tasks of the (queue, name) pairs in `serves` for process
/// `owner` at `now_ms`, under the flow limits that apply to them. `limited` says a limit
/// applied to the last claim for these pairs: the claim then goes to the limits at once
/// (else it tries the plain claim first, which says whether one applies).
///
/// # Errors
/// `Storage` on a failure of the server, or for a limit's row that is not valid.
pub(crate) fn claim(
    db: &mut impl Sql,
    schema: &SchemaName,
    serves: &[(String, String)],
    max: usize,
    who: (u64, u64),
    (lock, limited): (Lock, bool),
) -> Result<Claim, Error> {
    if !limited && let Some(claimed) = claim_unlimited(db, schema, serves, max, who, lock)? {
        return Ok(Claim {
            claimed,
            ..Claim::default()
        });
    }
    if serves.is_empty() || max == 0 {
        return Ok(Claim::default());
    }
    let mut tx = db.transaction().map_err(pg("begin a claim under limits"))?;
    let claim = claim_limited(&mut tx, schema, serves, max, who, lock)?;
    tx.commit().map_err(pg("commit a claim under limits"))?;
    Ok(claim)
}

/// A limit's rules as its row holds them, with what this claim counted under it.
#[derive(Debug)]
struct Rules {
    rate: Option<Rate>,
    concurrency: Option<u32>,
    per_key: Option<u32>,
    bucket: Bucket,
    /// The bucket counted a claim: its row is written back.
    taken: bool,
    /// Running now, and admitted by this claim.
    running: u32,
    /// Nothing more of it goes in this claim (at its concurrency, or refused by its rate).
    blocked: bool,
}

impl Rules {
    fn full(&self) -> bool {
        self.concurrency.is_some_and(|c| self.running >= c)
    }
}

/// The limits of a claim's targets, locked.
struct Limits {
    rules: HashMap<LimitTarget, Rules>,
    /// Running and admitted per (task name, key), for the names with a per-key limit.
    keys: HashMap<(String, String), u32>,
    wake_at_ms: Option<u64>,
}

impl Limits {
    fn of(&self, queue: &str, name: &str) -> [Option<&Rules>; 2] {
        [
            self.rules.get(&LimitTarget::Queue(queue.to_string())),
            self.rules.get(&LimitTarget::Task(name.to_string())),
        ]
    }

    fn blocked(&self, queue: &str, name: &str) -> bool {
        self.of(queue, name)
            .into_iter()
            .flatten()
            .any(|r| r.blocked)
    }

    /// Admits one claim of `name` on `queue` at `now_ms` if neither target is at its
    /// concurrency and both rates let it go (each then counts it); else blocks the target
    /// that refused it. Returns whether it was admitted, and whether under a concurrency
    /// limit.
    fn admit(&mut self, queue: &str, name: &str, now_ms: u64) -> Option<bool> {
        let targets = [
            LimitTarget::Queue(queue.to_string()),
            LimitTarget::Task(name.to_string()),
        ];
        for target in &targets {
            let Some(rules) = self.rules.get_mut(target) else {
                continue;
            };
            if rules.full() {
                rules.blocked = true;
                return None;
            }
            if let Some(rate) = rules.rate
                && let Err(at_ms) = rules.bucket.check(&rate, now_ms)
            {
                rules.blocked = true;
                self.wake_at_ms = Some(self.wake_at_ms.map_or(at_ms, |w| w.min(at_ms)));
                return None;
            }
        }
        let mut limited = false;
        for target in &targets {
            if let Some(rules) = self.rules.get_mut(target) {
                if let Some(rate) = rules.rate {
                    rules.bucket.take(&rate, now_ms);
                    rules.taken = true;
                }
                rules.running += 1;
                limited |= rules.concurrency.is_some();
            }
        }
        Some(limited)
    }
}

/// A ready task a claim under limits looks at.
struct Candidate {
    id: i64,
    name: String,
    queue: String,
    key: Option<String>,
}

/// The claim under limits, in the caller's transaction.
fn claim_limited(
    tx: &mut impl Sql,
    schema: &SchemaName,
    serves: &[(String, String)],
    max: usize,
    (owner, now_ms): (u64, u64),
    lock: Lock,
) -> Result<Claim, Error> {
    let Some(mut limits) = lock_limits(tx, schema, serves)? else {
        // No limit applies any more: the plain claim (unless one was declared meanwhile).
        let claimed = claim_unlimited(tx, schema, serves, max, (owner, now_ms), lock)?;
        return Ok(Claim {
            limited: claimed.is_none(),
            claimed: claimed.unwrap_or_default(),
            ..Claim::default()
        });
    };
    count_running(tx, schema, &mut limits)?;
    unpark(tx, schema, &limits)?;
    let mut rows = Vec::new();
    let mut parked = 0;
    let mut again = false;
    while rows.len() < max {
        let open: Vec<&(String, String)> = serves
            .iter()
            .filter(|(queue, name)| !limits.blocked(queue, name))
            .collect();
        if open.is_empty() {
            break;
        }
        let want = max - rows.len();
        let read = want + SLACK;
        let candidates = candidates(tx, schema, &open, read, now_ms, lock)?;
        let exhausted = candidates.len() < read;
        let (mut admit, mut under_limit, mut park) = (Vec::new(), Vec::new(), Vec::new());
        for c in candidates {
            if admit.len() == want {
                break;
            }
            if limits.blocked(&c.queue, &c.name) {
                continue;
            }
            let per_key = limits.of(&c.queue, &c.name)[1].and_then(|r| r.per_key);
            let key = match (per_key, c.key) {
                (Some(limit), Some(key)) => {
                    let k = (c.name.clone(), key);
                    if limits.keys.get(&k).copied().unwrap_or(0) >= limit {
                        park.push(c.id);
                        continue;
                    }
                    Some(k)
                }
                _ => None,
            };
            if let Some(limited) = limits.admit(&c.queue, &c.name, now_ms) {
                under_limit.push(limited || key.is_some());
                if let Some(k) = key {
                    *limits.keys.entry(k).or_insert(0) += 1;
                }
                admit.push(c.id);
            }
        }
        parked += park.len();
        park_tasks(tx, schema, &park)?;
        rows.extend(mark_running(
            tx,
            schema,
            &admit,
            &under_limit,
            (owner, now_ms),
        )?);
        if parked >= PARK_BUDGET {
            again = true;
            break;
        }
        if exhausted {
            break;
        }
    }
    write_buckets(tx, schema, &limits)?;
    Ok(Claim {
        claimed: claimed_from(tx, schema, &rows)?,
        limited: true,
        wake_at_ms: limits.wake_at_ms,
        again,
    })
}

/// Locks the rows of the limits on the pairs' queues and task names, in key order; `None`
/// if there are none.
fn lock_limits(
    tx: &mut impl Sql,
    schema: &SchemaName,
    serves: &[(String, String)],
) -> Result<Option<Limits>, Error> {
    let q = schema.quoted();
    let queues: Vec<&str> = serves.iter().map(|(queue, _)| queue.as_str()).collect();
    let names: Vec<&str> = serves.iter().map(|(_, name)| name.as_str()).collect();
    let rows = tx
        .query(
            &format!(
                "SELECT kind, name, rate_count, rate_per_ms, rate_burst, concurrency, per_key,
                        tat::text
                 FROM {q}.limits
                 WHERE (kind = 0 AND name = ANY($2)) OR (kind = 1 AND name = ANY($1))
                 ORDER BY kind, name
                 FOR UPDATE"
            ),
            &[&queues, &names],
        )
        .map_err(pg("lock the flow limits"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut rules = HashMap::new();
    for r in &rows {
        let (target, limit) = row_limit(r)?;
        let tat: String = r.get(7);
        let tat = tat.parse::<u128>().map_err(|_| {
            Error::storage(format!(
                "the flow limits row of {target} holds a rate state that is not a whole \
                 number ({tat:?}); declare the limit again to reset it"
            ))
        })?;
        rules.insert(
            target,
            Rules {
                rate: limit.rate,
                concurrency: limit.concurrency,
                per_key: limit.per_key,
                bucket: Bucket(tat),
                taken: false,
                running: 0,
                blocked: false,
            },
        );
    }
    Ok(Some(Limits {
        rules,
        keys: HashMap::new(),
        wake_at_ms: None,
    }))
}

/// A limit's declared rules.
pub(crate) struct RowLimit {
    pub(crate) rate: Option<Rate>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) per_key: Option<u32>,
}

/// A `limits` row's target and rules (its first seven columns: kind, name, rate count,
/// period, burst, concurrency, per key), checked as a declaration is.
///
/// # Errors
/// `Storage` for a row no declaration could have written.
pub(crate) fn row_limit(r: &postgres::Row) -> Result<(LimitTarget, RowLimit), Error> {
    let name: String = r.get(1);
    let target = match r.get::<_, i16>(0) {
        0 => LimitTarget::Task(name),
        _ => LimitTarget::Queue(name),
    };
    let bad = |what: &str| {
        Error::storage(format!(
            "the flow limits row of {target} holds {what}; declare the limit again \
             (Spool::limit) or remove it"
        ))
    };
    let positive = |n: Option<i64>| n.map(|n| u32::try_from(n).ok().filter(|&n| n > 0));
    let parts: (Option<i64>, Option<i64>, Option<i64>) = (r.get(2), r.get(3), r.get(4));
    let rate = match parts {
        (Some(count), Some(per_ms), Some(burst)) => {
            let count = u32::try_from(count).map_err(|_| bad("a rate count out of range"))?;
            let per_ms = u64::try_from(per_ms).map_err(|_| bad("a negative period"))?;
            let burst = u32::try_from(burst).map_err(|_| bad("a burst out of range"))?;
            let rate = Rate::per(count, Duration::from_millis(per_ms))
                .and_then(|r| r.burst(burst))
                .map_err(|e| bad(&format!("a rate that is not valid ({e})")))?;
            Some(rate)
        }
        (None, None, None) => None,
        _ => return Err(bad("a rate with a part missing")),
    };
    let concurrency = positive(r.get::<_, Option<i32>>(5).map(i64::from))
        .map(|n| n.ok_or_else(|| bad("a concurrency under 1")))
        .transpose()?;
    let per_key = positive(r.get::<_, Option<i32>>(6).map(i64::from))
        .map(|n| n.ok_or_else(|| bad("a per-key limit under 1")))
        .transpose()?;
    Ok((
        target,
        RowLimit {
            rate,
            concurrency,
            per_key,
        },
    ))
}

/// Counts the attempts running under each locked limit (and under each key of a per-key
/// limit): a scan of the running tasks, as many as the slots of every process.
fn count_running(tx: &mut impl Sql, schema: &SchemaName, limits: &mut Limits) -> Result<(), Error> {
    let (mut names, mut queues) = (Vec::new(), Vec::new());
    for (target, rules) in &limits.rules {
        if rules.concurrency.is_none() && rules.per_key.is_none() {
            continue;
        }
        match target {
            LimitTarget::Task(name) => names.push(name.as_str()),
            LimitTarget::Queue(queue) => queues.push(queue.as_str()),
        }
    }
    if names.is_empty() && queues.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    let rows = tx
        .query(
            &format!(
                "SELECT name, queue, limit_key, count(*) FROM {q}.tasks
                 WHERE state = {RUNNING} AND (name = ANY($1) OR queue = ANY($2))
                 GROUP BY name, queue, limit_key"
            ),
            &[&names, &queues],
        )
        .map_err(pg("count the attempts running under limits"))?;
    for r in &rows {
        let (name, queue, key): (String, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
        let n = u32::try_from(r.get::<_, i64>(3)).unwrap_or(u32::MAX);
        if let Some(rules) = limits.rules.get_mut(&LimitTarget::Queue(queue)) {
            rules.running += n;
        }
        let name_rules = limits.rules.get_mut(&LimitTarget::Task(name.clone()));
        let per_key = name_rules.as_ref().and_then(|r| r.per_key);
        if let Some(rules) = name_rules {
            rules.running += n;
        }
        if let (Some(_), Some(key)) = (per_key, key) {
            *limits.keys.entry((name, key)).or_insert(0) += n;
        }
    }
    Ok(())
}

/// Moves back to `ready` the parked tasks of every key with room under its type's per-key
/// limit — as many as the room, first in claim order first. The keys with parked tasks are
/// found one index seek each; there are no more of them than attempts of their type ran
/// since the claims that parked them.
fn unpark(tx: &mut impl Sql, schema: &SchemaName, limits: &Limits) -> Result<(), Error> {
    let q = schema.quoted();
    for (target, rules) in &limits.rules {
        let (LimitTarget::Task(name), Some(limit)) = (target, rules.per_key) else {
            continue;
        };
        let keys: Vec<String> = tx
            .query(
                &format!(
                    "WITH RECURSIVE k(key) AS (
                         (SELECT limit_key FROM {q}.tasks
                          WHERE parked AND state = {READY} AND name = $1
                          ORDER BY limit_key LIMIT 1)
                         UNION ALL
                         SELECT (SELECT limit_key FROM {q}.tasks
                                 WHERE parked AND state = {READY} AND name = $1
                                     AND limit_key > k.key
                                 ORDER BY limit_key LIMIT 1)
                         FROM k WHERE k.key IS NOT NULL
                     )
                     SELECT key FROM k WHERE key IS NOT NULL"
                ),
                &[name],
            )
            .map_err(pg("find the keys of parked tasks"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (mut with_room, mut rooms) = (Vec::new(), Vec::new());
        for key in keys {
            let running = limits
                .keys
                .get(&(name.clone(), key.clone()))
                .copied()
                .unwrap_or(0);
            if running < limit {
                rooms.push(i64::from(limit - running));
                with_room.push(key);
            }
        }
        if with_room.is_empty() {
            continue;
        }
        tx.execute(
            &format!(
                "UPDATE {q}.tasks SET parked = false WHERE id IN (
                     SELECT t.id FROM unnest($2::text[], $3::int8[]) AS u(key, room)
                     CROSS JOIN LATERAL (
                         SELECT id FROM {q}.tasks
                         WHERE parked AND state = {READY} AND name = $1
                             AND limit_key = u.key
                         ORDER BY priority DESC, id
                         LIMIT u.room
                     ) AS t)"
            ),
            &[name, &with_room, &rooms],
        )
        .map_err(pg("move parked tasks back"))?;
    }
    Ok(())
}

/// The next `read` ready tasks of the `open` pairs (of queues not paused), in claim order,
/// locked as `lock` says.
fn candidates(
    tx: &mut impl Sql,
    schema: &SchemaName,
    open: &[&(String, String)],
    read: usize,
    now_ms: u64,
    lock: Lock,
) -> Result<Vec<Candidate>, Error> {
    let q = schema.quoted();
    let queues: Vec<&str> = open.iter().map(|(queue, _)| queue.as_str()).collect();
    let names: Vec<&str> = open.iter().map(|(_, name)| name.as_str()).collect();
    let read = i64::try_from(read).unwrap_or(i64::MAX);
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let lock = lock.sql();
    let rows = tx
        .query(
            &format!(
                "SELECT t.id, t.name, t.queue, t.limit_key
                 FROM (SELECT * FROM unnest($1::text[], $2::text[]) AS u(queue, name)
                       WHERE NOT EXISTS (SELECT 1 FROM {q}.paused_queues z
                                         WHERE z.queue = u.queue)) AS p
                 CROSS JOIN LATERAL (
                     SELECT id, priority, name, queue, limit_key FROM {q}.tasks
                     WHERE state = {READY} AND NOT parked
                         AND queue = p.queue AND name = p.name
                         AND (expires_at_ms IS NULL OR expires_at_ms > $4)
                     ORDER BY priority DESC, id
                     LIMIT $3
                     {lock}
                 ) AS t
                 ORDER BY t.priority DESC, t.id
                 LIMIT $3"
            ),
            &[&queues, &names, &read, &now],
        )
        .map_err(pg("read the tasks a claim under limits looks at"))?;
    Ok(rows
        .iter()
        .map(|r| Candidate {
            id: r.get(0),
            name: r.get(1),
            queue: r.get(2),
            key: r.get(3),
        })
        .collect())
}

/// Parks `ids` (ready tasks whose key is at its limit).
fn park_tasks(tx: &mut impl Sql, schema: &SchemaName, ids: &[i64]) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    tx.execute(
        &format!("UPDATE {q}.tasks SET parked = true WHERE id = ANY($1)"),
        &[&ids],
    )
    .map_err(pg("park tasks at their key's limit"))?;
    Ok(())
}

/// Makes `ids` running attempts of `owner` at `now_ms`, each marked `limited` as
/// `under_limit` says, and tells their starts; returns their [`CLAIMED`] rows.
fn mark_running(
    tx: &mut impl Sql,
    schema: &SchemaName,
    ids: &[i64],
    under_limit: &[bool],
    (owner, now_ms): (u64, u64),
) -> Result<Vec<postgres::Row>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let q = schema.quoted();
    let owner = i64::try_from(owner).unwrap_or(i64::MAX);
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    tx.query(
        &format!(
            "WITH claimed AS (
                 UPDATE {q}.tasks AS task
                 SET state = {RUNNING}, attempts = task.attempts + 1, owner = $2,
                     started_at_ms = NULL, limited = u.limited
                 FROM unnest($1::int8[], $3::bool[]) AS u(id, limited)
                 WHERE task.id = u.id
                 RETURNING {CLAIMED}
             ), told AS (
                 SELECT count(pg_notify($5, {event}))
                 FROM (SELECT * FROM claimed ORDER BY priority DESC, id) AS t
                 WHERE {listening}
             )
             SELECT claimed.* FROM claimed CROSS JOIN told",
            event = task_event(&q, "t", "'started'", "$4::int8", false),
            listening = listening(&q)
        ),
        &[&ids, &owner, &under_limit, &now, &schema.events_channel()],
    )
    .map_err(pg("claim tasks under limits"))
}

/// Writes back the state of every rate that counted a claim.
fn write_buckets(tx: &mut impl Sql, schema: &SchemaName, limits: &Limits) -> Result<(), Error> {
    let (mut kinds, mut names, mut tats) = (Vec::new(), Vec::new(), Vec::new());
    for (target, rules) in &limits.rules {
        if !rules.taken {
            continue;
        }
        let (kind, name) = match target {
            LimitTarget::Task(name) => (0i16, name.as_str()),
            LimitTarget::Queue(queue) => (1i16, queue.as_str()),
        };
        kinds.push(kind);
        names.push(name);
        tats.push(rules.bucket.0.to_string());
    }
    if kinds.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    tx.execute(
        &format!(
            "UPDATE {q}.limits AS l SET tat = u.tat::numeric
             FROM unnest($1::int2[], $2::text[], $3::text[]) AS u(kind, name, tat)
             WHERE l.kind = u.kind AND l.name = u.name"
        ),
        &[&kinds, &names, &tats],
    )
    .map_err(pg("keep the rates' state"))?;
    Ok(())
}

//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature), and for the tests
//! that replay their corpora. Each takes arbitrary bytes and must neither panic nor hang,
//! whatever they are; each also checks what must hold of what it accepts. Not a stable API.

use std::time::{Duration, UNIX_EPOCH};

use crate::options::Options;
use crate::schedule::{MisfirePolicy, Schedule, ScheduleDef, due_fires};

/// Decodes arbitrary bytes as a stored task record and a stored schedule record.
pub fn record(data: &[u8]) {
    crate::store::fuzz::record(data);
}

/// Reads arbitrary bytes as a write-ahead log, and decodes the rows it would replay.
pub fn log(data: &[u8]) {
    crate::store::fuzz::log(data);
}

/// As [`log`], and applies what it would replay to a queue file in memory.
pub fn replay(data: &[u8]) {
    crate::store::fuzz::replay(data);
}

/// Parses arbitrary text as `expression \0 time zone` and asks a schedule that validates for
/// its next fires and its misfires.
pub fn cron(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (expr, tz) = text.split_once('\0').unwrap_or((&text, "UTC"));
    let Ok(schedule) = Schedule::cron(expr) else {
        return;
    };
    let schedule = schedule.tz(tz);
    if schedule.validate().is_err() {
        return;
    }
    let Ok(template) = Options::new().template() else {
        return;
    };
    let def = ScheduleDef::new(schedule, "fuzz", Vec::new(), template);
    let after = data.len() as u64 * 86_400_000 + 1_700_000_000_000;
    if let Some(next) = def.kind.next_after(after) {
        assert!(next > after, "a next fire not after the time asked");
        for policy in [
            MisfirePolicy::RunOnce,
            MisfirePolicy::Skip,
            MisfirePolicy::CatchUp { max: 3 },
        ] {
            let fires = due_fires(&def.kind, policy, next, next + 3_600_000);
            assert!(
                fires
                    .run
                    .iter()
                    .all(|&f| f >= next && f <= next + 3_600_000)
            );
            assert!(fires.run.windows(2).all(|w| w[0] < w[1]), "{fires:?}");
        }
    }
}

/// Builds options from arbitrary bytes and resolves them (for an enqueue and for a schedule);
/// what resolves must be what was asked.
pub fn options(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let word = |i: usize| u64::from_le_bytes(std::array::from_fn(|j| byte(i + j)));
    let queue = String::from_utf8_lossy(data.get(32..).unwrap_or(&[])).into_owned();
    let mut options = Options::new()
        .priority(byte(0))
        .max_retries(u32::from(byte(1)))
        .queue(queue);
    let flags = byte(2);
    if flags & 1 != 0 {
        options = options.countdown(Duration::from_millis(word(8)));
    }
    if flags & 2 != 0 {
        options = options.eta(UNIX_EPOCH + Duration::from_millis(word(8) >> 8));
    }
    if flags & 4 != 0 {
        options = options.expires(Duration::from_millis(word(16)));
    }
    if flags & 8 != 0 {
        options = options.expires(UNIX_EPOCH + Duration::from_millis(word(16) >> 8));
    }
    // Keys from the queue's bytes: a unique key (with a period from the countdown's word),
    // a limit key.
    let key = || {
        String::from_utf8_lossy(data.get(32 + usize::from(byte(3))..).unwrap_or(&[])).into_owned()
    };
    if flags & 16 != 0 {
        let until = match byte(4) % 3 {
            0 => crate::Unique::UntilFinal,
            1 => crate::Unique::UntilStarted,
            _ => crate::Unique::For(Duration::from_millis(word(8))),
        };
        options = options.unique_with(key(), until);
    }
    if flags & 32 != 0 {
        options = options.limit_key(key());
    }
    let now = word(24) >> 12;
    if let Ok(resolved) = options.resolve(now) {
        assert!(resolved.priority <= crate::MAX_PRIORITY);
        assert!(resolved.due_ms >= now);
        assert!(resolved.expires_ms.is_none_or(|e| e > resolved.due_ms));
        let keys = &resolved.keys;
        for k in keys.unique.iter().map(|u| &u.0).chain(&keys.limit_key) {
            assert!(!k.is_empty() && k.len() <= crate::MAX_KEY_BYTES, "{k:?}");
        }
    }
    let _ = options.template();
}

/// Parses arbitrary text as a rate and a limit built from it: what parses is a rate that
/// lets tasks run, and prints back to itself.
pub fn rate(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(rate) = text.parse::<crate::Rate>() else {
        return;
    };
    assert!(rate.count() > 0 && !rate.period().is_zero() && rate.burst_size() > 0);
    let printed = rate.to_string();
    assert_eq!(printed.parse::<crate::Rate>().ok(), Some(rate), "{printed}");
    let limit = crate::Limit::queue("q").rate(rate);
    assert!(limit.validate().is_ok());
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// A fuzz target's entry point.
    type Target = fn(&[u8]);

    /// Every input of every committed corpus, replayed: none may panic (a hang fails the
    /// test by its timeout).
    #[test]
    fn the_fuzz_corpora_replay_without_a_panic() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let targets: [(&str, Target); 6] = [
            ("record", super::record),
            ("log", super::log),
            ("replay", super::replay),
            ("cron", super::cron),
            ("options", super::options),
            ("rate", super::rate),
        ];
        for (name, target) in targets {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("the {name} corpus {}: {e}", dir.display()));
            let mut inputs = 0;
            for entry in entries {
                let path = entry.unwrap().path();
                target(&std::fs::read(&path).unwrap());
                inputs += 1;
            }
            assert!(inputs > 0, "the {name} corpus is empty");
        }
    }
}

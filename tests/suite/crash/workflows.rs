//! Workflows across `kill -9`, many times: a child keeps a chord of 100 members, a chain of
//! 20 steps and a group of 50 running, and the parent kills it at random points, 12 times
//! in a row. After the last reopen every workflow ends with exactly the results it would
//! have had without a crash; the chord's body ran at least once, and more than once only if
//! an attempt of it was interrupted.

use std::io::Write as _;

use super::*;

/// Squares `n`; slow in the child, so kills land while members run.
#[derive(Serialize, Deserialize)]
pub(super) struct Sq {
    n: i64,
}

impl Task for Sq {
    const NAME: &'static str = "test.sq";
    type Output = i64;
    fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
        if IN_CHILD.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(3));
        }
        Ok(self.n * self.n)
    }
}

/// Adds one to the step before's output (the chain's first step has `start`).
#[derive(Serialize, Deserialize)]
pub(super) struct Inc {
    start: Option<i64>,
}

impl Task for Inc {
    const NAME: &'static str = "test.inc";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        if IN_CHILD.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(3));
        }
        let before = match self.start {
            Some(s) => s,
            None => ctx.input::<i64>()?,
        };
        Ok(before + 1)
    }
}

/// Sums its inputs, and appends "attempt" to the file named by `log` (so runs across
/// processes can be counted).
#[derive(Serialize, Deserialize)]
pub(super) struct SumAll {
    log: String,
}

impl Task for SumAll {
    const NAME: &'static str = "test.sum_all";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        let sum = ctx.inputs::<i64>()?.iter().sum();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| TaskError::retry(e.to_string()))?;
        writeln!(f, "{}", ctx.attempt()).map_err(|e| TaskError::retry(e.to_string()))?;
        Ok(sum)
    }
}

fn body_log(path: &Path) -> String {
    format!("{}.body", path.display())
}

/// The child: on a fresh file, stores the workflows; then runs them until killed.
pub(super) fn child(spool: &Spool, path: &Path) {
    if spool.stats().unwrap().total() == 0 {
        spool
            .chord(
                (0..100).map(|n| Sq { n }),
                SumAll {
                    log: body_log(path),
                },
            )
            .unwrap();
        let mut chain = spool.chain(Inc { start: Some(0) });
        for _ in 1..20 {
            chain = chain.then(Inc { start: None });
        }
        chain.enqueue().unwrap();
        spool.group((0..50).map(|n| Sq { n })).unwrap();
        say("STORED");
    }
    let _worker = spool
        .worker()
        .concurrency(2)
        .register::<Sq>()
        .register::<Inc>()
        .register::<SumAll>()
        .start()
        .unwrap();
    say("RUNNING");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn workflows_killed_at_random_points_end_with_exactly_their_results() {
    let (_dir, path) = queue_path();
    // A fixed sequence of kill delays (ms after the child says it runs), from 2 to 40.
    let delays = [7u64, 23, 2, 31, 11, 40, 5, 17, 29, 3, 13, 37];
    for (round, delay) in delays.into_iter().enumerate() {
        let (mut child, lines) = spawn_running("workflows", &path, round);
        std::thread::sleep(Duration::from_millis(delay));
        kill_and_drain(&mut child, &lines, |_| {});
    }

    let spool = Spool::open(&path).unwrap();
    let rest = spool
        .worker()
        .register::<Sq>()
        .register::<Inc>()
        .register::<SumAll>()
        .drain()
        .unwrap();
    eprintln!(
        "after {} kills, {} attempts were left",
        delays.len(),
        rest.attempts
    );
    // Ids: the chord's members 1..=100 and body 101, the chain 102..=121, the group 122..=171.
    let id = TaskId::from_u64;
    let body = spool.handle::<SumAll>(id(101));
    assert_eq!(
        body.wait(WAIT).unwrap(),
        (0..100).map(|n: i64| n * n).sum::<i64>()
    );
    let chain = spool.handle::<Inc>(id(121));
    assert_eq!(chain.wait(WAIT).unwrap(), 20);
    for (i, n) in (122..=171).zip(0i64..) {
        assert_eq!(spool.handle::<Sq>(id(i)).wait(WAIT).unwrap(), n * n);
    }
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Succeeded), 171, "{stats:?}");

    let runs = std::fs::read_to_string(body_log(&path)).unwrap();
    let runs: Vec<u32> = runs.lines().map(|l| l.parse().unwrap()).collect();
    assert!(!runs.is_empty(), "the chord's body never ran");
    let status = spool.status(id(101)).unwrap();
    if runs.len() > 1 {
        // More than once: only because an attempt of it was cut short by a kill.
        assert!(
            status
                .errors
                .iter()
                .any(|e| e.kind == AttemptErrorKind::WorkerLost),
            "the body ran {runs:?} without a lost attempt: {status:?}"
        );
    } else {
        assert_eq!(status.attempts, runs[0]);
    }
}

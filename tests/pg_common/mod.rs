//! What the PostgreSQL test files share: finding the test server.

use std::io::Write;

/// The test server's URL, or `None` (said on the real stderr) when there is none.
pub fn server(test: &str) -> Option<String> {
    match std::env::var("TASKSPOOL_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("TASKSPOOL_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "TASKSPOOL_REQUIRE_POSTGRES=1 but TASKSPOOL_TEST_POSTGRES names no server"
            );
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: no PostgreSQL server (set TASKSPOOL_TEST_POSTGRES to a URL, \
                 or run .ci/run, which starts one)"
            );
            None
        }
    }
}

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

/// Runs `sql` on the server at `url` with `psql` (another process, as an operator or a
/// second machine would); its output rows, unaligned, or why it failed.
#[allow(dead_code)] // not every test file that shares this module runs SQL
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-t", "-A", "-d", url, "-c", sql])
        .output()
        .map_err(|e| format!("psql (Debian's postgresql-client) does not run: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

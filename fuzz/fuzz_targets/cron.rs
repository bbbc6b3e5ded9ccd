#![no_main]
//! See `taskspool::fuzzing::cron`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskspool::fuzzing::cron(data));

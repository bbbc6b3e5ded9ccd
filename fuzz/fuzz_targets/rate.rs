#![no_main]
//! See `taskspool::fuzzing::rate`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskspool::fuzzing::rate(data));

#![no_main]
//! See `taskspool::fuzzing::log`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskspool::fuzzing::log(data));

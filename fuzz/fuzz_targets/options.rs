#![no_main]
//! See `taskspool::fuzzing::options`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskspool::fuzzing::options(data));

#![no_main]
//! See `taskspool::fuzzing::record`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskspool::fuzzing::record(data));

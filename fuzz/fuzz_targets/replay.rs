#![no_main]
//! See `taskspool::fuzzing::replay`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskspool::fuzzing::replay(data));

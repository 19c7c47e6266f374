//! Any bytes as a weights file: detect, then load.
#![no_main]
mod common;
libfuzzer_sys::fuzz_target!(|data: &[u8]| common::load("any", data));

//! The bytes as one `.npy` array of an `.npz`, and as a whole archive.
#![no_main]
mod common;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let archive = common::zip(&[("a.npy", data)]);
    common::load("npz", &archive);
    if data.starts_with(b"PK") {
        common::load("npz-raw", data);
    }
});

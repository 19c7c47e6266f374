//! The bytes after the `GGUF` magic of a GGUF file.
#![no_main]
mod common;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut file = b"GGUF".to_vec();
    file.extend_from_slice(data.get(4..).filter(|_| data.starts_with(b"GGUF")).unwrap_or(data));
    common::load("gguf", &file);
});

//! The bytes as the `data.pkl` of a PyTorch checkpoint with a few small storages, and as
//! a bare pickle.
#![no_main]
mod common;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let storage = [0u8; 96];
    let archive = common::zip(&[
        ("archive/data.pkl", data),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &storage),
        ("archive/data/1", &storage[..24]),
        ("archive/version", b"3\n"),
    ]);
    common::load("pth", &archive);
    let mut bare = vec![0x80, 0x02];
    bare.extend_from_slice(data);
    common::load("pkl", &bare);
});

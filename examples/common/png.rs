//! Hand-made PNG pieces for hostile-image tests: chunks with their CRC, and an EXIF
//! orientation that turns a tall image into a wide one.

/// CRC-32 as PNG chunks carry it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One PNG chunk: length, kind, data, CRC.
pub fn png_chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    let body: Vec<u8> = kind.iter().chain(data).copied().collect();
    chunk.extend(&body);
    chunk.extend(crc32(&body).to_be_bytes());
    chunk
}

/// `png` with an `eXIf` chunk saying "rotate 90°" (orientation 6) after its IHDR.
pub fn with_exif_rotation(mut png: Vec<u8>) -> Vec<u8> {
    // Big-endian TIFF, one IFD entry: Orientation (0x0112), SHORT, 1 value, 6.
    let exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
    // After the signature (8 bytes) and IHDR (25), before the image data.
    png.splice(33..33, png_chunk(b"eXIf", exif));
    png
}

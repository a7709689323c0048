//! Byte layouts of `docs/design/volume-format.md`: the segment header and the entry header.

/// Format version of segment files (see the format document's changelog).
pub const FORMAT_VERSION: u32 = 1;
/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"KRVOLSEG";
/// Length of the segment header; the first entry starts here.
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Magic bytes opening every entry.
pub const ENTRY_MAGIC: &[u8; 4] = b"KRE1";
/// Length of an entry header.
pub const ENTRY_HEADER_LEN: u64 = 16;
/// Largest entry payload: 16 MiB, as the original Kronotop's (`1 << 24`).
pub const MAX_ENTRY_LEN: usize = 1 << 24;

/// Builds the 64-byte header of segment `id`.
pub fn segment_header(id: u64, size: u64, volume_id: &[u8; 16]) -> [u8; 64] {
    let mut h = [0u8; 64];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    h[24..32].copy_from_slice(&size.to_le_bytes());
    h[32..48].copy_from_slice(volume_id);
    let crc = crc32fast::hash(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; returns what is wrong with it, if anything.
pub fn check_segment_header(h: &[u8], id: u64, volume_id: &[u8; 16]) -> Result<(), String> {
    if h.len() < 64 {
        return Err("file shorter than a segment header".into());
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err("not a segment file (bad magic)".into());
    }
    let crc = u32::from_le_bytes([h[60], h[61], h[62], h[63]]);
    if crc != crc32fast::hash(&h[..60]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    let got_id = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
    if got_id != id {
        return Err(format!("header names segment {got_id}"));
    }
    if &h[32..48] != volume_id {
        return Err("segment belongs to another volume".into());
    }
    Ok(())
}

/// Builds the 16-byte header of an entry with this payload.
pub fn entry_header(payload: &[u8]) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(ENTRY_MAGIC);
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8..12].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The payload length an entry header at the start of `bytes` records, if it is a whole, valid
/// header.
pub fn entry_len(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..16)?;
    let crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if &header[0..4] != ENTRY_MAGIC || crc != crc32fast::hash(&header[..12]) {
        return None;
    }
    Some(u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]])))
}

/// Verifies the entry at the start of `bytes` (header, then payload) against the expected payload
/// length, returning the payload's range within `bytes`.
pub fn check_entry(bytes: &[u8], expected_len: usize) -> Result<std::ops::Range<usize>, String> {
    let header = bytes.get(..16).ok_or("entry header is out of the segment")?;
    if &header[0..4] != ENTRY_MAGIC {
        return Err("bad entry magic".into());
    }
    let header_crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if header_crc != crc32fast::hash(&header[..12]) {
        return Err("entry header checksum mismatch".into());
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len != expected_len {
        return Err(format!("entry length {len} differs from the metadata's {expected_len}"));
    }
    let payload = bytes.get(16..16 + len).ok_or("entry payload is out of the segment")?;
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if crc != crc32fast::hash(payload) {
        return Err("entry payload checksum mismatch".into());
    }
    Ok(16..16 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_catch_damage() {
        let vid = [7u8; 16];
        let h = segment_header(3, 1 << 20, &vid);
        assert!(check_segment_header(&h, 3, &vid).is_ok());
        assert!(check_segment_header(&h, 4, &vid).is_err());
        let mut bad = h;
        bad[20] ^= 1;
        assert!(check_segment_header(&bad, 3, &vid).unwrap_err().contains("checksum"));

        let payload = b"hello volume";
        let mut e = entry_header(payload).to_vec();
        e.extend_from_slice(payload);
        assert_eq!(check_entry(&e, payload.len()).unwrap(), 16..16 + payload.len());
        assert!(check_entry(&e, 3).is_err());
        for i in 0..e.len() {
            let mut flipped = e.clone();
            flipped[i] ^= 0x40;
            assert!(check_entry(&flipped, payload.len()).is_err(), "flip at byte {i} undetected");
        }
        assert!(check_entry(&e[..e.len() - 1], payload.len()).is_err(), "torn payload");
    }
}

//! Opening a Volume segment file made of arbitrary bytes, and reading entries where damaged
//! metadata might point. The input's first 48 bytes are eight (position, length) pairs; the
//! rest is the file. Oracle: opening either fails cleanly or checks the header, and every read
//! either fails cleanly or returns a payload whose checksum matches.
#![no_main]

use kronotop_volume::format::{self, check_entry};
use kronotop_volume::io::FileStorage;
use kronotop_volume::segment::{Segment, file_name};
use libfuzzer_sys::fuzz_target;

const VOLUME_ID: [u8; 16] = *b"fuzz-volume-id-0";

fuzz_target!(|data: &[u8]| {
    if data.len() < 48 {
        return;
    }
    let (pointers, file) = data.split_at(48);
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Half of the inputs get a valid header, so the reads behind it are reached.
    let mut bytes = file.to_vec();
    if pointers[0] & 1 == 1 {
        let size = (bytes.len() as u64).max(format::SEGMENT_HEADER_LEN);
        let header = format::segment_header(1, size, &VOLUME_ID);
        if bytes.len() < header.len() {
            bytes.resize(header.len(), 0);
        }
        bytes[..header.len()].copy_from_slice(&header);
    }
    std::fs::write(dir.path().join(file_name(1)), &bytes).expect("write the segment file");
    let Ok(segment) = Segment::open(&FileStorage, dir.path(), 1, &VOLUME_ID) else { return };
    for pair in pointers.chunks(6) {
        let pos = u64::from(u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]))
            % (bytes.len() as u64 + 8);
        let len = u64::from(u16::from_le_bytes([pair[4], pair[5]]));
        let Some(raw) = segment.bytes(pos, format::ENTRY_HEADER_LEN + len) else { continue };
        if let Ok(range) = check_entry(raw, len as usize) {
            let payload = &raw[range];
            assert_eq!(payload.len() as u64, len);
        }
        // What a standby's recovery scan does: follow an entry header's own length.
        if let Some(own) = format::entry_len(raw)
            && let Some(entry) = segment.bytes(pos, format::ENTRY_HEADER_LEN + own)
        {
            let _ = check_entry(entry, own as usize);
        }
    }
});

//! Redis Cluster hash slots and how they map to shards (reference section 4.11.2).
//!
//! A key's slot is Redis Cluster's CRC16 of the key (or of its `{hash tag}`) modulo 16384. Slots map
//! to shards with the original Kronotop's exact algorithm, so both assign keys alike: runs of
//! `16384 / shards` slots per shard, and the few slots left at the end wrap around to shard 0.

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The slot of `key`, honouring `{hash tags}`.
pub fn slot(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

/// The shard of every slot, for `shards` shards (at least one).
pub fn table(shards: u32) -> Vec<u32> {
    let shards = shards.max(1);
    let per = u32::from(SLOTS) / shards;
    let mut out = Vec::with_capacity(usize::from(SLOTS));
    let (mut counter, mut part) = (1u32, 0u32);
    for _ in 0..SLOTS {
        if counter >= per {
            counter = 1;
            part += 1;
            if part >= shards {
                part = 0;
            }
        }
        out.push(part);
        counter += 1;
    }
    out
}

/// Contiguous runs of slots on one shard: `(first, last, shard)`, in slot order.
pub fn ranges(shards: u32) -> Vec<(u16, u16, u32)> {
    let mut out: Vec<(u16, u16, u32)> = Vec::new();
    for (slot, shard) in (0u16..).zip(table(shards)) {
        match out.last_mut() {
            Some((_, last, s)) if *s == shard && *last + 1 == slot => *last = slot,
            _ => out.push((slot, slot, shard)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from Redis's own `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"somekey"), 11058);
    }

    #[test]
    fn shard_table_matches_the_reference() {
        assert!(table(1).iter().all(|s| *s == 0));
        assert_eq!(ranges(2), vec![(0, 8190, 0), (8191, 16381, 1), (16382, 16383, 0)]);
        assert_eq!(
            ranges(3),
            vec![(0, 5459, 0), (5460, 10919, 1), (10920, 16379, 2), (16380, 16383, 0)]
        );
        let seven = ranges(7);
        assert_eq!(seven.first(), Some(&(0, 2338, 0)), "runs of 2339 slots");
        assert_eq!(seven.last(), Some(&(16373, 16383, 0)));
        assert_eq!(seven.len(), 8);
    }
}

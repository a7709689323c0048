//! A small, fast random source for `RANDOMKEY` and `HRANDFIELD`: xorshift64*, seeded per thread
//! from the operating system. Not for anything secret.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: the address of a stack slot still differs between threads and runs.
        let local = 0u8;
        return (&raw const local as u64) | 1;
    }
    u64::from_le_bytes(b) | 1
}

/// A random 64-bit number.
pub fn next() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A random index below `n` (which must not be 0).
pub fn below(n: usize) -> usize {
    (next() % n as u64) as usize
}

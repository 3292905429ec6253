//! Small pieces every layer uses: the concurrent map of shared tables, and
//! how herald says what it is doing.

/// The concurrent map of every shared table (queues, presence, tokens,
/// ...): dashmap with foldhash, randomly seeded per process. SipHash,
/// std's default, hashed a poller's token and uid several times per
/// request; its stronger flood resistance buys little here: the keys are
/// uids, group ids and tokens the backend issued (a token is only stored
/// once its signature checks), and addresses.
pub type SharedMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;

/// Writes one line to stdout, where herald says what it is doing (ready,
/// stopping). A closed stdout (a supervisor that stopped reading) is
/// ignored: `println!` would panic there, and turn a SIGTERM into a crash.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Which of `n` buckets `text` falls in, the same on every node and
/// release: FNV-1a of its bytes, then murmur3's finalizer (FNV-1a alone
/// leaves the low bits of similar names, `c1a`, `c2a`, poorly mixed).
pub fn bucket_of(text: &str, n: u32) -> u32 {
    let mut h = text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h % n.max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn similar_names_spread_over_the_buckets() {
        for n in [4u32, 128] {
            let mut counts = vec![0u32; n as usize];
            for i in 0..10_000 {
                counts[super::bucket_of(&format!("c{i}a"), n) as usize] += 1;
            }
            let mean = 10_000 / n;
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(
                *min > mean * 7 / 10 && *max < mean * 13 / 10,
                "{n}: {min}..{max}"
            );
        }
    }
}

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

//! The `herald` binary: parse flags, run until SIGTERM or Ctrl-C.

use clap::Parser;

/// sled allocates and frees a node copy on most writes; mimalloc's
/// thread-local heaps cut that cost and the arena-lock contention of glibc's
/// malloc (measured by examples/bench_queue).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use herald::config::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&config.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("herald: --log {:?} is not a log filter: {e}", config.log);
            return std::process::ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    disable_transparent_huge_pages();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match herald::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e}");
            // 2: the settings are wrong (as for a bad flag); 1: the machine
            // refused (port taken, store unreadable).
            match e {
                herald::StartError::Config(_) => std::process::ExitCode::from(2),
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    herald::util::say(format_args!("shutting down: releasing held requests"));
    shutdown.cancel();
}

/// Opts this process out of transparent huge pages. mimalloc asks for them,
/// and each first touch of a huge page zeroes 2 MiB while a request waits:
/// 15% of the server's time in the 10 000-way fan-out benchmark, ~10% on its
/// result (scripts/bench-connections.sh). Redis advises the same for latency.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(
            "prctl(PR_SET_THP_DISABLE): {}",
            std::io::Error::last_os_error()
        );
    }
}

//! The wiring: `run` binds the listener, opens the store and the services
//! ([`App::open`]), seeds the demo world, starts the periodic tasks
//! (retention, presence sweeps, the webhook) and serves until shutdown,
//! then makes everything durable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;

use crate::api::webhook::Webhook;
use crate::app::App;
use crate::chat::friends::Friends;
use crate::chat::groups::Groups;
use crate::config::Config;
use crate::http::auth::Auth;

use crate::app::StartError;
use crate::app::WebTransportAdvert;
use crate::server::webtransport;
use crate::transport::wt;
use crate::util::say;
use crate::{server, store, uid};

/// File descriptors kept aside for the store and other files.
const RESERVED_FDS: u64 = 64;

/// Runs the server until `shutdown` is cancelled, then drains and returns
/// with everything durable. Prints `listening on http://ADDR` (`https://`
/// with TLS) once ready.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    config.check().map_err(StartError::Config)?;
    // The webhook pushes the feed: it needs one kept.
    config.feed |= config.webhook_url.is_some();
    let webhook = match &config.webhook_url {
        Some(url) => Some(
            Webhook::new(url, Duration::from_millis(config.webhook_timeout_ms))
                .map_err(StartError::Config)?,
        ),
        None => None,
    };
    let demo = config.demo_mode();
    let secret = config
        .secret
        .clone()
        .unwrap_or_else(|| Alphanumeric.sample_string(&mut rand::rng(), 32));
    let api_key = match &config.api_key {
        Some(key) => key.clone(),
        None => {
            let key = Alphanumeric.sample_string(&mut rand::rng(), 24);
            say(format_args!("demo mode: generated API key {key}"));
            key
        }
    };
    if demo {
        say(format_args!("WARNING: demo mode: anyone can log in as any user via POST /v1/demo/login; do not expose this server"));
    }

    // Bound first: a server that cannot listen leaves no data dir behind.
    let listener = bind(config.listen).map_err(|e| StartError::Listen(config.listen, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::Listen(config.listen, e))?;
    let tls = server::tls::load(&config, local).map_err(StartError::Config)?;
    if let Some(hash) = tls.as_ref().and_then(|tls| tls.self_signed.as_deref()) {
        say(format_args!("self-signed certificate sha-256 {hash}"));
    }
    // WebTransport shares the certificate; its socket is bound before the
    // store opens, as the listener's.
    let webtransport = match (config.webtransport_listen, &tls) {
        (Some(addr), Some(tls)) => {
            let endpoint = webtransport::bind(addr, tls.http3.clone(), config.dead_peer())
                .map_err(StartError::Config)?;
            let bound = endpoint
                .local_addr()
                .map_err(|e| StartError::Config(format!("cannot listen on udp {addr}: {e}")))?;
            Some((endpoint, bound))
        }
        _ => None,
    };
    let max_connections = connection_budget();
    say(format_args!(
        "connection limit: {max_connections} (file descriptor limit minus {RESERVED_FDS})"
    ));
    let auth = Auth::new(secret.as_bytes(), api_key);
    let app = App::open(config, auth, shutdown.clone()).await?;
    if demo {
        seed_demo_world(&app.friends, &app.groups).await?;
    }
    let trimmer = tokio::spawn(trim_periodically(app.clone()));
    let sweeper = tokio::spawn(sweep_presence(app.clone()));
    let peers = tokio::spawn(crate::inspect::serve(
        Arc::downgrade(&app),
        app.config.node_lease(),
    ));
    // One task per feed partition, each in order on its own.
    let webhooks: Vec<_> = webhook
        .into_iter()
        .flat_map(|webhook| {
            let app = app.clone();
            (0..app.config.feed_partitions.max(1))
                .map(move |p| tokio::spawn(webhook.clone().run(app.clone(), p)))
        })
        .collect();
    let store = app.store.clone();
    let webtransport = webtransport.map(|(endpoint, bound)| {
        let hashes = tls.iter().filter_map(|tls| tls.self_signed.clone());
        let _ = app.webtransport.set(WebTransportAdvert {
            port: bound.port(),
            certificate_hashes: hashes.collect(),
        });
        say(format_args!("webtransport on https://{bound}{}", wt::PATH));
        tokio::spawn(webtransport::serve(
            endpoint,
            app.clone(),
            max_connections,
            local.port(),
        ))
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    say(format_args!("listening on {scheme}://{local}"));
    server::serve(listener, app, max_connections, tls.map(|tls| tls.acceptor)).await;
    if let Some(webtransport) = webtransport {
        let _ = webtransport.await;
    }
    trimmer.abort();
    sweeper.abort();
    peers.abort();
    // A batch cut short is posted again after the restart.
    for webhook in webhooks {
        webhook.abort();
    }
    store.sync().await?;
    say(format_args!(
        "herald stopped; everything acknowledged is durable"
    ));
    Ok(())
}

/// Users of the demo world: each has added all the others.
pub const DEMO_USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];

/// Gives demo mode a small world on first start, so the demo page is alive
/// at once: five users who have added each other, and two groups.
async fn seed_demo_world(friends: &Friends, groups: &Groups) -> Result<(), store::StoreError> {
    let uid = |s: &str| uid::Uid::parse(s).map_err(|e| store::StoreError::Io(e.to_string()));
    let users: Vec<uid::Uid> = DEMO_USERS
        .iter()
        .map(|u| uid(u))
        .collect::<Result<_, _>>()?;
    for user in &users {
        if friends.of(user).is_empty() {
            friends.set(user, users.clone()).await?;
        }
    }
    let lobby = uid("lobby")?;
    if groups.members(&lobby).is_none() {
        groups.set_members(&lobby, users.clone()).await?;
    }
    let team = uid("team")?;
    if groups.members(&team).is_none() {
        groups.set_members(&team, users[..3].to_vec()).await?;
    }
    Ok(())
}

/// A listener with a backlog sized for connect storms.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// How many connections the process's file-descriptor limit allows.
fn connection_budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let fds = if ok { limit.rlim_cur } else { 1024 };
    fds.saturating_sub(RESERVED_FDS).max(16) as usize
}

/// Lets pollers whose grace period ran out go offline.
async fn sweep_presence(app: Arc<App>) {
    let period =
        (app.config.presence_grace() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut every = tokio::time::interval(period);
    loop {
        every.tick().await;
        app.presence.sweep();
    }
}

/// Applies retention and forgets what idle users left in memory (queue
/// state, counters, full send buckets) every `--trim-interval-ms`, off the
/// async workers.
async fn trim_periodically(app: Arc<App>) {
    let mut every =
        tokio::time::interval(Duration::from_millis(app.config.trim_interval_ms.max(10)));
    every.tick().await;
    loop {
        every.tick().await;
        match app.upkeep.maintain(store::Retention::of(&app.config)).await {
            Ok(n) if n > 0 => tracing::debug!("retention dropped {n} events or records"),
            Err(e) => tracing::warn!("retention failed: {e}"),
            _ => {}
        }
        let app = app.clone();
        let forget = move || {
            app.sends.forget_idle();
            let metrics = &app.metrics;
            metrics.set_entries("counters", app.counters.forget_idle());
            metrics.set_entries("group_locks", app.group_log.forget_idle());
            let (cursors, windows) = app.group_reads.forget_idle();
            metrics.set_entries("group_read_cursors", cursors);
            metrics.set_entries("receipt_windows", windows);
            metrics.set_entries("signal_mailboxes", app.signals.forget_parked());
            metrics.set_entries("traced_users", app.traces.sweep());
        };
        let _ = tokio::task::spawn_blocking(forget).await;
    }
}

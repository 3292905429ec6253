//! The direct writes of a WebSocket: while its session is idle (not
//! reading or writing events) and caught up, the store's delivery thread
//! writes each new durable event to the socket itself as a text frame,
//! with one non-blocking `send`, instead of waking the session's task for
//! it (a 10 000-way fan-out otherwise woke 10 000 tasks). The session and
//! the writer share the cursor and take turns on the socket: the
//! [`SessionSocket`] under tungstenite tells the [`SocketWriter`] whether
//! tungstenite left bytes unwritten, and what a direct `send` could put
//! only in part to the socket is owed, written by the session before
//! anything else.

use std::sync::Arc;

use bytes::Bytes;

use crate::http::rewind::Rewind;
use crate::hub::Link;
use crate::store::DurableSink;
use crate::transport::subscription::Handoff;

/// A WebSocket's socket as the store's delivery thread writes to it (see
/// [`DurableSink`]): when the session is idle (not reading or writing events),
/// caught up, and tungstenite holds nothing unwritten, a new durable event
/// goes out as a frame with one non-blocking `send`, without waking the
/// session's task; otherwise the session is woken and sends it as before.
/// The frames are those tungstenite writes (text, unmasked).
pub(super) struct SocketWriter {
    fd: std::os::fd::RawFd,
    /// Counts and traces the direct writes as the connection's.
    link: Link,
    shared: std::sync::Mutex<WriterState>,
    woken: tokio::sync::Notify,
    /// Notified when `owed` needs the session to write it.
    owed_pending: tokio::sync::Notify,
}

struct WriterState {
    /// The seq of the last event sent or handed to the session.
    cursor: u64,
    /// The session reads or sends events: new ones are left to it.
    busy: bool,
    /// tungstenite holds bytes it has not written yet: nothing may go to
    /// the socket before them.
    dirty: bool,
    /// The `hello` went out (the session sends it with its first page).
    greeted: bool,
    /// The end of frames a direct write could put only in part to the
    /// socket: they go before anything else (`SessionSocket`).
    owed: Vec<u8>,
    /// The socket is closing or a direct write failed: no more of them.
    closed: bool,
}

/// Largest batch of frames written directly; a larger one is left to the
/// session, which can wait for the socket to drain.
const WRITER_MAX: usize = 16 << 10;

impl SocketWriter {
    /// For a session whose stream is at `cursor`.
    pub(super) fn new(io: &Rewind, link: Link, cursor: u64) -> SocketWriter {
        SocketWriter {
            fd: io.raw_fd(),
            link,
            shared: std::sync::Mutex::new(WriterState {
                cursor,
                busy: true,
                dirty: false,
                greeted: false,
                owed: Vec::new(),
                closed: false,
            }),
            woken: tokio::sync::Notify::new(),
            owed_pending: tokio::sync::Notify::new(),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn greeted(&self) {
        self.shared().greeted = true;
    }

    pub(super) fn is_greeted(&self) -> bool {
        self.shared().greeted
    }

    /// Writes the `hello` frame, before anything else (the session has
    /// not started: `busy`).
    pub(super) fn hello(&self, hello: &[u8]) {
        let mut shared = self.shared();
        if shared.greeted || shared.closed {
            return;
        }
        let mut frame = Vec::with_capacity(hello.len() + 4);
        text_frame(&mut frame, hello);
        shared.greeted = self.send(&mut shared, frame);
    }

    /// Writes a text frame that is not an event (a heartbeat, a signal)
    /// directly if nothing else may be in the way (the session waits,
    /// tungstenite holds nothing, the hello went out); whether it did.
    pub(super) fn text(&self, hb: &[u8]) -> bool {
        let mut shared = self.shared();
        if shared.busy || shared.dirty || shared.closed || !shared.greeted {
            return false;
        }
        let mut frame = Vec::with_capacity(hb.len() + 4);
        text_frame(&mut frame, hb);
        self.send(&mut shared, frame)
    }

    /// Sends `frames` with one non-blocking `send`, under the lock of
    /// `shared`; what the socket does not take is owed (the session writes
    /// it first). Whether any of it went (if not, `errno` says why).
    fn send(&self, shared: &mut WriterState, mut frames: Vec<u8>) -> bool {
        // SAFETY: `fd` is the session's socket, open while `closed` is
        // false (`SessionSocket::drop` sets it, under this lock, before the fd
        // is closed); the buffer is valid for its length.
        let sent = unsafe {
            libc::send(
                self.fd,
                frames.as_ptr().cast(),
                frames.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent <= 0 {
            return false;
        }
        if (sent as usize) < frames.len() {
            shared.owed = frames.split_off(sent as usize);
            shared.dirty = true;
            self.owed_pending.notify_one();
        }
        true
    }
}

/// Appends `payload` to `out` as one text frame (FIN, unmasked: from a
/// server), as tungstenite writes it; `payload` is under 64 KiB.
fn text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

impl Handoff for SocketWriter {
    fn begin(&self) -> u64 {
        let mut shared = self.shared();
        shared.busy = true;
        shared.cursor
    }

    fn end(&self, cursor: u64) {
        let mut shared = self.shared();
        shared.cursor = cursor;
        shared.busy = false;
    }

    fn woken(&self) -> &tokio::sync::Notify {
        &self.woken
    }
}

impl DurableSink for SocketWriter {
    fn durable(&self, after: u64, head: u64, events: &[Bytes]) {
        let mut shared = self.shared();
        let bytes: usize = events.iter().map(|e| e.len()).sum();
        let ready = !(shared.busy || shared.dirty || shared.closed || !shared.greeted);
        if !ready || shared.cursor != after || events.is_empty() || bytes > WRITER_MAX {
            drop(shared);
            self.woken.notify_one();
            return;
        }
        let mut frames = Vec::with_capacity(bytes + 4 * events.len());
        for event in events {
            text_frame(&mut frames, event);
        }
        if self.send(&mut shared, frames) {
            shared.cursor = head;
            drop(shared);
            self.link.delivered(head, events.len(), bytes);
            return;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
            // The connection is gone: the session finds out on its own.
            shared.closed = true;
        }
        drop(shared);
        self.woken.notify_one();
    }
}

/// Resolves when a direct write left bytes for the session to write.
pub(super) async fn owed_to_write(writer: Option<&SocketWriter>) {
    match writer {
        Some(writer) => writer.owed_pending.notified().await,
        None => std::future::pending().await,
    }
}

/// Ends direct writes when dropped (the session drops it before its close
/// frame).
pub(super) struct WriterStop<'a>(pub(super) &'a SocketWriter);

impl Drop for WriterStop<'_> {
    fn drop(&mut self) {
        self.0.shared().closed = true;
    }
}

/// The session's socket, telling [`SocketWriter`] whether tungstenite left
/// bytes unwritten; its writes and the direct ones take turns.
pub(super) struct SessionSocket {
    io: Rewind,
    writer: Arc<SocketWriter>,
}

impl SessionSocket {
    pub(super) fn new(io: Rewind, writer: Arc<SocketWriter>) -> SessionSocket {
        SessionSocket { io, writer }
    }
}

impl Drop for SessionSocket {
    /// Before the socket closes (its fd could be reused at once), under
    /// the lock a direct write holds: no direct write after this.
    fn drop(&mut self) {
        self.writer.shared().closed = true;
    }
}

impl tokio::io::AsyncRead for SessionSocket {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SessionSocket {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let mut shared = this.writer.shared();
        std::task::ready!(write_owed(&mut this.io, &mut shared.owed, cx))?;
        let poll = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        shared.dirty = !matches!(poll, std::task::Poll::Ready(Ok(n)) if n == buf.len());
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        let mut shared = this.writer.shared();
        // tungstenite flushes once it has written all it holds.
        std::task::ready!(write_owed(&mut this.io, &mut shared.owed, cx))?;
        shared.dirty = false;
        drop(shared);
        std::pin::Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.writer.shared().closed = true;
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Writes `owed` (what a direct write left) to `io`, as far as it goes.
fn write_owed(
    io: &mut Rewind,
    owed: &mut Vec<u8>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<()>> {
    use tokio::io::AsyncWrite;
    while !owed.is_empty() {
        let n = std::task::ready!(std::pin::Pin::new(&mut *io).poll_write(cx, owed))?;
        if n == 0 {
            return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        owed.drain(..n);
    }
    if owed.capacity() > 0 {
        *owed = Vec::new();
    }
    std::task::Poll::Ready(Ok(()))
}

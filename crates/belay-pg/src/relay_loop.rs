//! One session's relay loop after startup: it reads both sockets, has the `Relay` decide and
//! route every message, and writes both sockets, with back-pressure on each side and against
//! the memory budget of all sessions. Large rows stream through unframed, oversized texts are
//! read past and refused, an approved statement of a role that may not write runs on a
//! one-shot connection, and a client that leaves a message half sent is ended.

use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::codec::{self, Backend, Severity};
use crate::gate::{Refusal, UpstreamSpec};
use crate::relay::{Next, Relay, Violation, WATCH_ENDED};
use crate::server::{fatal, off_thread, Admitted, Shared};
use crate::upstream::{self, Stream};

/// Buffered bytes past which a side stops reading until the other side catches up.
const HIGH_WATER: usize = 1 << 20;

/// Ticks (seconds) a client may leave a message half sent before the session is ended: a
/// partial message holds its buffer and its upstream connection for nothing.
const PARTIAL_MESSAGE_TICKS: u32 = 30;

/// The same, while all sessions together hold more than `Options::memory_budget`.
const LOW_WATER: usize = 64 * 1024;

/// A DataRow or CopyData from the upstream whose body is longer than this is streamed to
/// the client as it arrives, never buffered whole (belay neither reads nor changes them).
const STREAM_FROM: usize = 256 * 1024;

/// PostgreSQL's own bound on a message.
const MAX_UPSTREAM_MESSAGE: usize = 1 << 30;

/// A large row or copy chunk whose header says `Some(body length)`: it is streamed.
fn streamable(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..5)?;
    if !matches!(header[0], b'D' | b'd') {
        return None;
    }
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let body = usize::try_from(len).ok()?.checked_sub(4)?;
    (body > STREAM_FROM && body <= MAX_UPSTREAM_MESSAGE).then_some(body)
}

/// A client's Query or Parse longer than `limit`: its body length, to be read past.
fn oversized_sql(buf: &[u8], limit: usize) -> Option<(u8, usize)> {
    let header = buf.get(..5)?;
    if !matches!(header[0], b'Q' | b'P') {
        return None;
    }
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let body = usize::try_from(len).ok()?.checked_sub(4)?;
    (body > limit).then_some((header[0], body))
}

/// How often a session hears `Session::tick`; a session that read nothing for a whole tick
/// also gives back its buffers.
const TICK: Duration = Duration::from_secs(1);

/// A session that moves bytes on every turn looks at its tick and at the shutdown signal
/// every this many turns.
const TIMERS_EVERY: u32 = 64;

/// The most one read takes from a socket.
const READ_CHUNK: usize = 16 * 1024;

/// Reads what `stream` has into `buf`. A session that waits holds no read buffer: into an
/// empty buffer the read goes through a scratch array on the stack, and only what arrived is
/// kept.
fn poll_fill(
    stream: &mut Box<dyn Stream>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.is_empty() {
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(stream).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        return Poll::Ready(Ok(read.filled().len()));
    }
    buf.reserve(READ_CHUNK);
    std::pin::pin!(stream.read_buf(buf)).poll(cx)
}

/// Writes from `buf` what `stream` takes, then flushes once `buf` is empty (a TLS stream
/// holds records back until flushed). `Err` when the connection broke.
fn poll_send(
    stream: &mut Box<dyn Stream>,
    buf: &mut BytesMut,
    unflushed: &mut bool,
    cx: &mut Context<'_>,
) -> Result<bool, ()> {
    let mut progress = false;
    if !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(0) | Err(_)) => return Err(()),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                *unflushed = true;
                progress = true;
            }
            Poll::Pending => {}
        }
    }
    if buf.is_empty() && *unflushed {
        match Pin::new(stream).poll_flush(cx) {
            Poll::Ready(Ok(())) => *unflushed = false,
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Pending => {}
        }
    }
    Ok(progress)
}

/// Whether bytes sent (`before` buffered, `after` left) call for another turn of the relay
/// loop. A send that emptied its buffer does not, unless the buffer had stopped the loop
/// taking messages (`HIGH_WATER`) or the session is ending: that turn would find nothing to
/// do, and in a request-and-answer exchange it was one turn in three. A partial send does,
/// to write the rest or to wait for the socket to take it.
fn needs_turn(before: usize, after: usize, ending: bool) -> bool {
    after > 0 || before >= HIGH_WATER || ending
}

/// What woke the relay loop.
enum Woken {
    /// Bytes moved, or shutdown began: look at the buffers again.
    Progress,
    ClientBroke,
    UpstreamBroke,
    ClientClosed,
    UpstreamClosed,
}

/// The relay loop: reads both sides, decides, writes both sides, with back-pressure. One
/// task polls both sockets itself (no split halves, no per-turn futures): the loop is most
/// of the gateway's cost per statement.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut client: Box<dyn Stream>,
    mut client_buf: BytesMut,
    admitted: Admitted,
    mut shutdown: watch::Receiver<bool>,
) {
    let Admitted {
        mut relay,
        upstream,
        elevated,
        key,
        _permit,
    } = admitted;
    // The startup's ParameterStatus frames share the upstream's first read buffer: dropped
    // here, not when the session ends, so that the buffer can go.
    let upstream::Upstream {
        stream: mut up,
        buf: mut up_buf,
        parameters,
        ..
    } = upstream;
    drop(parameters);
    // An idle session holds no buffers: they are taken when bytes arrive and given back
    // after a tick without any.
    if client_buf.is_empty() {
        client_buf = BytesMut::new();
    }
    if up_buf.is_empty() {
        up_buf = BytesMut::new();
    }
    let mut to_up = BytesMut::new();
    let mut to_client = BytesMut::new();
    let (mut client_unflushed, mut up_unflushed) = (false, false);
    let max = shared.options.max_message;
    let mut draining = *shutdown.borrow();
    let mut stopping = Box::pin(async move {
        loop {
            match shutdown.changed().await {
                Ok(()) if !*shutdown.borrow() => {}
                _ => return,
            }
        }
    });
    let mut terminating = false;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read_since_tick = false;
    let mut turns: u32 = 0;

    // A large row or copy chunk from the upstream being streamed through: its bytes left.
    let mut passthrough: usize = 0;
    // An oversized Query or Parse from the client being read past: its bytes left.
    let mut discard: usize = 0;
    let mut oversized: Option<(u8, usize)> = None;
    // This session's share of `shared.buffered`.
    let mut accounted: usize = 0;
    let mut high_water = HIGH_WATER;
    // The client sent part of a message and no more: ticks since it last sent anything.
    let mut client_partial;
    let mut stalled_ticks: u32 = 0;

    let why: String = 'session: loop {
        // Decide and route every complete message already buffered.
        client_partial = false;
        while !terminating && to_up.len() < high_water {
            if discard > 0 || oversized.is_some() {
                let n = discard.min(client_buf.len());
                client_buf.advance(n);
                discard -= n;
                if discard > 0 {
                    client_partial = true;
                    break;
                }
                if let Some((tag, len)) = oversized.take() {
                    let mut moved = relay;
                    let mut out = std::mem::take(&mut to_up);
                    let limit = shared.options.max_sql_message;
                    let refused = off_thread(move || {
                        moved.refuse_oversized(tag, len, limit, &mut out);
                        (moved, out)
                    })
                    .await;
                    (relay, to_up) = match refused {
                        Ok(back) => back,
                        Err(m) => {
                            let _ = client.write_all(&fatal("XX000", m.clone())).await;
                            shared.cancel.remove(key);
                            shared.buffered.fetch_sub(accounted, Ordering::Relaxed);
                            return;
                        }
                    };
                }
                continue;
            }
            if let Some((tag, len)) = oversized_sql(&client_buf, shared.options.max_sql_message) {
                client_buf.advance(5);
                (discard, oversized) = (len, Some((tag, len)));
                continue;
            }
            let next = match codec::read_frame(&mut client_buf, max) {
                Ok(Some(frame)) => match relay.client_message(frame, &mut to_up) {
                    Ok(Next::Blocked(frame)) => {
                        // Decided on the blocking pool; the relay goes there and comes back.
                        let mut moved = relay;
                        let mut out = std::mem::take(&mut to_up);
                        let decided = off_thread(move || {
                            let r = moved.client_message_blocking(frame, &mut out);
                            (moved, r, out)
                        })
                        .await;
                        let result;
                        (relay, result, to_up) = match decided {
                            Ok(back) => back,
                            Err(m) => {
                                // The relay (and its session) is lost with the failed call.
                                let _ = client.write_all(&fatal("XX000", m.clone())).await;
                                shared.cancel.remove(key);
                                shared.buffered.fetch_sub(accounted, Ordering::Relaxed);
                                tracing::error!(error = %m, "a session ended abnormally");
                                return;
                            }
                        };
                        result
                    }
                    other => other,
                },
                Ok(None) => {
                    client_partial = !client_buf.is_empty();
                    break;
                }
                Err(e) => Err(Violation(format!("invalid message: {e}"))),
            };
            match next {
                Ok(Next::Terminate) => terminating = true,
                Ok(Next::Continue | Next::Blocked(_)) => {}
                Ok(Next::Detour(body)) => {
                    // The answers to what went before come first, in order.
                    let mut failed = None;
                    while relay.expected() > 1 {
                        match read_upstream_frame(&mut up, &mut up_buf).await {
                            Ok(frame) => {
                                if let Err(Violation(m)) =
                                    relay.upstream_message(frame, &mut to_client)
                                {
                                    failed = Some(m);
                                    break;
                                }
                            }
                            Err(m) => {
                                failed = Some(m);
                                break;
                            }
                        }
                    }
                    if let Some(m) = failed {
                        to_client.extend_from_slice(&fatal("08P01", m.clone()));
                        let _ = client.write_all(&to_client).await;
                        break 'session m;
                    }
                    let tls = elevated.as_ref().map(|spec| shared.upstream_tls.get(spec));
                    let answer = match (elevated.as_ref(), tls) {
                        (Some(spec), Some(Ok(tls))) => {
                            detour(
                                spec,
                                tls,
                                &body,
                                &mut relay,
                                &mut to_client,
                                &mut client,
                                high_water,
                            )
                            .await
                        }
                        _ => Err(Detour::NotRun(
                            "no writing role is configured for this session".to_owned(),
                        )),
                    };
                    match answer {
                        Ok(()) => {}
                        Err(Detour::NotRun(e)) => {
                            // Nothing of an answer was relayed: the client hears why, as the
                            // answer to its Query.
                            let mut out = BytesMut::new();
                            Backend::ErrorResponse(
                                Refusal::new(
                                    "08006",
                                    format!("belay could not run the approved statement as the environment's writing role: {e}"),
                                )
                                .fields(Severity::Error),
                            )
                            .encode(&mut out);
                            Backend::ReadyForQuery(codec::TransactionStatus::Idle).encode(&mut out);
                            while let Ok(Some(frame)) = codec::read_frame(&mut out, usize::MAX) {
                                if let Err(Violation(m)) =
                                    relay.upstream_message(frame, &mut to_client)
                                {
                                    to_client.extend_from_slice(&fatal("08P01", m.clone()));
                                    let _ = client.write_all(&to_client).await;
                                    break 'session m;
                                }
                            }
                        }
                        Err(Detour::Lost(m)) => {
                            to_client.extend_from_slice(&fatal("08P01", m.clone()));
                            let _ = client.write_all(&to_client).await;
                            break 'session m;
                        }
                    }
                }
                Err(Violation(m)) => {
                    to_client.extend_from_slice(&fatal("08P01", m.clone()));
                    let _ = client.write_all(&to_client).await;
                    break 'session m;
                }
            }
        }
        while to_client.len() < high_water {
            // Large rows and copy chunks pass through as they arrive.
            if passthrough > 0 {
                let n = passthrough.min(up_buf.len());
                if n == 0 {
                    break;
                }
                to_client.extend_from_slice(&up_buf.split_to(n));
                passthrough -= n;
                continue;
            }
            if let Some(body) = streamable(&up_buf) {
                to_client.extend_from_slice(&up_buf.split_to(5));
                passthrough = body;
                continue;
            }
            match codec::read_frame(&mut up_buf, codec::DEFAULT_MAX_MESSAGE) {
                Ok(Some(frame)) => {
                    if let Err(Violation(m)) = relay.upstream_message(frame, &mut to_client) {
                        let message = if m.starts_with(WATCH_ENDED) {
                            m.clone()
                        } else {
                            format!("belay lost track of the upstream: {m}")
                        };
                        to_client.extend_from_slice(&fatal("08P01", message));
                        let _ = client.write_all(&to_client).await;
                        break 'session m;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'session format!("the upstream sent an invalid message: {e}"),
            }
        }
        if terminating && to_up.is_empty() {
            break 'session "the client ended the session".to_owned();
        }
        if draining && relay.idle() && to_up.is_empty() && client_buf.is_empty() {
            to_client.extend_from_slice(&fatal(
                "57P01",
                "terminating connection because belay is shutting down",
            ));
            let _ = client.write_all(&to_client).await;
            let _ = up.write_all(&[b'X', 0, 0, 0, 4]).await;
            break 'session "belay shut down".to_owned();
        }
        // What this session holds counts against the budget of all; past the budget every
        // session reads only a little ahead of what it has sent.
        let held =
            client_buf.capacity() + up_buf.capacity() + to_up.capacity() + to_client.capacity();
        if held != accounted {
            if held > accounted {
                shared
                    .buffered
                    .fetch_add(held - accounted, Ordering::Relaxed);
            } else {
                shared
                    .buffered
                    .fetch_sub(accounted - held, Ordering::Relaxed);
            }
            accounted = held;
            high_water = if shared.buffered.load(Ordering::Relaxed) > shared.options.memory_budget {
                LOW_WATER
            } else {
                HIGH_WATER
            };
        }
        let mut ticked = false;
        let woken = poll_fn(|cx| {
            let mut progress = false;
            let ending = terminating || draining;
            let before = to_client.len();
            match poll_send(&mut client, &mut to_client, &mut client_unflushed, cx) {
                Ok(p) => progress |= p && needs_turn(before, to_client.len(), ending),
                Err(()) => return Poll::Ready(Woken::ClientBroke),
            }
            let before = to_up.len();
            match poll_send(&mut up, &mut to_up, &mut up_unflushed, cx) {
                Ok(p) => progress |= p && needs_turn(before, to_up.len(), ending),
                Err(()) => return Poll::Ready(Woken::UpstreamBroke),
            }
            if !terminating && to_up.len() < high_water {
                match poll_fill(&mut client, &mut client_buf, cx) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Woken::ClientClosed),
                    Poll::Ready(Ok(_)) => (progress, read_since_tick) = (true, true),
                    Poll::Pending => {}
                }
            }
            if to_client.len() < high_water {
                match poll_fill(&mut up, &mut up_buf, cx) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Woken::UpstreamClosed),
                    Poll::Ready(Ok(_)) => (progress, read_since_tick) = (true, true),
                    Poll::Pending => {}
                }
            }
            // The shutdown signal and the tick are looked at whenever the loop is about to
            // wait (so that one that fired is never missed before a sleep) and every
            // `TIMERS_EVERY` turns of a busy session, instead of on every turn.
            turns = turns.wrapping_add(1);
            if progress && !turns.is_multiple_of(TIMERS_EVERY) {
                return Poll::Ready(Woken::Progress);
            }
            if !draining && stopping.as_mut().poll(cx).is_ready() {
                draining = true;
                progress = true;
            }
            if ticks.poll_tick(cx).is_ready() {
                ticked = true;
                progress = true;
            }
            if progress {
                Poll::Ready(Woken::Progress)
            } else {
                Poll::Pending
            }
        })
        .await;
        match woken {
            Woken::Progress => {}
            Woken::ClientBroke => break 'session "the client connection broke".to_owned(),
            Woken::UpstreamBroke => break 'session "the upstream connection broke".to_owned(),
            Woken::ClientClosed => {
                let _ = up.write_all(&[b'X', 0, 0, 0, 4]).await;
                break 'session "the client disconnected".to_owned();
            }
            Woken::UpstreamClosed => {
                // Whatever the server said last (a FATAL, usually) is already queued.
                let _ = client.write_all(&to_client).await;
                let _ = client
                    .write_all(&fatal(
                        "08006",
                        "the upstream database closed the connection",
                    ))
                    .await;
                break 'session "the upstream closed the connection".to_owned();
            }
        }
        if ticked {
            relay.tick();
            stalled_ticks = if client_partial && !read_since_tick {
                stalled_ticks + 1
            } else {
                0
            };
            if stalled_ticks >= PARTIAL_MESSAGE_TICKS {
                let message = format!(
                    "the client sent part of a message and nothing more for {PARTIAL_MESSAGE_TICKS} s"
                );
                to_client.extend_from_slice(&fatal("08P01", message.clone()));
                let _ = client.write_all(&to_client).await;
                let _ = up.write_all(&[b'X', 0, 0, 0, 4]).await;
                break 'session message;
            }
            if !read_since_tick {
                for buf in [&mut client_buf, &mut up_buf, &mut to_up, &mut to_client] {
                    if buf.is_empty() && buf.capacity() > 0 {
                        *buf = BytesMut::new();
                    }
                }
            }
            read_since_tick = false;
        }
    };
    let _ = client.flush().await;
    let _ = client.shutdown().await;
    shared.cancel.remove(key);
    shared.buffered.fetch_sub(accounted, Ordering::Relaxed);
    relay.ended(&why);
}

/// The next message from the upstream, read until it is whole.
async fn read_upstream_frame(
    up: &mut Box<dyn Stream>,
    buf: &mut BytesMut,
) -> Result<codec::Frame, String> {
    loop {
        match codec::read_frame(buf, codec::DEFAULT_MAX_MESSAGE) {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(e) => return Err(format!("the upstream sent an invalid message: {e}")),
        }
        match up.read_buf(buf).await {
            Ok(0) | Err(_) => return Err("the upstream closed the connection".to_owned()),
            Ok(_) => {}
        }
    }
}

/// Why an approved statement's own connection gave no whole answer.
enum Detour {
    /// Before any of an answer reached the client (it could not log in, say).
    NotRun(String),
    /// Part of an answer was relayed: the session cannot go on.
    Lost(String),
}

/// Runs one approved simple Query (`body`, as the client sent it) on a connection of its
/// own as `spec` says, and relays its answer, up to and including ReadyForQuery, as it
/// arrives: large rows stream through as on the session's own connection, and the client is
/// written to whenever `high_water` bytes wait for it, so no answer is held whole.
async fn detour(
    spec: &UpstreamSpec,
    tls: Option<Arc<rustls::ClientConfig>>,
    body: &[u8],
    relay: &mut Relay,
    to_client: &mut BytesMut,
    client: &mut Box<dyn Stream>,
    high_water: usize,
) -> Result<(), Detour> {
    let mut up = upstream::connect(spec, tls)
        .await
        .map_err(|e| Detour::NotRun(e.to_string()))?;
    let mut out = BytesMut::new();
    codec::put_message(&mut out, b'Q', |b| b.extend_from_slice(body));
    up.stream
        .write_all(&out)
        .await
        .map_err(|e| Detour::NotRun(e.to_string()))?;
    let mut buf = std::mem::take(&mut up.buf);
    let (mut passthrough, mut relayed) = (0usize, false);
    let lost = |relayed: bool, m: String| {
        if relayed {
            Detour::Lost(m)
        } else {
            Detour::NotRun(m)
        }
    };
    loop {
        loop {
            if passthrough > 0 {
                let n = passthrough.min(buf.len());
                if n == 0 {
                    break;
                }
                to_client.extend_from_slice(&buf.split_to(n));
                passthrough -= n;
                continue;
            }
            if let Some(body) = streamable(&buf) {
                to_client.extend_from_slice(&buf.split_to(5));
                passthrough = body;
                relayed = true;
                continue;
            }
            match codec::read_frame(&mut buf, codec::DEFAULT_MAX_MESSAGE) {
                Ok(Some(frame)) => {
                    let done = frame.tag == b'Z';
                    relay
                        .upstream_message(frame, to_client)
                        .map_err(|Violation(m)| Detour::Lost(m))?;
                    relayed = true;
                    if done {
                        let _ = up.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(lost(
                        relayed,
                        format!("the writing role's connection sent an invalid message: {e}"),
                    ))
                }
            }
        }
        if to_client.len() >= high_water {
            client
                .write_all(to_client)
                .await
                .map_err(|e| Detour::Lost(format!("the client went away: {e}")))?;
            to_client.clear();
        }
        match up.stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                return Err(lost(
                    relayed,
                    "the writing role's connection closed before its answer ended".to_owned(),
                ))
            }
            Ok(_) => {}
        }
    }
}

//! A fault-injecting TCP proxy for tests: put it between the service and Redis, or between a
//! client and the service, and make chosen connections fail in the ways real networks do.
//!
//! ```no_run
//! # async fn demo(redis: std::net::SocketAddr) {
//! use test_support::fault_proxy::{Fault, FaultProxy};
//!
//! let proxy = FaultProxy::start(redis).await; // point the code under test at proxy.addr()
//! proxy.arm(Fault::DropAfterForward, 1); // the next request runs, its reply is lost
//! // ... drive the code under test ...
//! proxy.wait_for_injected(Fault::DropAfterForward, 1).await;
//! proxy.clear(); // all faults off, stalled connections closed
//! # }
//! ```
//!
//! # Opportunities and priority
//!
//! A fault can only fire at an *opportunity*: [`Fault::Refuse`] when a connection is accepted,
//! every other fault when a chunk (one `read`) arrives from the client. At each opportunity the
//! faults of that kind are consulted in the fixed order of [`Fault::ALL`]:
//!
//! 1. `Refuse` (connection opportunities only),
//! 2. `DropBeforeForward`, 3. `DropAfterForward`, 4. `Stall`, 5. `ResetMidStream` (chunks).
//!
//! A fault fires if it is armed (one armed shot is used up) or, failing that, if its
//! probability roll succeeds. The first fault that fires wins and the rest are not consulted at
//! all: at most one fault fires per opportunity, and a lower fault keeps its armed shots (and
//! does not roll) when a higher one fires.
//!
//! # Counters
//!
//! Every counter is updated *before* its effect can be seen by a peer: once a client has seen
//! an EOF, a reset or a reply through the proxy, `injected`, `connections` and
//! `bytes_forwarded` already account for it, so tests can assert on them without waiting.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long a [`Fault::Stall`] lasts unless [`FaultProxy::set_stall_for`] says otherwise:
/// far longer than any sensible client deadline.
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);

/// The size of one read, so the largest chunk one opportunity covers.
const CHUNK: usize = 16 * 1024;

/// A way for a proxied connection to fail. The declaration order is the priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// At accept: close the client connection at once, before any byte either way. No upstream
    /// connection is made. A client that reads first sees EOF; one that has already written may
    /// see a reset instead (the kernel resets a socket closed with unread data).
    Refuse,
    /// At a client chunk: read it, do not forward it, close both sides (FIN). The request never
    /// reached the upstream.
    DropBeforeForward,
    /// At a client chunk: forward it, then, as soon as the upstream sends anything, close both
    /// sides without delivering it. The request ran; its reply is lost. Counted when the reply
    /// is dropped; if the upstream closes without a byte first, the shot is spent uncounted.
    DropAfterForward,
    /// At a client chunk: hold it back and stop forwarding in both directions on that
    /// connection (nothing is read, so TCP back-pressure is real). When the stall time
    /// ([`FaultProxy::set_stall_for`]) runs out, the held chunk is forwarded late and traffic
    /// resumes (a slow network). [`FaultProxy::clear`] instead closes the stalled connection and
    /// discards the held chunk (the request never ran). Counted when the stall starts.
    Stall,
    /// At a client chunk: forward it, then when the upstream's reply arrives deliver only the
    /// first half of that read (`n / 2` bytes, possibly none) and close both sides with an RST
    /// (`SO_LINGER` 0). The request ran; the client sees part of the reply, then a reset (or,
    /// depending on timing, EOF). Counted just before the reset.
    ResetMidStream,
}

impl Fault {
    /// Every fault, in priority order (highest first).
    pub const ALL: [Fault; 5] = [
        Fault::Refuse,
        Fault::DropBeforeForward,
        Fault::DropAfterForward,
        Fault::Stall,
        Fault::ResetMidStream,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// True for the faults whose opportunity is a new connection rather than a client chunk.
    fn at_accept(self) -> bool {
        self == Fault::Refuse
    }
}

/// A TCP proxy from `127.0.0.1:<free port>` to one loopback upstream, with scheduled faults.
///
/// Dropping it aborts its tasks: the listener and every proxied connection are closed.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds `127.0.0.1:0` and forwards every accepted connection to `upstream` over a fresh
    /// upstream connection, both ways, until both sides have closed (a half-close is passed
    /// on) or either fails. No fault is scheduled. Must run inside a tokio runtime.
    ///
    /// # Panics
    /// If `upstream` is not a loopback address (the proxy only talks to local test servers), or
    /// no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> Self {
        assert!(
            upstream.ip().is_loopback(),
            "FaultProxy only forwards to loopback addresses, not {upstream}"
        );
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("cannot bind a loopback port for the fault proxy");
        let addr = listener
            .local_addr()
            .expect("fault proxy listener has no address");
        let (released, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            schedule: Mutex::new(Schedule {
                armed: [0; Fault::ALL.len()],
                probability: [0.0; Fault::ALL.len()],
                stall_for: DEFAULT_STALL,
                rng: StdRng::from_os_rng(),
            }),
            released,
            injected: Default::default(),
            injected_changed: Notify::new(),
            connections: AtomicU64::new(0),
            bytes_forwarded: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        Self {
            addr,
            upstream,
            shared,
            accept_task,
        }
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Makes the next `count` opportunities of `fault` fire (replacing any earlier count;
    /// `0` disarms). An opportunity taken by a higher-priority fault does not use a shot.
    pub fn arm(&self, fault: Fault, count: u64) {
        self.shared.schedule().armed[fault.index()] = count;
    }

    /// Makes each opportunity of `fault` fire with probability `p` (after armed shots, which
    /// always fire first). `1.0` always fires, `0.0` never does.
    ///
    /// # Panics
    /// If `p` is not within `0.0..=1.0`.
    pub fn set_probability(&self, fault: Fault, p: f64) {
        assert!(
            (0.0..=1.0).contains(&p),
            "fault probability must be within 0..=1, got {p}"
        );
        self.shared.schedule().probability[fault.index()] = p;
    }

    /// How long a [`Fault::Stall`] that starts from now on lasts ([`DEFAULT_STALL`] unless set).
    pub fn set_stall_for(&self, stall_for: Duration) {
        self.shared.schedule().stall_for = stall_for;
    }

    /// Reseeds the probability rolls, so a chaos run with sequential traffic repeats exactly.
    pub fn set_seed(&self, seed: u64) {
        self.shared.schedule().rng = StdRng::seed_from_u64(seed);
    }

    /// Turns every fault off (armed shots and probabilities) and closes every connection that is
    /// stalled right now, discarding the chunk it held back. Faults already decided for a
    /// pending reply (`DropAfterForward`, `ResetMidStream`) still happen. Counters and the stall
    /// time are kept.
    pub fn clear(&self) {
        let mut schedule = self.shared.schedule();
        schedule.armed = [0; Fault::ALL.len()];
        schedule.probability = [0.0; Fault::ALL.len()];
        // Under the schedule lock, so a stall is either decided before this (and released) or
        // not decided at all.
        self.shared
            .released
            .send_modify(|generation| *generation += 1);
    }

    /// How many faults of this kind have fired.
    pub fn injected(&self, fault: Fault) -> u64 {
        self.shared.injected[fault.index()].load(Ordering::SeqCst)
    }

    /// How many client connections have been accepted (refused ones included).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Bytes passed on, both directions together. A chunk is counted when it is queued for the
    /// other side (before the peer can see it); dropped, held or withheld bytes are not counted.
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.bytes_forwarded.load(Ordering::SeqCst)
    }

    /// Resolves once at least `n` faults of this kind have fired. Woken by the proxy itself, no
    /// polling; wrap it in `tokio::time::timeout` if the fault might never fire.
    pub async fn wait_for_injected(&self, fault: Fault, n: u64) {
        loop {
            let mut changed = pin!(self.shared.injected_changed.notified());
            // Register before checking, so an injection between the check and the await wakes us.
            changed.as_mut().enable();
            if self.injected(fault) >= n {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the listener and a JoinSet of the connection tasks; dropping the
        // JoinSet aborts them, which drops (closes) both sockets of every connection.
        self.accept_task.abort();
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("connections", &self.connections())
            .field("bytes_forwarded", &self.bytes_forwarded())
            .finish_non_exhaustive()
    }
}

/// State shared by the handle, the accept loop and every connection task.
struct Shared {
    schedule: Mutex<Schedule>,
    /// Bumped by `clear`; stalled connections watch it.
    released: watch::Sender<u64>,
    injected: [AtomicU64; Fault::ALL.len()],
    injected_changed: Notify,
    connections: AtomicU64,
    bytes_forwarded: AtomicU64,
}

struct Schedule {
    armed: [u64; Fault::ALL.len()],
    probability: [f64; Fault::ALL.len()],
    stall_for: Duration,
    rng: StdRng,
}

impl Schedule {
    /// The fault that fires at this opportunity, if any (see the module docs for the order).
    fn pick(&mut self, at_accept: bool) -> Option<Fault> {
        for fault in Fault::ALL
            .into_iter()
            .filter(|f| f.at_accept() == at_accept)
        {
            let i = fault.index();
            if self.armed[i] > 0 {
                self.armed[i] -= 1;
                return Some(fault);
            }
            let p = self.probability[i];
            if p > 0.0 && self.rng.random_bool(p) {
                return Some(fault);
            }
        }
        None
    }
}

/// What to do with a chunk the client sent.
enum ChunkAction {
    Forward,
    Drop,
    /// Forward it, and apply this fault to the upstream's next bytes.
    ForwardThen(Fault),
    Stall(Duration),
}

impl Shared {
    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        // A panic elsewhere must not wedge the proxy; the schedule is always consistent.
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refuse_next(&self) -> bool {
        self.schedule().pick(true) == Some(Fault::Refuse)
    }

    fn on_chunk(&self, released: &mut watch::Receiver<u64>) -> ChunkAction {
        let mut schedule = self.schedule();
        match schedule.pick(false) {
            None => ChunkAction::Forward,
            Some(Fault::DropBeforeForward) => ChunkAction::Drop,
            Some(Fault::Stall) => {
                // Only a `clear` after this moment releases this stall.
                released.mark_unchanged();
                ChunkAction::Stall(schedule.stall_for)
            }
            Some(fault) => ChunkAction::ForwardThen(fault),
        }
    }

    fn record(&self, fault: Fault) {
        self.injected[fault.index()].fetch_add(1, Ordering::SeqCst);
        self.injected_changed.notify_waiters();
    }

    fn forwarded(&self, n: usize) {
        self.bytes_forwarded.fetch_add(n as u64, Ordering::SeqCst);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    // Owned here so that aborting this task aborts every connection task with it.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    if shared.refuse_next() {
                        shared.record(Fault::Refuse);
                        drop(client);
                        continue;
                    }
                    connections.spawn(serve(client, upstream, Arc::clone(&shared)));
                }
                // E.g. out of file descriptors: let the finished connections be reaped first.
                Err(_) => tokio::task::yield_now().await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// How a connection ended.
enum End {
    Close,
    Reset,
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut released = shared.released.subscribe();
    // If the upstream is down, the client just sees its connection closed.
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if let End::Reset = pump(&mut client, &mut server, &shared, &mut released).await {
        // SO_LINGER 0: the drop below sends RST instead of FIN, on both sides.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Bytes read from one side, waiting to be written to the other.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    sent: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.sent >= self.buf.len()
    }

    fn unsent(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    fn set(&mut self, bytes: &[u8]) {
        self.buf.clear();
        self.buf.extend_from_slice(bytes);
        self.sent = 0;
    }
}

struct Stalled {
    until: Instant,
    /// Bytes held back, counted as forwarded only if the stall ends by its timer.
    held: usize,
}

/// Copies both ways, one task, no blocking write: each direction reads a chunk only once the
/// previous one is written, and reads and writes of both directions wait together in one
/// `select!`, so a peer that is slow to read never stops the other direction.
async fn pump(
    client: &mut TcpStream,
    server: &mut TcpStream,
    shared: &Shared,
    released: &mut watch::Receiver<u64>,
) -> End {
    let (mut client_rd, mut client_wr) = client.split();
    let (mut server_rd, mut server_wr) = server.split();
    let mut client_buf = vec![0u8; CHUNK];
    let mut server_buf = vec![0u8; CHUNK];
    let mut to_server = Pending::default();
    let mut to_client = Pending::default();
    let (mut client_eof, mut server_eof) = (false, false);
    let (mut server_shut, mut client_shut) = (false, false);
    // A fault decided at a client chunk, applied to the server's next bytes.
    let mut on_reply: Option<Fault> = None;
    // ResetMidStream: the part of the reply is queued; reset once it is written.
    let mut resetting = false;
    let mut stall: Option<Stalled> = None;

    loop {
        if resetting && to_client.is_empty() {
            shared.record(Fault::ResetMidStream);
            return End::Reset;
        }
        if stall.is_none() {
            // Pass half-closes on once everything before them is written.
            if client_eof && to_server.is_empty() && !server_shut {
                let _ = server_wr.shutdown().await;
                server_shut = true;
            }
            if server_eof && to_client.is_empty() && !client_shut {
                let _ = client_wr.shutdown().await;
                client_shut = true;
            }
            if server_shut && client_shut {
                return End::Close;
            }
        }
        let flowing = stall.is_none();
        let stall_until = stall.as_ref().map_or_else(Instant::now, |s| s.until);

        tokio::select! {
            read = client_rd.read(&mut client_buf),
                if flowing && !client_eof && to_server.is_empty() =>
            {
                let n = match read {
                    Ok(0) => {
                        client_eof = true;
                        continue;
                    }
                    Ok(n) => n,
                    Err(_) => return End::Close,
                };
                match shared.on_chunk(released) {
                    ChunkAction::Forward => {
                        shared.forwarded(n);
                        to_server.set(&client_buf[..n]);
                    }
                    ChunkAction::Drop => {
                        shared.record(Fault::DropBeforeForward);
                        return End::Close;
                    }
                    ChunkAction::ForwardThen(fault) => {
                        // Decided before the chunk is written, so no reply can slip past.
                        on_reply.get_or_insert(fault);
                        shared.forwarded(n);
                        to_server.set(&client_buf[..n]);
                    }
                    ChunkAction::Stall(stall_for) => {
                        shared.record(Fault::Stall);
                        to_server.set(&client_buf[..n]);
                        stall = Some(Stalled { until: Instant::now() + stall_for, held: n });
                    }
                }
            }
            read = server_rd.read(&mut server_buf),
                if flowing && !server_eof && to_client.is_empty() && !resetting =>
            {
                match read {
                    // A fault waiting for a reply that never comes is simply not applied.
                    Ok(0) => server_eof = true,
                    Ok(n) => match on_reply.take() {
                        None => {
                            shared.forwarded(n);
                            to_client.set(&server_buf[..n]);
                        }
                        Some(Fault::ResetMidStream) => {
                            let part = n / 2;
                            shared.forwarded(part);
                            to_client.set(&server_buf[..part]);
                            resetting = true;
                        }
                        Some(fault) => {
                            shared.record(fault);
                            return End::Close;
                        }
                    },
                    Err(_) => return End::Close,
                }
            }
            written = server_wr.write(to_server.unsent()), if flowing && !to_server.is_empty() => {
                match written {
                    Ok(n) if n > 0 => to_server.sent += n,
                    _ => return End::Close,
                }
            }
            written = client_wr.write(to_client.unsent()), if flowing && !to_client.is_empty() => {
                match written {
                    Ok(n) if n > 0 => to_client.sent += n,
                    _ => return End::Close,
                }
            }
            () = tokio::time::sleep_until(stall_until), if !flowing => {
                // The stall ran out: the held chunk goes through late and traffic resumes.
                if let Some(ended) = stall.take() {
                    shared.forwarded(ended.held);
                }
            }
            _ = released.changed(), if !flowing => return End::Close,
            else => return End::Close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisServer;
    use std::io::ErrorKind;
    use std::task::Poll;
    use tokio::time::timeout;

    const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
    const PONG: &[u8] = b"+PONG\r\n";
    const INCR: &[u8] = b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n";
    const GET: &[u8] = b"*2\r\n$3\r\nGET\r\n$7\r\ncounter\r\n";
    /// A guard against a hung proxy, not a timing assertion: generous on purpose.
    const HANG_GUARD: Duration = Duration::from_secs(10);

    /// What a client saw after sending one command.
    #[derive(Debug, PartialEq)]
    enum Reply {
        /// A whole RESP reply.
        Complete(Vec<u8>),
        /// EOF after these bytes.
        Eof(Vec<u8>),
        /// A connection reset (or a failed write) after these bytes.
        Reset(Vec<u8>),
    }

    impl Reply {
        fn is_failure(&self) -> bool {
            !matches!(self, Reply::Complete(_))
        }
    }

    fn complete(got: &[u8]) -> bool {
        let Some(eol) = got.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        if got[0] != b'$' {
            return true;
        }
        let len: i64 = std::str::from_utf8(&got[1..eol])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("bad bulk length");
        len < 0 || got.len() >= eol + 2 + len as usize + 2
    }

    async fn read_reply(stream: &mut TcpStream) -> Reply {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if !got.is_empty() && complete(&got) {
                return Reply::Complete(got);
            }
            let read = timeout(HANG_GUARD, stream.read(&mut buf))
                .await
                .expect("no reply, EOF or reset: the proxy hung");
            match read {
                Ok(0) => return Reply::Eof(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Reply::Reset(got);
                }
                Err(e) => panic!("unexpected read error: {e}"),
            }
        }
    }

    async fn connect(addr: SocketAddr) -> TcpStream {
        TcpStream::connect(addr).await.expect("cannot connect")
    }

    /// Sends `cmd` on `stream` and reads what comes back.
    async fn roundtrip(stream: &mut TcpStream, cmd: &[u8]) -> Reply {
        if stream.write_all(cmd).await.is_err() {
            return Reply::Reset(Vec::new());
        }
        read_reply(stream).await
    }

    /// One command on a fresh connection.
    async fn request(addr: SocketAddr, cmd: &[u8]) -> Reply {
        roundtrip(&mut connect(addr).await, cmd).await
    }

    /// The counter as Redis itself has it, bypassing the proxy.
    async fn counter_in_redis(redis: &RedisServer) -> Vec<u8> {
        match request(redis.addr(), GET).await {
            Reply::Complete(reply) => reply,
            other => panic!("direct GET failed: {other:?}"),
        }
    }

    /// Polls a future exactly once: true if it is still pending.
    async fn still_pending<F: Future>(mut future: std::pin::Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await
    }

    fn complete_reply(bytes: &[u8]) -> Reply {
        Reply::Complete(bytes.to_vec())
    }

    #[tokio::test]
    async fn passes_traffic_through_and_counts_it() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        assert_eq!(proxy.upstream(), redis.addr());

        let mut a = connect(proxy.addr()).await;
        for _ in 0..3 {
            assert_eq!(roundtrip(&mut a, PING).await, complete_reply(PONG));
        }
        assert_eq!(request(proxy.addr(), INCR).await, complete_reply(b":1\r\n"));

        assert_eq!(proxy.connections(), 2);
        let expected = 3 * (PING.len() + PONG.len()) + INCR.len() + b":1\r\n".len();
        assert_eq!(proxy.bytes_forwarded(), expected as u64);
        for fault in Fault::ALL {
            assert_eq!(proxy.injected(fault), 0, "{fault:?}");
        }
        println!("{proxy:?}");
    }

    #[tokio::test]
    async fn refuse_closes_before_any_byte() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        proxy.arm(Fault::Refuse, 1);

        let mut refused = connect(proxy.addr()).await;
        assert_eq!(read_reply(&mut refused).await, Reply::Eof(Vec::new()));
        assert_eq!(proxy.injected(Fault::Refuse), 1);

        assert_eq!(request(proxy.addr(), PING).await, complete_reply(PONG));
        assert_eq!(proxy.connections(), 2);
        assert_eq!(proxy.bytes_forwarded(), (PING.len() + PONG.len()) as u64);
    }

    #[tokio::test]
    async fn drop_before_forward_means_the_command_never_ran() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        proxy.arm(Fault::DropBeforeForward, 1);

        assert_eq!(request(proxy.addr(), INCR).await, Reply::Eof(Vec::new()));
        assert_eq!(proxy.injected(Fault::DropBeforeForward), 1);
        assert_eq!(counter_in_redis(&redis).await, b"$-1\r\n");
        assert_eq!(proxy.bytes_forwarded(), 0);

        // Unarmed again: the retry is the first INCR Redis ever sees.
        assert_eq!(request(proxy.addr(), INCR).await, complete_reply(b":1\r\n"));
    }

    #[tokio::test]
    async fn drop_after_forward_means_the_command_ran_and_the_reply_was_lost() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        proxy.arm(Fault::DropAfterForward, 1);

        assert_eq!(request(proxy.addr(), INCR).await, Reply::Eof(Vec::new()));
        assert_eq!(proxy.injected(Fault::DropAfterForward), 1);
        assert_eq!(counter_in_redis(&redis).await, b"$1\r\n1\r\n");
        assert_eq!(proxy.bytes_forwarded(), INCR.len() as u64);

        assert_eq!(request(proxy.addr(), INCR).await, complete_reply(b":2\r\n"));
    }

    #[tokio::test]
    async fn stall_outlasts_the_client_deadline_and_clear_closes_it() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        proxy.set_stall_for(DEFAULT_STALL);
        proxy.arm(Fault::Stall, 1);

        let mut stalled = connect(proxy.addr()).await;
        stalled.write_all(INCR).await.unwrap();
        timeout(HANG_GUARD, proxy.wait_for_injected(Fault::Stall, 1))
            .await
            .expect("the stall never started");
        // The client's own deadline is what ends the wait: that is the point of a stall.
        let mut buf = [0u8; 64];
        let deadline = Duration::from_millis(300);
        assert!(
            timeout(deadline, stalled.read(&mut buf)).await.is_err(),
            "a stalled connection answered"
        );

        proxy.clear();
        assert_eq!(read_reply(&mut stalled).await, Reply::Eof(Vec::new()));
        // The held INCR was discarded, never forwarded.
        assert_eq!(counter_in_redis(&redis).await, b"$-1\r\n");
        assert_eq!(proxy.bytes_forwarded(), 0);

        // Other connections were never affected, and clear() disarmed everything.
        assert_eq!(request(proxy.addr(), PING).await, complete_reply(PONG));
        assert_eq!(proxy.injected(Fault::Stall), 1);
    }

    #[tokio::test]
    async fn stall_that_runs_out_delivers_late() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        let stall_for = Duration::from_millis(200);
        proxy.set_stall_for(stall_for);
        proxy.arm(Fault::Stall, 1);

        let started = Instant::now();
        assert_eq!(request(proxy.addr(), INCR).await, complete_reply(b":1\r\n"));
        // A lower bound only (a timer never fires early), not a speed measurement.
        assert!(started.elapsed() >= stall_for);
        assert_eq!(proxy.injected(Fault::Stall), 1);
        assert_eq!(
            proxy.bytes_forwarded(),
            (INCR.len() + b":1\r\n".len()) as u64
        );
    }

    #[tokio::test]
    async fn reset_mid_stream_delivers_at_most_part_of_the_reply() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        proxy.arm(Fault::ResetMidStream, 1);

        let reply = request(proxy.addr(), PING).await;
        println!("client saw {reply:?}");
        let part = match reply {
            Reply::Reset(part) | Reply::Eof(part) => part,
            Reply::Complete(all) => panic!("the whole reply arrived: {all:?}"),
        };
        assert!(part.len() < PONG.len() && PONG.starts_with(&part));
        assert_eq!(proxy.injected(Fault::ResetMidStream), 1);
        assert_eq!(
            proxy.bytes_forwarded(),
            (PING.len() + PONG.len() / 2) as u64
        );

        assert_eq!(request(proxy.addr(), PING).await, complete_reply(PONG));
    }

    #[tokio::test]
    async fn armed_faults_fire_exactly_count_times() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;

        proxy.arm(Fault::DropBeforeForward, 3);
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            outcomes.push(request(proxy.addr(), PING).await.is_failure());
        }
        assert_eq!(outcomes, [true, true, true, false, false, false]);
        assert_eq!(proxy.injected(Fault::DropBeforeForward), 3);

        // Arming replaces the count; 0 disarms.
        proxy.arm(Fault::DropBeforeForward, 5);
        proxy.arm(Fault::DropBeforeForward, 1);
        assert!(request(proxy.addr(), PING).await.is_failure());
        assert!(!request(proxy.addr(), PING).await.is_failure());
        proxy.arm(Fault::DropBeforeForward, 4);
        proxy.arm(Fault::DropBeforeForward, 0);
        assert!(!request(proxy.addr(), PING).await.is_failure());
        assert_eq!(proxy.injected(Fault::DropBeforeForward), 4);
        assert_eq!(proxy.connections(), 9);
    }

    #[tokio::test]
    async fn probability_one_always_fires_and_zero_never() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;

        proxy.set_probability(Fault::DropBeforeForward, 1.0);
        for _ in 0..20 {
            assert_eq!(request(proxy.addr(), PING).await, Reply::Eof(Vec::new()));
        }
        proxy.set_probability(Fault::DropBeforeForward, 0.0);
        for _ in 0..20 {
            assert_eq!(request(proxy.addr(), PING).await, complete_reply(PONG));
        }
        assert_eq!(proxy.injected(Fault::DropBeforeForward), 20);

        proxy.set_probability(Fault::Refuse, 1.0);
        for _ in 0..5 {
            assert_eq!(
                read_reply(&mut connect(proxy.addr()).await).await,
                Reply::Eof(Vec::new())
            );
        }
        assert_eq!(proxy.injected(Fault::Refuse), 5);
        assert_eq!(proxy.connections(), 45);
    }

    #[tokio::test]
    #[should_panic(expected = "within 0..=1")]
    async fn probability_out_of_range_is_rejected() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        proxy.set_probability(Fault::Stall, 1.5);
    }

    #[tokio::test]
    async fn one_fault_per_opportunity_in_priority_order() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        proxy.arm(Fault::Refuse, 1);
        proxy.arm(Fault::DropBeforeForward, 1);
        proxy.arm(Fault::DropAfterForward, 1);

        // The connection opportunity: only Refuse can take it; the chunk faults keep their shots.
        assert!(request(proxy.addr(), INCR).await.is_failure());
        assert_eq!(proxy.injected(Fault::Refuse), 1);
        // First chunk: DropBeforeForward outranks DropAfterForward.
        assert_eq!(request(proxy.addr(), INCR).await, Reply::Eof(Vec::new()));
        assert_eq!(counter_in_redis(&redis).await, b"$-1\r\n");
        assert_eq!(proxy.injected(Fault::DropBeforeForward), 1);
        assert_eq!(proxy.injected(Fault::DropAfterForward), 0);
        // Second chunk: DropAfterForward's shot was kept.
        assert_eq!(request(proxy.addr(), INCR).await, Reply::Eof(Vec::new()));
        assert_eq!(counter_in_redis(&redis).await, b"$1\r\n1\r\n");
        assert_eq!(proxy.injected(Fault::DropAfterForward), 1);
        // All spent.
        assert_eq!(request(proxy.addr(), INCR).await, complete_reply(b":2\r\n"));
    }

    #[tokio::test]
    async fn clear_turns_every_fault_off() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        for fault in Fault::ALL {
            proxy.arm(fault, 10);
            proxy.set_probability(fault, 1.0);
        }
        proxy.clear();
        for _ in 0..10 {
            assert_eq!(request(proxy.addr(), PING).await, complete_reply(PONG));
        }
        for fault in Fault::ALL {
            assert_eq!(proxy.injected(fault), 0, "{fault:?}");
        }
    }

    #[tokio::test]
    async fn wait_for_injected_wakes_when_the_fault_fires() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        proxy.arm(Fault::DropAfterForward, 2);

        // Nothing to wait for yet.
        proxy.wait_for_injected(Fault::DropAfterForward, 0).await;
        let mut waiter = pin!(proxy.wait_for_injected(Fault::DropAfterForward, 2));
        assert!(
            still_pending(waiter.as_mut()).await,
            "resolved before any fault"
        );

        assert!(request(proxy.addr(), INCR).await.is_failure());
        assert!(
            still_pending(waiter.as_mut()).await,
            "resolved after one fault of two"
        );

        let (waited, second) =
            tokio::join!(timeout(HANG_GUARD, waiter), request(proxy.addr(), INCR));
        waited.expect("wait_for_injected never woke");
        assert!(second.is_failure());
        assert_eq!(proxy.injected(Fault::DropAfterForward), 2);
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_everything() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        let addr = proxy.addr();
        let mut open = connect(addr).await;
        assert_eq!(roundtrip(&mut open, PING).await, complete_reply(PONG));

        drop(proxy);
        let after = read_reply(&mut open).await;
        assert!(
            matches!(&after, Reply::Eof(b) | Reply::Reset(b) if b.is_empty()),
            "{after:?}"
        );
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }

    #[tokio::test]
    async fn upstream_down_closes_the_client() {
        let nothing_there = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let proxy = FaultProxy::start(nothing_there).await;
        assert!(request(proxy.addr(), PING).await.is_failure());
        assert_eq!(proxy.connections(), 1);
    }

    #[tokio::test]
    #[should_panic(expected = "loopback")]
    async fn only_loopback_upstreams() {
        FaultProxy::start("192.0.2.1:6379".parse().unwrap()).await;
    }

    /// Every fault at once, seeded, checked against a model: each INCR that got a reply, lost
    /// its reply or was reset ran; each refused or dropped-before-forward one did not.
    #[tokio::test]
    async fn seeded_chaos_matches_the_model() {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        proxy.set_seed(7);
        proxy.set_stall_for(Duration::from_millis(10));
        proxy.set_probability(Fault::Refuse, 0.1);
        for fault in &Fault::ALL[1..] {
            proxy.set_probability(*fault, 0.1);
        }

        let total = 100;
        let mut failures = 0;
        for _ in 0..total {
            if request(proxy.addr(), INCR).await.is_failure() {
                failures += 1;
            }
        }
        let fired = |f| proxy.injected(f);
        let counts: Vec<_> = Fault::ALL.iter().map(|f| (f, fired(*f))).collect();
        println!("chaos: {failures}/{total} failed; injected {counts:?}");

        for fault in Fault::ALL {
            assert!(fired(fault) > 0, "{fault:?} never fired in this seeded run");
        }
        // Stalls end by their timer here, so those requests succeed late.
        let failed_faults = fired(Fault::Refuse)
            + fired(Fault::DropBeforeForward)
            + fired(Fault::DropAfterForward)
            + fired(Fault::ResetMidStream);
        assert_eq!(failures, failed_faults);
        assert_eq!(proxy.connections(), total);
        let ran = total - failures + fired(Fault::DropAfterForward) + fired(Fault::ResetMidStream);
        let expected = format!("${}\r\n{ran}\r\n", ran.to_string().len());
        assert_eq!(counter_in_redis(&redis).await, expected.as_bytes());
    }
}

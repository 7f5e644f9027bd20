//! Multi-node Redis topologies for tests: a real Redis Cluster ([`RedisCluster`], 3 primaries
//! and 3 replicas) and a real Sentinel setup ([`RedisSentinel`], one primary, one replica,
//! three sentinels), on free loopback ports, every process in its own temp dir and killed on
//! drop. Failures are real too: a node is SIGKILLed, and the tests wait for Redis' own
//! failover to finish.
//!
//! ```no_run
//! use test_support::topology::{RedisCluster, RedisSentinel};
//!
//! let mut cluster = RedisCluster::start(); // every slot served, every replica in sync
//! let url = cluster.seed_url(); // redis+cluster://127.0.0.1:p1,...
//! let victim = cluster.primary_for_slot(RedisCluster::slot_of("{user1}:token"));
//! cluster.kill(victim);
//! let promoted = cluster.wait_for_failover(victim); // one of its replicas, cluster ok again
//!
//! let mut sentinel = RedisSentinel::start();
//! let url = sentinel.url(); // redis+sentinel://127.0.0.1:s1,.../mymaster
//! let replica = sentinel.replica();
//! sentinel.kill_primary();
//! assert_eq!(sentinel.wait_for_failover(), replica);
//! ```
//!
//! # Waiting
//!
//! Nothing here sleeps to let something happen: every wait polls the real condition (`PING`,
//! `CLUSTER INFO`, `INFO replication`, `SENTINEL ...`) every [`POLL_INTERVAL`] up to a bounded
//! deadline, and panics with the last unmet condition (and the tail of the relevant server
//! logs) when the deadline passes.
//!
//! # Admin commands
//!
//! Queries go through [`command`] / [`pipeline`], a minimal blocking RESP2 client over a
//! `TcpStream` (the same approach as [`crate::ping`]), one fresh connection per call; only the
//! cluster's creation is delegated to `redis-cli --cluster create`.
//!
//! # Timing
//!
//! Failure detection is tuned short so tests stay fast: `cluster-node-timeout` is
//! [`CLUSTER_NODE_TIMEOUT_MS`], sentinel `down-after-milliseconds` is
//! [`SENTINEL_DOWN_AFTER_MS`]. A failover then typically completes within a few seconds.
//! Initial replica syncs are diskless with no delay (`repl-diskless-sync-delay 0`; the
//! default would wait 5 s before the first sync).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, ping, require_program};

/// How often every wait in this module re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long one process may take to answer PING after it was spawned.
const PROCESS_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a whole topology may take to become ready (cluster creation, replica syncs,
/// sentinel discovery).
const TOPOLOGY_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a failover (or a restarted node rejoining) may take.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// `cluster-node-timeout`: a primary unreachable this long is suspected (PFAIL), then failed
/// once a majority of primaries agree, and a replica takes over.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;
/// Sentinel `down-after-milliseconds`.
pub const SENTINEL_DOWN_AFTER_MS: u64 = 1000;
/// Sentinel `failover-timeout`. It also spaces failover attempts: when the sentinels split
/// their votes (each detected the failure at about the same time and voted for itself), the
/// next attempt comes 2 x this later. At 5000 such a rare round took ~11.5 s in all; at 2000 it
/// costs ~4 s more. For the same reason Sentinel will not start a second failover of the same
/// master within 2 x this of the previous one.
pub const SENTINEL_FAILOVER_TIMEOUT_MS: u64 = 2000;
/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;
/// A TCP connect or a reply taking longer than this counts as a failed probe.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Options every data node of both topologies gets: durable, and quick first syncs.
const DATA_NODE_ARGS: &[&str] = &[
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--repl-diskless-sync",
    "yes",
    "--repl-diskless-sync-delay",
    "0",
];

fn redis_server() -> PathBuf {
    require_program(
        "redis-server",
        "install it with `apt-get install redis-server` (the Makefile's `make deps` does)",
    )
}

fn redis_cli() -> PathBuf {
    require_program(
        "redis-cli",
        "install it with `apt-get install redis-tools` (the Makefile's `make deps` does)",
    )
}

// ---------------------------------------------------------------------------------------------
// A minimal RESP2 client.

/// One RESP2 reply. Error replies are returned as `Err` by [`command`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and friends.
    Status(String),
    Int(i64),
    /// A bulk string, decoded lossily as UTF-8 (admin replies are text).
    Bulk(String),
    /// A null bulk string or null array.
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a status or bulk reply.
    pub fn text(&self) -> Result<&str, String> {
        match self {
            Reply::Status(s) | Reply::Bulk(s) => Ok(s),
            other => Err(format!("expected a string reply, got {other:?}")),
        }
    }

    pub fn int(&self) -> Result<i64, String> {
        match self {
            Reply::Int(i) => Ok(*i),
            other => Err(format!("expected an integer reply, got {other:?}")),
        }
    }

    pub fn array(&self) -> Result<&[Reply], String> {
        match self {
            Reply::Array(items) => Ok(items),
            other => Err(format!("expected an array reply, got {other:?}")),
        }
    }

    /// A flat `[field, value, field, value, ...]` array (as `SENTINEL replicas` gives per
    /// instance) as a map.
    pub fn field_map(&self) -> Result<HashMap<String, String>, String> {
        let items = self.array()?;
        let mut map = HashMap::new();
        for pair in items.chunks(2) {
            if let [k, v] = pair {
                map.insert(k.text()?.to_owned(), v.text()?.to_owned());
            }
        }
        Ok(map)
    }
}

/// Sends one command to `addr` on a fresh connection and reads its reply, with short
/// connect/read timeouts. A Redis error reply (`-ERR ...`) is an `Err` naming the command.
///
/// Each call is a new connection: per-connection state (`READONLY`, `MULTI`, and the write
/// offset `WAIT` waits for) does not carry over; use [`pipeline`] for that.
pub fn command(addr: SocketAddr, args: &[&str]) -> Result<Reply, String> {
    pipeline(addr, &[args]).map(|mut replies| replies.remove(0))
}

/// Sends `commands` in order on one fresh connection and reads their replies. The first error
/// reply ends it as an `Err` naming that command. (E.g. `[SET k v], [WAIT 1 1000]`: WAIT then
/// waits for that SET.) Each reply may take up to 5 s.
pub fn pipeline(addr: SocketAddr, commands: &[&[&str]]) -> Result<Vec<Reply>, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{addr} {commands:?}: {what}: {e}");
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| fail("connect", &e))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| fail("socket options", &e))?;
    let mut request = Vec::new();
    for args in commands {
        request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in *args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
    }
    (&stream)
        .write_all(&request)
        .map_err(|e| fail("write", &e))?;
    let mut reader = BufReader::new(&stream);
    commands
        .iter()
        .map(|args| read_reply(&mut reader).map_err(|e| format!("{addr} {args:?}: reply: {e}")))
        .collect()
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let Some(line) = line.strip_suffix("\r\n") else {
        return Err(format!("truncated reply line {line:?}"));
    };
    let (kind, rest) = line.split_at(1.min(line.len()));
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| format!("bad length or integer in {line:?}"))
    };
    match kind {
        "+" => Ok(Reply::Status(rest.to_owned())),
        "-" => Err(format!("-{rest}")),
        ":" => Ok(Reply::Int(number()?)),
        "$" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Reply::Nil);
            };
            let mut buf = vec![0; len + 2];
            reader
                .read_exact(&mut buf)
                .map_err(|e| format!("read bulk: {e}"))?;
            buf.truncate(len);
            Ok(Reply::Bulk(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Reply::Nil);
            };
            (0..len)
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        _ => Err(format!("unknown reply type in {line:?}")),
    }
}

/// The value of `field` in an `INFO`-style text (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

fn info(addr: SocketAddr, section: &[&str]) -> Result<String, String> {
    Ok(command(addr, section)?.text()?.to_owned())
}

/// Cuts `replicas` off from `primary`, so that writes from now on reach the primary alone (as
/// the writes a crash loses do): each replica gets a wrong `masterauth`, so its reconnection
/// handshake fails, and the primary drops its replica connections. Returns once every replica
/// reports `master_link_status:down`.
pub fn cut_replication(primary: SocketAddr, replicas: &[SocketAddr]) {
    for &replica in replicas {
        command(
            replica,
            &["CONFIG", "SET", "masterauth", "not-the-password"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    command(primary, &["CLIENT", "KILL", "TYPE", "replica"]).unwrap_or_else(|e| panic!("{e}"));
    for &replica in replicas {
        wait_until(
            &format!("{replica} losing its link to {primary}"),
            FAILOVER_TIMEOUT,
            || {
                let replication = info(replica, &["INFO", "replication"])?;
                match info_field(&replication, "master_link_status") {
                    Some("down") => Ok(()),
                    status => Err(format!("master_link_status:{}", status.unwrap_or("?"))),
                }
            },
        );
    }
}

/// Polls `check` every [`POLL_INTERVAL`] until it succeeds, or panics after `timeout` with the
/// last reason it gave.
fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(reason) if Instant::now() >= deadline => {
                panic!("{what} did not happen within {timeout:?}; last state: {reason}")
            }
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// `Ok` once the replica at `addr` reports `master_link_status:up`.
fn check_replica_linked(addr: SocketAddr) -> Result<(), String> {
    let info = info(addr, &["INFO", "replication"])?;
    match info_field(&info, "master_link_status") {
        Some("up") => Ok(()),
        other => Err(format!(
            "replica {addr}: master_link_status:{}",
            other.unwrap_or("?")
        )),
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------------------------
// One redis-server process.

/// A redis-server (or sentinel) process on a loopback port, in its own temp dir, logging to
/// `redis.log` there so failures can show what the server said. Killed on drop.
struct Daemon {
    /// `None` while killed.
    child: Option<Child>,
    port: u16,
    /// Arguments fixed for the process' life (port, dir, cluster options, config file).
    base_args: Vec<String>,
    /// Arguments of the current role (`--replicaof ...`), replaced on restart.
    role_args: Vec<String>,
    dir: tempfile::TempDir,
    what: String,
}

impl Daemon {
    /// Spawns a process whose arguments `make_args(port, dir)` builds, and waits until it
    /// answers PING. A port can be taken between [`free_port`] and the bind, so a process that
    /// exits early is retried on a new port (and a new dir) a few times.
    fn launch(
        what: &str,
        role_args: &[String],
        mut make_args: impl FnMut(u16, &Path) -> Vec<String>,
    ) -> Self {
        let mut last_err = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("cannot create a temp dir for redis-server");
            let port = free_port();
            let base_args = make_args(port, dir.path());
            let mut daemon = Self {
                child: None,
                port,
                base_args,
                role_args: role_args.to_vec(),
                dir,
                what: format!("{what} 127.0.0.1:{port}"),
            };
            match daemon.spawn().and_then(|()| daemon.wait_ready()) {
                Ok(()) => return daemon,
                Err(err) => last_err = err,
            }
        }
        panic!("{what} did not start: {last_err}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open the log of {}: {e}", self.what))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot clone a log handle: {e}"))?;
        let child = Command::new(redis_server())
            .args(&self.base_args)
            .args(&self.role_args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot spawn redis-server for {}: {e}", self.what))?;
        self.child = Some(child);
        Ok(())
    }

    /// Readiness probe: PING until PONG, or fail if the process exits or time runs out.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PROCESS_READY_TIMEOUT;
        loop {
            self.check_running()?;
            if ping(self.addr()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} gave no PONG within {PROCESS_READY_TIMEOUT:?}{}",
                    self.what,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error if the process was killed or has exited on its own.
    fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = &mut self.child else {
            return Err(format!("{} is killed", self.what));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited with {status}{}",
                self.what,
                self.log_tail()
            )),
            Err(e) => Err(format!("cannot check on {}: {e}", self.what)),
        }
    }

    fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The last lines of the server log, formatted to append to an error message.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = File::open(self.log_path()).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
        format!(
            "\n  last lines of {}:\n    {tail}",
            self.log_path().display()
        )
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port and dir (so its AOF, `nodes.conf` or sentinel
    /// config is reloaded), with new role arguments, and waits for PING.
    fn restart(&mut self, role_args: &[String]) {
        self.kill();
        self.role_args = role_args.to_vec();
        if let Err(err) = self.spawn().and_then(|()| self.wait_ready()) {
            panic!("restarting {} failed: {err}", self.what);
        }
    }
}

/// A helper child process (redis-cli) killed if still running when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Hash slots.

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection, as in Redis'
/// `crc16.c`. `crc16(b"123456789") == 0x31C3`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`, exactly as Redis computes it: if the key has a `{` followed later
/// by a `}` with at least one byte between them, only the bytes between the first `{` and the
/// first `}` after it are hashed (the hash tag); otherwise the whole key is.
pub fn slot_of(key: &str) -> u16 {
    slot_of_bytes(key.as_bytes())
}

/// [`slot_of`] for a binary key.
pub fn slot_of_bytes(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) & (SLOTS - 1)
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster.

/// One line of `CLUSTER NODES`, as one node sees the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodeView {
    pub id: String,
    /// `None` for a node whose address is not known (yet).
    pub addr: Option<SocketAddr>,
    /// `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`, ...
    pub flags: Vec<String>,
    /// The node id of its primary, for a replica.
    pub primary_id: Option<String>,
    /// Inclusive slot ranges served (importing/migrating entries are left out).
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNodeView {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub fn is_primary(&self) -> bool {
        self.has_flag("master")
    }

    /// Flagged `fail` (agreed failed) or `fail?` (suspected by this view's node).
    pub fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
    }
}

/// Parses the text of `CLUSTER NODES`.
pub fn parse_cluster_nodes(text: &str) -> Result<Vec<ClusterNodeView>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return Err(format!("short CLUSTER NODES line {line:?}"));
            }
            // `ip:port@cport[,hostname]`
            let addr = fields[1]
                .split(['@', ','])
                .next()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .filter(|a| a.port() != 0);
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| {
                    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
                    match (lo.parse(), hi.parse()) {
                        (Ok(lo), Ok(hi)) => Ok((lo, hi)),
                        _ => Err(format!("bad slot range {s:?} in {line:?}")),
                    }
                })
                .collect::<Result<_, _>>()?;
            Ok(ClusterNodeView {
                id: fields[0].to_owned(),
                addr,
                flags: fields[2].split(',').map(str::to_owned).collect(),
                primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// What a primary served, and who replicated it, when [`RedisCluster::kill`] killed it.
#[derive(Debug, Clone)]
struct KilledPrimary {
    slots: Vec<(u16, u16)>,
    replica_ids: Vec<String>,
}

/// A real Redis Cluster of 3 primaries and 3 replicas (one each) on loopback, built with
/// `redis-cli --cluster create`. Every node persists with `appendfsync always`.
pub struct RedisCluster {
    nodes: Vec<Daemon>,
    /// Node ids, parallel to `nodes` (stable across restarts: they live in `nodes.conf`).
    ids: Vec<String>,
    killed: HashMap<SocketAddr, KilledPrimary>,
}

impl RedisCluster {
    pub const PRIMARIES: usize = 3;
    pub const NODES: usize = 6;

    /// Starts 6 nodes, joins them with `redis-cli --cluster create ... --cluster-replicas 1`,
    /// and returns once every node says `cluster_state:ok` with `cluster_slots_ok:16384`, all
    /// nodes agree on who serves which slots, and every replica has `master_link_status:up`.
    pub fn start() -> Self {
        let nodes: Vec<Daemon> = (0..Self::NODES)
            .map(|i| {
                Daemon::launch(&format!("cluster node {i}"), &[], |port, _dir| {
                    // The cluster bus gets its own free port (`cluster-port`) rather than the
                    // default port + 10000, which may be taken or past 65535.
                    let bus_port = loop {
                        let p = free_port();
                        if p != port {
                            break p;
                        }
                    };
                    let mut args: Vec<String> = [
                        "--port",
                        &port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--daemonize",
                        "no",
                        "--protected-mode",
                        "no",
                        "--dir",
                        ".",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &CLUSTER_NODE_TIMEOUT_MS.to_string(),
                        "--cluster-port",
                        &bus_port.to_string(),
                        "--cluster-announce-ip",
                        "127.0.0.1",
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    args.extend(DATA_NODE_ARGS.iter().map(|a| (*a).to_owned()));
                    args
                })
            })
            .collect();
        let mut cluster = Self {
            nodes,
            ids: Vec::new(),
            killed: HashMap::new(),
        };
        cluster.create();
        cluster.ids = cluster
            .nodes
            .iter()
            .map(|n| {
                command(n.addr(), &["CLUSTER", "MYID"])
                    .and_then(|r| r.text().map(str::to_owned))
                    .unwrap_or_else(|e| panic!("CLUSTER MYID failed: {e}"))
            })
            .collect();
        wait_until("the cluster becoming ready", TOPOLOGY_READY_TIMEOUT, || {
            Self::check_initial_shape(&cluster.check_ready()?)
        });
        cluster
    }

    /// Runs `redis-cli --cluster create`, bounded by [`TOPOLOGY_READY_TIMEOUT`].
    fn create(&mut self) {
        let log_path = self.nodes[0].dir.path().join("cluster-create.log");
        let log = File::create(&log_path).expect("cannot create the redis-cli log");
        let log_err = log.try_clone().expect("cannot clone a log handle");
        let cli = Command::new(redis_cli())
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| n.addr().to_string()))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("cannot spawn redis-cli");
        // Killed on drop, so a timeout below does not leave it running.
        let mut cli = KillOnDrop(cli);
        let status = wait_until(
            "redis-cli --cluster create finishing",
            TOPOLOGY_READY_TIMEOUT,
            || match cli.0.try_wait() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err(format!(
                    "still running; output so far:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )),
                Err(e) => Err(format!("cannot wait for redis-cli: {e}")),
            },
        );
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !status.success() || !output.contains("[OK] All 16384 slots covered") {
            panic!("redis-cli --cluster create failed ({status}):\n{output}");
        }
    }

    /// `Ok` (with the agreed view) once every running node reports `cluster_state:ok` and all
    /// 16384 slots ok, every running node has the same view of the cluster (each node's role,
    /// primary and slots), none of them flags a running node as failing, and every running
    /// replica whose primary is running is linked up.
    fn check_ready(&mut self) -> Result<Vec<ClusterNodeView>, String> {
        type Shape = Vec<(String, bool, Option<String>, Vec<(u16, u16)>)>;
        let running: Vec<String> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .map(|i| self.ids[i].clone())
            .collect();
        let mut agreed: Option<(SocketAddr, Shape, Vec<ClusterNodeView>)> = None;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                continue;
            }
            self.nodes[i].check_running()?;
            let addr = self.nodes[i].addr();
            Self::check_node_ok(addr)?;
            let view = Self::view_of(addr)?;
            if view.len() != Self::NODES {
                return Err(format!("{addr} knows {} nodes: {view:?}", view.len()));
            }
            for entry in view.iter().filter(|n| running.contains(&n.id)) {
                let bad = ["fail", "fail?", "handshake", "noaddr"];
                if entry.addr.is_none() || entry.flags.iter().any(|f| bad.contains(&f.as_str())) {
                    return Err(format!("{addr} sees running node {entry:?}"));
                }
            }
            let me = view
                .iter()
                .find(|n| n.has_flag("myself"))
                .ok_or_else(|| format!("{addr}: no `myself` in CLUSTER NODES"))?;
            if me.has_flag("slave") && me.primary_id.as_ref().is_some_and(|p| running.contains(p)) {
                check_replica_linked(addr)?;
            }
            let mut shape: Shape = view
                .iter()
                .map(|n| {
                    (
                        n.id.clone(),
                        n.is_primary(),
                        n.primary_id.clone(),
                        n.slots.clone(),
                    )
                })
                .collect();
            shape.sort();
            match &agreed {
                None => agreed = Some((addr, shape, view)),
                Some((first, expected, _)) if *expected != shape => {
                    return Err(format!(
                        "{addr} and {first} disagree: {shape:?} vs {expected:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        agreed
            .map(|(_, _, view)| view)
            .ok_or_else(|| "no node is running".to_owned())
    }

    /// `Ok` if `view` has [`Self::PRIMARIES`] primaries serving slots, each with exactly one
    /// replica.
    fn check_initial_shape(view: &[ClusterNodeView]) -> Result<(), String> {
        let primaries: Vec<&ClusterNodeView> = view
            .iter()
            .filter(|n| n.is_primary() && !n.slots.is_empty())
            .collect();
        if primaries.len() != Self::PRIMARIES {
            return Err(format!(
                "{} primaries serve slots: {view:?}",
                primaries.len()
            ));
        }
        for primary in primaries {
            let replicas = view
                .iter()
                .filter(|n| n.primary_id.as_ref() == Some(&primary.id))
                .count();
            if replicas != 1 {
                return Err(format!(
                    "{:?} has {replicas} replicas: {view:?}",
                    primary.addr
                ));
            }
        }
        Ok(())
    }

    fn check_node_ok(addr: SocketAddr) -> Result<(), String> {
        let info = info(addr, &["CLUSTER", "INFO"])?;
        let state = info_field(&info, "cluster_state");
        let slots_ok = info_field(&info, "cluster_slots_ok");
        if state != Some("ok") || slots_ok != Some("16384") {
            return Err(format!(
                "{addr}: cluster_state:{} cluster_slots_ok:{}",
                state.unwrap_or("?"),
                slots_ok.unwrap_or("?")
            ));
        }
        Ok(())
    }

    fn view_of(addr: SocketAddr) -> Result<Vec<ClusterNodeView>, String> {
        parse_cluster_nodes(command(addr, &["CLUSTER", "NODES"])?.text()?)
    }

    fn index_of(&self, addr: SocketAddr) -> usize {
        self.nodes
            .iter()
            .position(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"))
    }

    /// `CLUSTER NODES` as the first running node that answers sees it.
    pub fn view(&self) -> Vec<ClusterNodeView> {
        let mut errors = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match Self::view_of(node.addr()) {
                Ok(view) => return view,
                Err(e) => errors.push(e),
            }
        }
        panic!("no running cluster node answered CLUSTER NODES: {errors:?}");
    }

    /// All 6 node addresses, in creation order (whatever their current role).
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Daemon::addr).collect()
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...` listing every node as a seed.
    pub fn seed_url(&self) -> String {
        let seeds: Vec<String> = self.nodes().iter().map(SocketAddr::to_string).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The hash slot of `key` (see [`slot_of`]).
    pub fn slot_of(key: &str) -> u16 {
        slot_of(key)
    }

    /// The primary serving `slot` in the current view (a killed primary stays the owner
    /// until its failover completes).
    pub fn primary_for_slot(&self, slot: u16) -> SocketAddr {
        assert!(slot < SLOTS, "slot {slot} is out of range");
        let view = self.view();
        let owner = view
            .iter()
            .find(|n| n.is_primary() && n.serves(slot))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}: {view:?}"));
        owner
            .addr
            .unwrap_or_else(|| panic!("the owner of slot {slot} has no address: {owner:?}"))
    }

    /// The primaries serving slots in the current view, ordered by their first slot.
    pub fn primaries(&self) -> Vec<SocketAddr> {
        let mut primaries: Vec<(u16, SocketAddr)> = self
            .view()
            .iter()
            .filter(|n| n.is_primary() && !n.slots.is_empty())
            .filter_map(|n| Some((n.slots.iter().map(|r| r.0).min()?, n.addr?)))
            .collect();
        primaries.sort();
        primaries.into_iter().map(|(_, addr)| addr).collect()
    }

    /// The replicas of `primary` in the current view.
    pub fn replicas_of(&self, primary: SocketAddr) -> Vec<SocketAddr> {
        let id = &self.ids[self.index_of(primary)];
        self.view()
            .iter()
            .filter(|n| n.primary_id.as_ref() == Some(id))
            .filter_map(|n| n.addr)
            .collect()
    }

    /// One hash tag (`{...}`, braces included) per primary, in [`Self::primaries`] order, such
    /// that keys containing the tag hash to a slot that primary serves.
    pub fn tag_on_each_primary(&self) -> Vec<(SocketAddr, String)> {
        let view = self.view();
        self.primaries()
            .into_iter()
            .map(|primary| {
                let owner = view
                    .iter()
                    .find(|n| n.addr == Some(primary))
                    .expect("a primary from this view");
                let tag = (0u32..)
                    .map(|i| format!("{{t{i}}}"))
                    .find(|tag| owner.serves(slot_of(tag)))
                    .expect("some tag hashes to every non-empty slot range");
                (primary, tag)
            })
            .collect()
    }

    /// SIGKILLs one node, as a crash would. For a primary, the slots it served and its
    /// replicas (as any running node knows them) are recorded first, for
    /// [`Self::wait_for_failover`].
    pub fn kill(&mut self, addr: SocketAddr) {
        let i = self.index_of(addr);
        assert!(self.nodes[i].is_running(), "{addr} is already killed");
        let id = self.ids[i].clone();
        let view = Self::view_of(addr).unwrap_or_else(|e| panic!("cannot read {addr}: {e}"));
        let me = view
            .iter()
            .find(|n| n.has_flag("myself"))
            .unwrap_or_else(|| panic!("{addr}: no `myself` in CLUSTER NODES"));
        if me.is_primary() && !me.slots.is_empty() {
            let mut replica_ids: Vec<String> = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                for entry in Self::view_of(node.addr()).unwrap_or_default() {
                    if entry.primary_id.as_ref() == Some(&id) && !replica_ids.contains(&entry.id) {
                        replica_ids.push(entry.id);
                    }
                }
            }
            let killed = KilledPrimary {
                slots: me.slots.clone(),
                replica_ids,
            };
            self.killed.insert(addr, killed);
        }
        self.nodes[i].kill();
    }

    /// Starts a killed node again on its port and dir (its AOF and `nodes.conf` are reloaded,
    /// so it rejoins with its identity; a failed-over primary comes back as a replica of its
    /// successor). Returns once the cluster is whole again: every running node (the restarted
    /// one included) reports `cluster_state:ok`, all running nodes agree on every node's role
    /// and slots and flag none of the running ones as failing, and running replicas of running
    /// primaries are linked up. Bounded by [`FAILOVER_TIMEOUT`].
    pub fn restart(&mut self, addr: SocketAddr) {
        let i = self.index_of(addr);
        assert!(
            !self.nodes[i].is_running(),
            "{addr} is running; kill it first"
        );
        self.nodes[i].restart(&[]);
        self.killed.remove(&addr);
        wait_until(
            &format!("restarted node {addr} rejoining"),
            FAILOVER_TIMEOUT,
            || self.check_ready(),
        );
    }

    /// Waits until a replica of `old_primary` (killed with [`Self::kill`]) has been promoted:
    /// every running node sees it as the primary of all the slots `old_primary` served, and the
    /// cluster is ok again (as [`Self::restart`] checks it: `cluster_state:ok`, all slots ok,
    /// all running nodes agree). Returns the new primary. Bounded by [`FAILOVER_TIMEOUT`].
    pub fn wait_for_failover(&mut self, old_primary: SocketAddr) -> SocketAddr {
        let killed = self.killed.get(&old_primary).cloned().unwrap_or_else(|| {
            panic!("{old_primary} is not a primary killed with RedisCluster::kill")
        });
        assert!(
            !killed.replica_ids.is_empty(),
            "{old_primary} had no replica to fail over to"
        );
        wait_until(
            &format!("failover of {old_primary}"),
            FAILOVER_TIMEOUT,
            || {
                // All running nodes agree on this view, so checking it is enough.
                let view = self.check_ready()?;
                let owners: Vec<&ClusterNodeView> = view
                    .iter()
                    .filter(|n| n.is_primary() && killed.slots.iter().any(|r| n.slots.contains(r)))
                    .collect();
                match owners.as_slice() {
                    [owner]
                        if killed.replica_ids.contains(&owner.id)
                            && killed.slots.iter().all(|r| owner.slots.contains(r)) =>
                    {
                        owner
                            .addr
                            .ok_or_else(|| format!("the new primary has no address: {owner:?}"))
                    }
                    _ => Err(format!(
                        "the slots of {old_primary} are served by {:?}",
                        owners
                            .iter()
                            .map(|n| (n.addr, &n.flags))
                            .collect::<Vec<_>>()
                    )),
                }
            },
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Sentinel.

/// One primary, one replica and three sentinels monitoring them as [`Self::master_name`]
/// (quorum 2), on loopback. The data nodes persist with `appendfsync always`.
pub struct RedisSentinel {
    /// The two data nodes; `primary` indexes the current primary, the other is the replica.
    data: [Daemon; 2],
    primary: usize,
    sentinels: Vec<Daemon>,
}

impl RedisSentinel {
    pub const MASTER_NAME: &'static str = "mymaster";
    pub const SENTINELS: usize = 3;
    const QUORUM: usize = 2;

    /// Starts the primary, the replica (`--replicaof`) and, once the replica is linked, three
    /// sentinels. Returns once every sentinel reports the primary, knows the two other
    /// sentinels, and sees the replica up.
    pub fn start() -> Self {
        let data_args = |port: u16, _dir: &Path| {
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                ".",
            ]
            .map(str::to_owned)
            .to_vec();
            args.extend(DATA_NODE_ARGS.iter().map(|a| (*a).to_owned()));
            args
        };
        let primary = Daemon::launch("sentinel primary", &[], data_args);
        let replica = Daemon::launch("sentinel replica", &replicaof(primary.addr()), data_args);
        let replica_addr = replica.addr();
        // Sentinels learn replicas from the primary's INFO, refreshed only every 10 s, so they
        // start once the replica is linked, and see it on their first INFO.
        wait_until("the replica syncing", TOPOLOGY_READY_TIMEOUT, || {
            check_replica_linked(replica_addr)
        });
        let primary_port = primary.port;
        let sentinels = (0..Self::SENTINELS)
            .map(|i| {
                Daemon::launch(&format!("sentinel {i}"), &[], |port, dir| {
                    let conf = dir.join("sentinel.conf");
                    let text = format!(
                        "port {port}\n\
                         bind 127.0.0.1\n\
                         daemonize no\n\
                         protected-mode no\n\
                         dir {dir}\n\
                         sentinel resolve-hostnames no\n\
                         sentinel announce-ip 127.0.0.1\n\
                         sentinel monitor {name} 127.0.0.1 {primary_port} {quorum}\n\
                         sentinel down-after-milliseconds {name} {SENTINEL_DOWN_AFTER_MS}\n\
                         sentinel failover-timeout {name} {SENTINEL_FAILOVER_TIMEOUT_MS}\n\
                         sentinel parallel-syncs {name} 1\n",
                        dir = dir.display(),
                        name = Self::MASTER_NAME,
                        quorum = Self::QUORUM,
                    );
                    std::fs::write(&conf, text).expect("cannot write sentinel.conf");
                    vec![conf.to_string_lossy().into_owned(), "--sentinel".to_owned()]
                })
            })
            .collect();
        let mut setup = Self {
            data: [primary, replica],
            primary: 0,
            sentinels,
        };
        wait_until(
            "the sentinels discovering the topology",
            TOPOLOGY_READY_TIMEOUT,
            || setup.check_ready(),
        );
        setup
    }

    /// Every sentinel reports the current primary, knows the other sentinels, and sees the
    /// replica without `s_down`/`disconnected`; the replica is linked up.
    fn check_ready(&mut self) -> Result<(), String> {
        let primary = self.primary();
        let replica = self.replica();
        for daemon in self.data.iter_mut().chain(self.sentinels.iter_mut()) {
            daemon.check_running()?;
        }
        check_replica_linked(replica)?;
        for sentinel in self.sentinel_addrs() {
            let reported = Self::master_addr_from(sentinel)?;
            if reported != primary {
                return Err(format!("{sentinel} reports {reported} as the primary"));
            }
            let peers = command(sentinel, &["SENTINEL", "SENTINELS", Self::MASTER_NAME])?;
            let peers = peers.array()?;
            if peers.len() != Self::SENTINELS - 1 {
                return Err(format!("{sentinel} knows {} other sentinels", peers.len()));
            }
            Self::check_known_replica(sentinel, replica)?;
        }
        Ok(())
    }

    fn check_known_replica(sentinel: SocketAddr, replica: SocketAddr) -> Result<(), String> {
        let replicas = command(sentinel, &["SENTINEL", "REPLICAS", Self::MASTER_NAME])?;
        let port = replica.port().to_string();
        for entry in replicas.array()? {
            let fields = entry.field_map()?;
            if fields.get("port") == Some(&port) {
                let flags = fields.get("flags").map_or("", String::as_str);
                return if flags.split(',').any(|f| f == "slave")
                    && !flags.contains("s_down")
                    && !flags.contains("disconnected")
                {
                    Ok(())
                } else {
                    Err(format!("{sentinel} sees replica {replica} as {flags}"))
                };
            }
        }
        Err(format!("{sentinel} does not know replica {replica}"))
    }

    fn master_addr_from(sentinel: SocketAddr) -> Result<SocketAddr, String> {
        let reply = command(
            sentinel,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER_NAME],
        )?;
        match reply.array()? {
            [ip, port] => format!("{}:{}", ip.text()?, port.text()?)
                .parse()
                .map_err(|e| format!("{sentinel}: bad master address: {e}")),
            other => Err(format!("{sentinel}: unexpected reply {other:?}")),
        }
    }

    /// What `sentinel` currently reports as the primary of [`Self::MASTER_NAME`].
    pub fn master_addr_by_sentinel(&self, sentinel: SocketAddr) -> SocketAddr {
        Self::master_addr_from(sentinel).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn master_name(&self) -> &'static str {
        Self::MASTER_NAME
    }

    /// `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/mymaster`.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinel_addrs()
            .iter()
            .map(SocketAddr::to_string)
            .collect();
        format!(
            "redis+sentinel://{}/{}",
            sentinels.join(","),
            Self::MASTER_NAME
        )
    }

    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(Daemon::addr).collect()
    }

    /// The current primary (as of the last [`Self::wait_for_failover`]); possibly killed.
    pub fn primary(&self) -> SocketAddr {
        self.data[self.primary].addr()
    }

    /// The current replica (after a failover: the old primary, possibly still killed).
    pub fn replica(&self) -> SocketAddr {
        self.data[1 - self.primary].addr()
    }

    /// SIGKILLs the current primary.
    pub fn kill_primary(&mut self) {
        assert!(
            self.data[self.primary].is_running(),
            "the primary is already killed"
        );
        self.data[self.primary].kill();
    }

    /// Waits until every sentinel reports the replica as the primary and the replica says
    /// `role:master`, then swaps the roles. Returns the new primary. Bounded by
    /// [`FAILOVER_TIMEOUT`].
    pub fn wait_for_failover(&mut self) -> SocketAddr {
        let old = self.primary();
        let new = self.replica();
        assert!(
            self.data[1 - self.primary].is_running(),
            "the replica {new} is killed; nothing can be promoted"
        );
        wait_until(
            &format!("sentinel failover from {old} to {new}"),
            FAILOVER_TIMEOUT,
            || {
                for sentinel in self.sentinel_addrs() {
                    let reported = Self::master_addr_from(sentinel)?;
                    if reported != new {
                        return Err(format!("{sentinel} reports {reported} as the primary"));
                    }
                }
                let info = info(new, &["INFO", "replication"])?;
                match info_field(&info, "role") {
                    Some("master") => Ok(()),
                    role => Err(format!("{new} has role:{}", role.unwrap_or("?"))),
                }
            },
        );
        self.primary = 1 - self.primary;
        new
    }

    /// After a failover, starts the old primary again (same port and dir) as a replica of the
    /// new one, and waits until it is linked up and every sentinel sees it as a healthy
    /// replica. A later [`Self::kill_primary`] + [`Self::wait_for_failover`] fails back to it
    /// (Sentinel waits up to 2 x failover-timeout between failovers of one master).
    pub fn restart_old_primary_as_replica(&mut self) {
        let replica = 1 - self.primary;
        assert!(
            !self.data[replica].is_running(),
            "the old primary is running; call kill_primary and wait_for_failover first"
        );
        let args = replicaof(self.primary());
        self.data[replica].restart(&args);
        wait_until(
            "the old primary rejoining as a replica",
            FAILOVER_TIMEOUT,
            || self.check_ready(),
        );
    }
}

fn replicaof(primary: SocketAddr) -> Vec<String> {
    vec![
        "--replicaof".to_owned(),
        primary.ip().to_string(),
        primary.port().to_string(),
    ]
}

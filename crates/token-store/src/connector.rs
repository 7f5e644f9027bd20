//! How the store reaches Redis, chosen by the form of `--redis-url`:
//!
//! - `redis://host:port` (or `rediss://`, `unix://`): one node.
//! - `redis+sentinel://[user:password@]host:port,host:port/MASTER_NAME`: the primary that the
//!   sentinels name, looked up again for every new connection, so failovers are followed as
//!   soon as a broken connection is replaced.
//! - `redis+cluster://[user:password@]host:port,host:port`: a Redis Cluster; redis-rs routes
//!   each call by its key's slot and follows MOVED/ASK.
//!
//! [`Connector`] is the pool's manager; [`Conn`] is what it hands out, a multiplexed
//! connection of either kind that scripts and commands run on alike.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster::ClusterClient;
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::cluster_routing::{
    Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
};
use deadpool_redis::redis::io::tcp::TcpSettings;
use deadpool_redis::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo as _, Pipeline,
    RedisFuture, RedisResult, Value,
};
use tokio::sync::Mutex;

const SENTINEL_SCHEME: &str = "redis+sentinel://";
const CLUSTER_SCHEME: &str = "redis+cluster://";
const DEFAULT_SENTINEL_PORT: u16 = 26379;
const DEFAULT_REDIS_PORT: u16 = 6379;

/// Which kind of Redis deployment the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    SingleNode,
    Sentinel,
    Cluster,
}

impl Topology {
    /// The topology a `--redis-url` names, by its scheme.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with(SENTINEL_SCHEME) {
            Topology::Sentinel
        } else if url.starts_with(CLUSTER_SCHEME) {
            Topology::Cluster
        } else {
            Topology::SingleNode
        }
    }

    /// Whether the deployment has replicas that writes can be made to wait for.
    pub fn has_replicas(self) -> bool {
        !matches!(self, Topology::SingleNode)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Topology::SingleNode => "single_node",
            Topology::Sentinel => "sentinel",
            Topology::Cluster => "cluster",
        }
    }
}

/// Why a Redis URL was refused. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{scheme} URL needs at least one host:port")]
    NoHosts { scheme: &'static str },
    #[error("`{0}` is not host:port")]
    BadHost(String),
    #[error(
        "redis+sentinel URL needs the master name as its path: redis+sentinel://host:port/NAME"
    )]
    NoMasterName,
    #[error("redis+cluster URL takes no path (Cluster has only database 0)")]
    ClusterPath,
    #[error("{0}")]
    Redis(String),
}

/// The parsed form of a `redis+sentinel://` or `redis+cluster://` URL. No `Debug`: it holds
/// the password.
struct SeedList {
    hosts: Vec<(String, u16)>,
    /// What follows the host list, without the leading `/`.
    path: String,
    username: Option<String>,
    password: Option<String>,
}

fn parse_seed_list(
    scheme: &'static str,
    rest: &str,
    default_port: u16,
) -> Result<SeedList, UrlError> {
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let hosts = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| parse_host(host, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    if hosts.is_empty() {
        return Err(UrlError::NoHosts { scheme });
    }
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (
                Some(user.to_owned()).filter(|u| !u.is_empty()),
                Some(password.to_owned()),
            ),
            None => (Some(info.to_owned()).filter(|u| !u.is_empty()), None),
        },
    };
    Ok(SeedList {
        hosts,
        path: path.trim_end_matches('/').to_owned(),
        username,
        password,
    })
}

fn parse_host(host: &str, default_port: u16) -> Result<(String, u16), UrlError> {
    let bad = || UrlError::BadHost(host.to_owned());
    // `[::1]:port` for IPv6.
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (name, rest) = v6.split_once(']').ok_or_else(bad)?;
        (name, rest.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(port) => port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    if name.is_empty() || name.contains(['/', '?', '#', ' ']) {
        return Err(bad());
    }
    Ok((name.to_owned(), port))
}

/// Opens connections to the deployment a URL names. The pool's manager.
pub struct Connector {
    target: Target,
    config: AsyncConnectionConfig,
    /// A human-readable name of the deployment, for logs and spans (no password).
    description: String,
    /// The single node's address, for spans; `None` for Sentinel and Cluster.
    node: Option<(String, u16)>,
}

enum Target {
    SingleNode(redis::Client),
    /// `SentinelClient` asks with `&mut self` (it remembers the sentinels' connections).
    Sentinel(Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

impl Connector {
    /// `timeout` bounds each connection attempt; replies are bounded by the store's own
    /// per-call timeout instead of redis-rs's default 500 ms.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, UrlError> {
        // Small request/reply exchanges: without TCP_NODELAY, Nagle and delayed ACKs hold
        // each reply back by up to 40 ms (redis-rs leaves it off by default).
        let tcp = || TcpSettings::default().set_nodelay(true);
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(timeout));
        let redis_error = |err: redis::RedisError| UrlError::Redis(err.to_string());
        if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
            let seeds = parse_seed_list("redis+sentinel", rest, DEFAULT_SENTINEL_PORT)?;
            if seeds.path.is_empty() || seeds.path.contains('/') {
                return Err(UrlError::NoMasterName);
            }
            let sentinels = seeds
                .hosts
                .iter()
                .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
            let mut builder =
                SentinelClientBuilder::new(sentinels, &seeds.path, SentinelServerType::Master)
                    .map_err(redis_error)?
                    .set_client_to_redis_tcp_settings(tcp())
                    .set_client_to_sentinel_tcp_settings(tcp());
            if let Some(username) = &seeds.username {
                builder = builder.set_client_to_redis_username(username);
            }
            if let Some(password) = &seeds.password {
                builder = builder.set_client_to_redis_password(password);
            }
            let client = builder.build().map_err(redis_error)?;
            return Ok(Self {
                description: format!("sentinel master {} via {}", seeds.path, join(&seeds.hosts)),
                target: Target::Sentinel(Mutex::new(client)),
                config,
                node: None,
            });
        }
        if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            let seeds = parse_seed_list("redis+cluster", rest, DEFAULT_REDIS_PORT)?;
            if !seeds.path.is_empty() {
                return Err(UrlError::ClusterPath);
            }
            let nodes = seeds
                .hosts
                .iter()
                .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
            let mut builder = ClusterClient::builder(nodes)
                .tcp_settings(tcp())
                .connection_timeout(timeout)
                // The store bounds the whole call; redis-rs's per-reply default would cut
                // replies off at 500 ms whatever the store allows.
                .response_timeout(timeout);
            if let Some(username) = &seeds.username {
                builder = builder.username(username);
            }
            if let Some(password) = &seeds.password {
                builder = builder.password(password);
            }
            return Ok(Self {
                description: format!("cluster {}", join(&seeds.hosts)),
                target: Target::Cluster(builder.build().map_err(redis_error)?),
                config,
                node: None,
            });
        }
        let info = url
            .into_connection_info()
            .map_err(redis_error)?
            .set_tcp_settings(tcp());
        let node = match info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Some((host.clone(), *port))
            }
            _ => None,
        };
        let description = match &node {
            Some((host, port)) => format!("{host}:{port}"),
            None => info.addr().to_string(),
        };
        Ok(Self {
            target: Target::SingleNode(redis::Client::open(info).map_err(redis_error)?),
            config,
            description,
            node,
        })
    }

    pub fn topology(&self) -> Topology {
        match self.target {
            Target::SingleNode(_) => Topology::SingleNode,
            Target::Sentinel(_) => Topology::Sentinel,
            Target::Cluster(_) => Topology::Cluster,
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn node(&self) -> Option<&(String, u16)> {
        self.node.as_ref()
    }
}

fn join(hosts: &[(String, u16)]) -> String {
    hosts
        .iter()
        .map(|(host, port)| format!("{host}:{port}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl managed::Manager for Connector {
    type Type = Conn;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<Conn, redis::RedisError> {
        match &self.target {
            Target::SingleNode(client) => Ok(Conn::Node(
                client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?,
            )),
            // Asks the sentinels for the primary and checks with ROLE that it is one.
            Target::Sentinel(client) => Ok(Conn::Node(
                client
                    .lock()
                    .await
                    .get_async_connection_with_config(&self.config)
                    .await?,
            )),
            Target::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<redis::RedisError> {
        // Only connections borrowed for one call come back (shared lanes keep theirs), so a
        // round trip here is rare and catches a connection that died while idle.
        redis::cmd("PING").query_async::<()>(conn).await?;
        Ok(())
    }
}

/// A multiplexed connection to one node or to a Cluster. Cheap to clone; clones share it.
#[derive(Clone)]
pub enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// `WAIT replicas timeout` on the primary that holds `key`, after a write made on this
    /// same connection (WAIT counts the replicas that have this connection's last write).
    /// Returns how many replicas acknowledged it.
    pub async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis() as u64);
        let reached = match self {
            Conn::Node(conn) => wait.query_async::<i64>(conn).await?,
            // redis-rs would send WAIT to every primary and keep the smallest answer; only the
            // primary that took the write knows about it.
            Conn::Cluster(conn) => {
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                redis::from_redis_value(conn.route_command(wait, routing).await?)?
            }
        };
        Ok(u32::try_from(reached).unwrap_or(0))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        let seeds = parse_seed_list(
            "redis+sentinel",
            "a:1,b,[::1]:3/mymaster",
            DEFAULT_SENTINEL_PORT,
        )
        .unwrap();
        assert_eq!(
            seeds.hosts,
            vec![
                ("a".to_owned(), 1),
                ("b".to_owned(), DEFAULT_SENTINEL_PORT),
                ("::1".to_owned(), 3)
            ]
        );
        assert_eq!(seeds.path, "mymaster");
        let seeds =
            parse_seed_list("redis+sentinel", "u:p@ss@h:1/m", DEFAULT_SENTINEL_PORT).unwrap();
        assert_eq!(seeds.username.as_deref(), Some("u"));
        assert_eq!(seeds.password.as_deref(), Some("p@ss"));
        let seeds =
            parse_seed_list("redis+sentinel", ":secret@h:1/m", DEFAULT_SENTINEL_PORT).unwrap();
        assert_eq!(seeds.username, None);
        assert_eq!(seeds.password.as_deref(), Some("secret"));
    }

    #[test]
    fn connector_picks_the_topology_from_the_url() {
        let timeout = Duration::from_secs(1);
        let topology = |url: &str| Connector::new(url, timeout).map(|c| c.topology());
        assert_eq!(topology("redis://127.0.0.1:6379"), Ok(Topology::SingleNode));
        assert_eq!(
            topology("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster"),
            Ok(Topology::Sentinel)
        );
        assert_eq!(
            topology("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            Ok(Topology::Cluster)
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_passwords() {
        let timeout = Duration::from_secs(1);
        let error = |url: &str| Connector::new(url, timeout).err().unwrap();
        assert_eq!(error("redis+sentinel://h:1"), UrlError::NoMasterName);
        assert_eq!(error("redis+sentinel://h:1/a/b"), UrlError::NoMasterName);
        assert_eq!(
            error("redis+sentinel:///m"),
            UrlError::NoHosts {
                scheme: "redis+sentinel"
            }
        );
        assert_eq!(error("redis+cluster://h:1/0"), UrlError::ClusterPath);
        assert_eq!(
            error("redis+cluster://h:x"),
            UrlError::BadHost("h:x".into())
        );
        assert_eq!(
            error("redis+cluster://h:0"),
            UrlError::BadHost("h:0".into())
        );
        let refused = error("redis+cluster://:hunter2@h:99999").to_string();
        assert!(!refused.contains("hunter2"), "{refused}");
        let connector = Connector::new("redis+cluster://:hunter2@h:1", timeout).unwrap();
        assert!(!connector.description().contains("hunter2"));
    }
}

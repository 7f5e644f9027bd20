//! The refresh audit scripts' own tests (`audit_append.lua`, `audit_list.lua`,
//! `audit_summary.lua`), against a real `redis-server` (one per test).
//!
//! The scripts are invoked directly, with the arguments `audit.rs` passes, so that every case
//! (invalid arguments, exact reply strings, exact stream ids) can be expressed. Every append
//! test checks the stream afterwards with `XRANGE`; "nothing changed" is checked with a
//! [`Harness::snapshot`]: every entry, the stream's last generated id (`XINFO STREAM`) and its
//! absolute expiry deadline (`PEXPIRETIME`, which does not move with the wall clock), so the
//! comparison is exact and untimed. Redis does not roll a script back when it fails halfway,
//! so a refused call must have refused before its first write.
//!
//! Time is a script argument, so `now` values are chosen freely; nothing waits. The real TTLs
//! set here are hours or days, so no key can lapse while a test runs.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use deadpool_redis::redis::{
    self, AsyncConnectionConfig, RedisError, Script, Value, aio::MultiplexedConnection,
};
use test_support::RedisServer;
use token_store::keys::KeyLayout;
use token_store::scripts;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// A time of the tests' choosing; events are stamped around it.
const NOW: u64 = 1_700_000_000_000;
/// Retention and length bound used to seed streams: large enough to trim nothing.
const KEEP: u64 = 30 * DAY;
const KEEP_MAX: u64 = 1_000_000;
const CLIENT: &str = "web";
const OTHER_CLIENT: &str = "mobile";
/// The page size and budget of a list that should see everything at once.
const ALL: u64 = 100_000;

/// One stream entry as `XRANGE` returns it: id and field/value pairs in stored order.
type Entry = (String, Vec<(String, String)>);

/// Every entry of a stream, its last generated id (`None`: no key) and its `PEXPIRETIME`
/// (-1: no expiry, -2: no key).
type Snapshot = (Vec<Entry>, Option<String>, i64);

/// One event as the append script takes it (7 arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    at: u64,
    outcome: String,
    reason: String,
    detail: String,
    family: String,
    generation: u64,
    trace: String,
}

/// An event with fields that differ from every other event's (`n` is unique per test), so a
/// swapped or misplaced field shows. The detail has a space, as real details do.
fn ev(n: u64, at: u64, outcome: &str) -> Event {
    Event {
        at,
        outcome: outcome.into(),
        reason: format!("REASON_{n}"),
        detail: format!("detail {n}"),
        family: format!("fam{n}"),
        generation: 1000 + n,
        trace: format!("trace{n:04}"),
    }
}

impl Event {
    fn args(&self) -> [String; 7] {
        [
            self.at.to_string(),
            self.outcome.clone(),
            self.reason.clone(),
            self.detail.clone(),
            self.family.clone(),
            self.generation.to_string(),
            self.trace.clone(),
        ]
    }

    /// The fields the append script stores, in its order.
    fn fields(&self) -> Vec<(String, String)> {
        [
            ("o", self.outcome.clone()),
            ("r", self.reason.clone()),
            ("d", self.detail.clone()),
            ("f", self.family.clone()),
            ("g", self.generation.to_string()),
            ("t", self.trace.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// The 8 strings `audit_list.lua` returns per event.
type Row = [String; 8];

/// The row `audit_list.lua` should return for a stored entry.
fn row(entry: &Entry) -> Row {
    let (id, fields) = entry;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("entry {id} has no field {name}"))
    };
    [
        id.clone(),
        ms(id).to_string(),
        field("o"),
        field("r"),
        field("d"),
        field("f"),
        field("g"),
        field("t"),
    ]
}

/// The millisecond part of a stream id.
fn ms(id: &str) -> u64 {
    id.split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or_else(|| panic!("not a stream id: {id:?}"))
}

/// One redis-server and a raw connection for script calls and reads.
struct Harness {
    keys: KeyLayout,
    conn: MultiplexedConnection,
    /// Declared last so that it is dropped (killed) after the connection.
    _redis: RedisServer,
}

impl Harness {
    async fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start();
        // redis-rs answers "timed out" after 500 ms by default; a seeding call of 512 events
        // on a loaded machine can take longer. A bound remains, so a hung server still fails.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        let conn = redis::Client::open(redis.url())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Self {
            keys: KeyLayout::new("s:"),
            conn,
            _redis: redis,
        })
    }

    fn stream(&self, client: &str) -> String {
        self.keys.audit(client)
    }

    fn client_key(&self, client: &str) -> String {
        self.keys.client(client)
    }

    /// A live client record: a hash with the fields `create_client.lua` writes.
    async fn live_client(&mut self, client: &str) -> anyhow::Result<()> {
        let key = self.client_key(client);
        redis::cmd("HSET")
            .arg(&key)
            .arg(&[
                ("n", "Web app"),
                ("ty", "confidential"),
                ("sc", "read write"),
                ("rp", "reject-only"),
                ("h", "hash-1"),
                ("ca", &NOW.to_string()),
            ])
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Invokes a script with arbitrary (possibly invalid) string arguments; the reply
    /// flattened to strings.
    async fn invoke(
        &mut self,
        script: &Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<Vec<String>, RedisError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        invocation
            .invoke_async::<Value>(&mut self.conn)
            .await
            .map(texts)
    }

    /// `audit_append.lua` with raw arguments, as `audit.rs` passes them.
    async fn append_raw(
        &mut self,
        client: &str,
        args: &[String],
    ) -> Result<Vec<String>, RedisError> {
        let keys = [self.stream(client), self.client_key(client)];
        self.invoke(&scripts::AUDIT_APPEND, &[&keys[0], &keys[1]], args)
            .await
    }

    /// `audit_append.lua`: the number of events appended.
    async fn append(
        &mut self,
        client: &str,
        now: u64,
        retention: u64,
        max: u64,
        events: &[Event],
    ) -> anyhow::Result<u64> {
        let mut args = vec![now.to_string(), retention.to_string(), max.to_string()];
        for event in events {
            args.extend(event.args());
        }
        let reply = self.append_raw(client, &args).await?;
        anyhow::ensure!(reply.len() == 1, "append replied {reply:?}");
        Ok(reply[0].parse()?)
    }

    /// Creates the client and appends the events (oldest first) without trimming any, in
    /// batches the size the writer uses; every one must be appended.
    async fn seed(&mut self, client: &str, events: &[Event]) -> anyhow::Result<()> {
        self.live_client(client).await?;
        for batch in events.chunks(512) {
            let now = batch.iter().map(|e| e.at).max().unwrap_or(NOW);
            let appended = self.append(client, now, KEEP, KEEP_MAX, batch).await?;
            assert_eq!(appended, batch.len() as u64, "seeding appended too few");
        }
        Ok(())
    }

    /// `audit_list.lua` with raw arguments.
    async fn list_raw(
        &mut self,
        client: &str,
        args: [&dyn Display; 6],
    ) -> Result<Vec<String>, RedisError> {
        let key = self.stream(client);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.invoke(&scripts::AUDIT_LIST, &[&key], &args).await
    }

    /// One page: the continuation id ('' for none) and the rows.
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &mut self,
        client: &str,
        since: u64,
        until: u64,
        page: u64,
        after: &str,
        outcomes: &str,
        budget: u64,
    ) -> anyhow::Result<(String, Vec<Row>)> {
        let reply = self
            .list_raw(client, [&since, &until, &page, &after, &outcomes, &budget])
            .await?;
        Ok(page_of(reply))
    }

    /// Every page from the newest on, following the continuation ids: the rows of all pages
    /// in order, and the number of calls it took.
    async fn walk(
        &mut self,
        client: &str,
        since: u64,
        until: u64,
        page: u64,
        outcomes: &str,
        budget: u64,
    ) -> anyhow::Result<(Vec<Row>, usize)> {
        let mut rows = Vec::new();
        let mut after = String::new();
        for calls in 1..=10_000 {
            let (next, page_rows) = self
                .list(client, since, until, page, &after, outcomes, budget)
                .await?;
            assert!(page_rows.len() as u64 <= page, "page longer than its size");
            rows.extend(page_rows);
            if next.is_empty() {
                return Ok((rows, calls));
            }
            if !after.is_empty() {
                // Continuation ids only ever move to older events.
                assert!(
                    id_key(&next) < id_key(&after),
                    "{next} is not older than {after}"
                );
            }
            after = next;
        }
        anyhow::bail!("the walk never ended")
    }

    /// `audit_summary.lua` with raw arguments.
    async fn summary_raw(
        &mut self,
        client: &str,
        args: &[&dyn Display],
    ) -> Result<Vec<String>, RedisError> {
        let key = self.stream(client);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.invoke(&scripts::AUDIT_SUMMARY, &[&key], &args).await
    }

    /// First id, last id and the counts by outcome.
    async fn summary(
        &mut self,
        client: &str,
        since: u64,
        until: u64,
    ) -> anyhow::Result<(String, String, BTreeMap<String, u64>)> {
        let reply = self.summary_raw(client, &[&since, &until]).await?;
        assert!(
            reply.len() >= 2 && reply.len() % 2 == 0,
            "summary replied {reply:?}"
        );
        let mut counts = BTreeMap::new();
        for pair in reply[2..].chunks_exact(2) {
            let previous = counts.insert(pair[0].clone(), pair[1].parse()?);
            assert_eq!(
                previous, None,
                "outcome {} counted twice in {reply:?}",
                pair[0]
            );
        }
        Ok((reply[0].clone(), reply[1].clone(), counts))
    }

    /// Every entry of the client's stream, oldest first.
    async fn entries(&mut self, client: &str) -> anyhow::Result<Vec<Entry>> {
        let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(self.stream(client))
            .arg("-")
            .arg("+")
            .query_async(&mut self.conn)
            .await?;
        Ok(raw
            .into_iter()
            .map(|(id, kv)| {
                assert!(kv.len() % 2 == 0, "odd field list in {id}");
                let pairs = kv
                    .chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect();
                (id, pairs)
            })
            .collect())
    }

    async fn ids(&mut self, client: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .entries(client)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    async fn exists(&mut self, key: &str) -> anyhow::Result<bool> {
        let n: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut self.conn)
            .await?;
        Ok(n == 1)
    }

    async fn pttl(&mut self, key: &str) -> anyhow::Result<i64> {
        Ok(redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }

    async fn dbsize(&mut self) -> anyhow::Result<i64> {
        Ok(redis::cmd("DBSIZE").query_async(&mut self.conn).await?)
    }

    /// The id of the newest entry ever added (`XINFO STREAM`), `None` when there is no stream.
    async fn last_generated_id(&mut self, client: &str) -> anyhow::Result<Option<String>> {
        let key = self.stream(client);
        if !self.exists(&key).await? {
            return Ok(None);
        }
        let info: Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&key)
            .query_async(&mut self.conn)
            .await?;
        let pairs: Vec<(Value, Value)> = match info {
            Value::Array(items) => items
                .chunks_exact(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect(),
            Value::Map(pairs) => pairs,
            other => anyhow::bail!("unexpected XINFO reply {other:?}"),
        };
        for (name, value) in pairs {
            if texts(name) == ["last-generated-id"] {
                return Ok(texts(value).into_iter().next());
            }
        }
        anyhow::bail!("XINFO STREAM has no last-generated-id")
    }

    /// Everything about the stream a script could change (see the module doc).
    async fn snapshot(&mut self, client: &str) -> anyhow::Result<Snapshot> {
        let key = self.stream(client);
        let deadline: i64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query_async(&mut self.conn)
            .await?;
        Ok((
            self.entries(client).await?,
            self.last_generated_id(client).await?,
            deadline,
        ))
    }
}

/// A script reply flattened to strings: an array becomes its elements, a scalar one element.
fn texts(value: Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.into_iter().flat_map(texts).collect(),
        Value::BulkString(bytes) => vec![String::from_utf8(bytes).expect("UTF-8 reply")],
        Value::SimpleString(text) => vec![text],
        Value::Int(n) => vec![n.to_string()],
        Value::Nil => vec![],
        other => panic!("unexpected reply {other:?}"),
    }
}

/// A list reply split into its continuation id and its rows.
fn page_of(reply: Vec<String>) -> (String, Vec<Row>) {
    assert!(
        !reply.is_empty() && (reply.len() - 1).is_multiple_of(8),
        "list replied {reply:?}"
    );
    let next = reply[0].clone();
    let rows = reply[1..]
        .chunks_exact(8)
        .map(|c| <[String; 8]>::try_from(c.to_vec()).expect("8 strings"))
        .collect();
    (next, rows)
}

/// A stream id as a comparable pair.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// The rows `audit_list.lua` should return for these entries, newest first.
fn newest_first<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Row> {
    let mut rows: Vec<Row> = entries.into_iter().map(row).collect();
    rows.reverse();
    rows
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn assert_invalid(result: Result<Vec<String>, RedisError>, expected: &str, case: &str) {
    match result {
        Ok(reply) => panic!("{case}: expected an error reply, got {reply:?}"),
        Err(err) => assert!(
            err.to_string().contains(expected),
            "{case}: expected {expected:?} in the error, got {err}"
        ),
    }
}

const OUTCOMES: [&str; 4] = ["rotated", "replayed", "reused", "expired"];

/// `n` events one millisecond apart from `start`, outcomes cycling through [`OUTCOMES`].
fn spaced(n: u64, start: u64) -> Vec<Event> {
    (0..n)
        .map(|i| ev(i, start + i, OUTCOMES[(i % 4) as usize]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// audit_append.lua

#[tokio::test]
async fn append_stores_every_event_in_order_with_every_field_under_its_own_millisecond()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let mut events = vec![
        ev(1, NOW - 30, "rotated"),
        ev(2, NOW - 20, "reused"),
        ev(3, NOW - 10, "invalid_token"),
    ];
    // No family, no reason: the caller passes empty strings, which are kept as such.
    events.push(Event {
        at: NOW,
        outcome: "invalid_client".into(),
        reason: String::new(),
        detail: String::new(),
        family: String::new(),
        generation: 0,
        trace: String::new(),
    });
    assert_eq!(h.append(CLIENT, NOW, DAY, 100, &events).await?, 4);

    let expected: Vec<Entry> = events
        .iter()
        .map(|e| (format!("{}-0", e.at), e.fields()))
        .collect();
    assert_eq!(h.entries(CLIENT).await?, expected);
    // Only the stream was written; the client record is as it was.
    assert_eq!(h.dbsize().await?, 2);

    // A second call appends after the first.
    let later = [ev(5, NOW + 1, "replayed"), ev(6, NOW + 2, "expired")];
    assert_eq!(h.append(CLIENT, NOW + 2, DAY, 100, &later).await?, 2);
    let mut expected = expected;
    expected.extend(later.iter().map(|e| (format!("{}-0", e.at), e.fields())));
    assert_eq!(h.entries(CLIENT).await?, expected);
    Ok(())
}

#[tokio::test]
async fn append_for_an_unknown_client_returns_zero_and_creates_no_stream() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let events = [
        ev(1, NOW, "invalid_client"),
        ev(2, NOW + 1, "invalid_client"),
    ];
    assert_eq!(h.append("ghost", NOW + 1, DAY, 100, &events).await?, 0);
    assert!(!h.exists(&h.stream("ghost")).await?);
    assert_eq!(h.dbsize().await?, 0);

    // Another client's record does not make this one known (the check is on KEYS[2]).
    h.live_client(OTHER_CLIENT).await?;
    assert_eq!(h.append("ghost", NOW + 1, DAY, 100, &events).await?, 0);
    assert!(!h.exists(&h.stream("ghost")).await?);
    assert_eq!(h.dbsize().await?, 1);
    Ok(())
}

#[tokio::test]
async fn append_for_a_deleted_client_returns_zero_and_leaves_its_stream_alone() -> anyhow::Result<()>
{
    let mut h = Harness::start().await?;
    // A tombstone as delete_client.lua leaves it: a hash with only `del`.
    let tombstone = h.client_key("gone");
    redis::cmd("HSET")
        .arg(&tombstone)
        .arg("del")
        .arg(NOW)
        .query_async::<()>(&mut h.conn)
        .await?;
    assert_eq!(
        h.append("gone", NOW, DAY, 100, &[ev(1, NOW, "revoked")])
            .await?,
        0
    );
    assert!(!h.exists(&h.stream("gone")).await?);

    // A client deleted by delete_client.lua after it had events: its stream is not appended
    // to, trimmed or re-armed any more.
    h.seed(CLIENT, &spaced(3, NOW)).await?;
    let client_key = h.client_key(CLIENT);
    let deleted = h
        .invoke(
            &scripts::DELETE_CLIENT,
            &[&client_key],
            &[(NOW + 5).to_string()],
        )
        .await?;
    assert_eq!(
        deleted,
        ["1"],
        "delete_client did not delete the seeded client"
    );
    let before = h.snapshot(CLIENT).await?;
    // With max 1 and a retention that trims everything, any write would show.
    let appended = h
        .append(
            CLIENT,
            NOW + 10 * DAY,
            HOUR,
            1,
            &[ev(9, NOW + 10 * DAY, "rotated")],
        )
        .await?;
    assert_eq!(appended, 0);
    assert_eq!(h.snapshot(CLIENT).await?, before);
    Ok(())
}

#[tokio::test]
async fn append_trims_to_exactly_the_most_events_kept_oldest_first() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let events = spaced(8, NOW);
    // All 8 are appended (the reply counts appends, not survivors); the 3 oldest are trimmed.
    assert_eq!(h.append(CLIENT, NOW + 7, DAY, 5, &events).await?, 8);
    let expected: Vec<String> = (3..8).map(|i| format!("{}-0", NOW + i)).collect();
    assert_eq!(h.ids(CLIENT).await?, expected);

    // A later call trims what was there before it, still oldest first, still exactly.
    let more = [ev(8, NOW + 8, "rotated"), ev(9, NOW + 9, "rotated")];
    assert_eq!(h.append(CLIENT, NOW + 9, DAY, 5, &more).await?, 2);
    let expected: Vec<String> = (5..10).map(|i| format!("{}-0", NOW + i)).collect();
    assert_eq!(h.ids(CLIENT).await?, expected);

    // A smaller maximum applies at once; max 1 keeps just the newest.
    assert_eq!(
        h.append(CLIENT, NOW + 10, DAY, 1, &[ev(10, NOW + 10, "reused")])
            .await?,
        1
    );
    let entries = h.entries(CLIENT).await?;
    assert_eq!(
        entries,
        [(
            format!("{}-0", NOW + 10),
            ev(10, NOW + 10, "reused").fields()
        )]
    );
    Ok(())
}

#[tokio::test]
async fn append_drops_events_older_than_now_minus_retention() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let retention = HOUR;
    let cutoff = NOW - retention;
    let events = [
        ev(1, cutoff - 1000, "rotated"),
        ev(2, cutoff - 1, "rotated"),
        ev(3, cutoff, "rotated"),
        ev(4, cutoff + 1, "rotated"),
        ev(5, NOW, "rotated"),
    ];
    // Every event is appended, then everything before `now - retention` is trimmed: the
    // event at exactly the cutoff stays.
    assert_eq!(h.append(CLIENT, NOW, retention, 100, &events).await?, 5);
    let expected: Vec<String> = [cutoff, cutoff + 1, NOW]
        .iter()
        .map(|at| format!("{at}-0"))
        .collect();
    assert_eq!(h.ids(CLIENT).await?, expected);

    // A later `now` trims events that earlier calls kept, by the later cutoff.
    assert_eq!(
        h.append(
            CLIENT,
            NOW + 1,
            retention,
            100,
            &[ev(6, NOW + 1, "rotated")]
        )
        .await?,
        1
    );
    let expected: Vec<String> = [cutoff + 1, NOW, NOW + 1]
        .iter()
        .map(|at| format!("{at}-0"))
        .collect();
    assert_eq!(h.ids(CLIENT).await?, expected);
    Ok(())
}

#[tokio::test]
async fn append_with_now_below_the_retention_trims_nothing_and_does_not_fail() -> anyhow::Result<()>
{
    // A clock (or a test) near the epoch: now - retention would be negative, an invalid
    // stream id for XTRIM, so no age trimming may be attempted.
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let events = [
        ev(1, 1, "rotated"),
        ev(2, 5, "rotated"),
        ev(3, 10, "rotated"),
    ];
    assert_eq!(h.append(CLIENT, 10, DAY, 100, &events).await?, 3);
    assert_eq!(h.ids(CLIENT).await?, strings(&["1-0", "5-0", "10-0"]));
    // now == retention: the cutoff is 0, nothing is older.
    assert_eq!(
        h.append(CLIENT, DAY, DAY, 100, &[ev(4, 20, "rotated")])
            .await?,
        1
    );
    assert_eq!(
        h.ids(CLIENT).await?,
        strings(&["1-0", "5-0", "10-0", "20-0"])
    );
    Ok(())
}

#[tokio::test]
async fn append_sets_the_stream_to_expire_after_the_retention() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let key = h.stream(CLIENT);
    assert_eq!(
        h.append(CLIENT, NOW, HOUR, 100, &[ev(1, NOW, "rotated")])
            .await?,
        1
    );
    let pttl = h.pttl(&key).await?;
    assert!(
        pttl > 0 && pttl <= HOUR as i64,
        "PTTL {pttl} after a 1 hour retention"
    );

    // Every append re-arms the expiry with its own retention (here longer than before).
    let retention = 7 * DAY;
    assert_eq!(
        h.append(
            CLIENT,
            NOW + 1,
            retention,
            100,
            &[ev(2, NOW + 1, "rotated")]
        )
        .await?,
        1
    );
    let pttl = h.pttl(&key).await?;
    assert!(
        pttl > HOUR as i64 && pttl <= retention as i64,
        "PTTL {pttl} after a 7 day retention"
    );
    // The client record gets no expiry from the audit.
    assert_eq!(h.pttl(&h.client_key(CLIENT)).await?, -1);
    Ok(())
}

#[tokio::test]
async fn append_files_an_event_stamped_before_the_newest_under_the_newest_millisecond()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    assert_eq!(
        h.append(CLIENT, NOW, DAY, 100, &[ev(1, NOW, "rotated")])
            .await?,
        1
    );

    // Another instance, its clock 500 ms behind: filed under NOW, after the existing event,
    // without an error. Its later, still-behind event follows it in the same millisecond.
    let behind = [ev(2, NOW - 500, "replayed"), ev(3, NOW - 400, "reused")];
    assert_eq!(h.append(CLIENT, NOW - 400, DAY, 100, &behind).await?, 2);
    // Within one call, an event stamped before the previous one of the same call (requests
    // that finished out of order) follows it too.
    let out_of_order = [ev(4, NOW + 10, "rotated"), ev(5, NOW + 5, "expired")];
    assert_eq!(
        h.append(CLIENT, NOW + 10, DAY, 100, &out_of_order).await?,
        2
    );
    // A timely event after them gets its own millisecond again.
    assert_eq!(
        h.append(CLIENT, NOW + 20, DAY, 100, &[ev(6, NOW + 20, "rotated")])
            .await?,
        1
    );

    let entries = h.entries(CLIENT).await?;
    let expected: Vec<Entry> = [
        (format!("{NOW}-0"), ev(1, NOW, "rotated")),
        (format!("{NOW}-1"), behind[0].clone()),
        (format!("{NOW}-2"), behind[1].clone()),
        (format!("{}-0", NOW + 10), out_of_order[0].clone()),
        (format!("{}-1", NOW + 10), out_of_order[1].clone()),
        (format!("{}-0", NOW + 20), ev(6, NOW + 20, "rotated")),
    ]
    .into_iter()
    .map(|(id, e)| (id, e.fields()))
    .collect();
    assert_eq!(entries, expected);
    Ok(())
}

#[tokio::test]
async fn append_files_a_late_event_after_the_newest_id_even_when_trimming_emptied_the_stream()
-> anyhow::Result<()> {
    // XADD refuses any id at or below the stream's last generated id, which survives trimming:
    // the clamp must hold against that id, not only against the newest entry still there.
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    // Events that were queued past the retention (Redis was away): appended, then trimmed by
    // age at once, leaving an empty stream that remembers NOW-0 as its last id.
    let stale = [ev(1, NOW - 10, "rotated"), ev(2, NOW, "rotated")];
    assert_eq!(
        h.append(CLIENT, NOW + 2 * HOUR, HOUR, 100, &stale).await?,
        2
    );
    assert_eq!(h.ids(CLIENT).await?, Vec::<String>::new());
    assert_eq!(h.last_generated_id(CLIENT).await?, Some(format!("{NOW}-0")));

    // An event stamped before that id (another instance's slower clock) is appended after it.
    let late = ev(3, NOW - 5, "reused");
    assert_eq!(
        h.append(CLIENT, NOW - 5, HOUR, 100, std::slice::from_ref(&late))
            .await?,
        1
    );
    assert_eq!(
        h.entries(CLIENT).await?,
        [(format!("{NOW}-1"), late.fields())]
    );
    Ok(())
}

#[tokio::test]
async fn append_gives_events_of_the_same_millisecond_distinct_growing_ids() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let same = [
        ev(1, NOW, "rotated"),
        ev(2, NOW, "replayed"),
        ev(3, NOW, "reused"),
    ];
    assert_eq!(h.append(CLIENT, NOW, DAY, 100, &same).await?, 3);
    // And across calls: a second call in the same millisecond continues the sequence.
    assert_eq!(
        h.append(CLIENT, NOW, DAY, 100, &[ev(4, NOW, "expired")])
            .await?,
        1
    );
    let entries = h.entries(CLIENT).await?;
    let expected: Vec<Entry> = same
        .iter()
        .chain([&ev(4, NOW, "expired")])
        .enumerate()
        .map(|(seq, e)| (format!("{NOW}-{seq}"), e.fields()))
        .collect();
    assert_eq!(entries, expected);
    Ok(())
}

#[tokio::test]
async fn append_rejects_invalid_arguments_and_writes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // A stream whose every property a write would change: more entries than the calls' max,
    // events old enough for their cutoff, and a deadline far from theirs.
    h.seed(CLIENT, &spaced(4, NOW)).await?;
    let before = h.snapshot(CLIENT).await?;
    assert_eq!(before.0.len(), 4);

    let later = NOW + 10 * DAY;
    let good = ev(10, later, "rotated").args().to_vec();
    // A well-formed event but for the field at `index` (0: time, 5: generation).
    let bad_event = |index: usize, value: &str| {
        let mut event = ev(11, later + 1, "rotated").args().to_vec();
        event[index] = value.to_owned();
        event
    };
    // The numbers of a call with valid header and events; `DAY` retention, max 2.
    let header = |now: &str, retention: &str, max: &str| strings(&[now, retention, max]);
    let with_events = |mut head: Vec<String>, events: &[Vec<String>]| {
        for event in events {
            head.extend(event.iter().cloned());
        }
        head
    };
    let now = later.to_string();
    let day = DAY.to_string();
    let valid_header = header(&now, &day, "2");

    const HEADER: &str = "audit: now, retention and max length must be positive integers";
    const GROUPS: &str = "audit: events come in groups of 7 arguments";
    const NUMBERS: &str = "audit: event time and generation must be integers";
    let mut cases: Vec<(String, Vec<String>, &str)> = Vec::new();
    for bad_now in ["soon", "1.5", "-1", "", "1e12", " 1", "0x10"] {
        cases.push((
            format!("now {bad_now:?}"),
            with_events(header(bad_now, &day, "2"), std::slice::from_ref(&good)),
            HEADER,
        ));
    }
    for bad_retention in ["0", "day", "1.5", "-5", ""] {
        cases.push((
            format!("retention {bad_retention:?}"),
            with_events(
                header(&now, bad_retention, "2"),
                std::slice::from_ref(&good),
            ),
            HEADER,
        ));
    }
    for bad_max in ["0", "x", "2.0", "-2", ""] {
        cases.push((
            format!("max {bad_max:?}"),
            with_events(header(&now, &day, bad_max), std::slice::from_ref(&good)),
            HEADER,
        ));
    }
    // The bad event comes second: a check made while writing would have written the first.
    let later_dot_zero = format!("{later}.0");
    for bad_at in ["1.5", "-1", "", "1e3", "soon", later_dot_zero.as_str()] {
        cases.push((
            format!("event time {bad_at:?}"),
            with_events(valid_header.clone(), &[good.clone(), bad_event(0, bad_at)]),
            NUMBERS,
        ));
    }
    for bad_generation in ["1.5", "-1", "", "2e0", "g"] {
        cases.push((
            format!("generation {bad_generation:?}"),
            with_events(
                valid_header.clone(),
                &[good.clone(), bad_event(5, bad_generation)],
            ),
            NUMBERS,
        ));
    }
    // Argument counts other than 3 + 7k. 3 + 7 + 6 has numbers where a second event's time and
    // generation would be: only the count check stops the first event from being written.
    let mut partial = with_events(valid_header.clone(), std::slice::from_ref(&good));
    partial.extend(bad_event(0, &(later + 1).to_string())[..6].iter().cloned());
    cases.push(("3 + 7 + 6 arguments".into(), partial, GROUPS));
    let mut one_more = with_events(valid_header.clone(), std::slice::from_ref(&good));
    one_more.push("x".into());
    cases.push(("3 + 7 + 1 arguments".into(), one_more, GROUPS));
    cases.push((
        "3 + 1 arguments".into(),
        with_events(valid_header.clone(), &[vec![later.to_string()]]),
        GROUPS,
    ));
    cases.push((
        "3 + 6 arguments".into(),
        with_events(valid_header.clone(), &[good[..6].to_vec()]),
        GROUPS,
    ));
    cases.push(("2 arguments".into(), strings(&[&now, &day]), HEADER));
    cases.push(("no arguments".into(), Vec::new(), HEADER));

    for (case, args, expected) in &cases {
        let result = h.append_raw(CLIENT, args).await;
        assert_invalid(result, expected, case);
        assert_eq!(
            h.snapshot(CLIENT).await?,
            before,
            "{case}: the stream changed"
        );
    }

    // Control: the valid form of the same call does change the stream, so the refusals above
    // were about the arguments alone.
    let valid = with_events(
        valid_header,
        &[good.clone(), bad_event(0, &(later + 1).to_string())],
    );
    assert_eq!(h.append_raw(CLIENT, &valid).await?, ["2"]);
    let after = h.snapshot(CLIENT).await?;
    assert_eq!(
        after.0.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        [format!("{later}-0"), format!("{}-0", later + 1)]
    );
    assert_ne!(after.2, before.2, "the deadline was not re-armed");
    Ok(())
}

#[tokio::test]
async fn append_refuses_invalid_arguments_before_looking_at_the_client() -> anyhow::Result<()> {
    // An unknown client with a bad argument is an error, not a silent 0: a caller's bug must
    // not hide behind ids that name no client.
    let mut h = Harness::start().await?;
    let result = h
        .append_raw("ghost", &strings(&[&NOW.to_string(), "0", "10"]))
        .await;
    assert_invalid(
        result,
        "audit: now, retention and max length",
        "retention 0",
    );
    assert_eq!(h.dbsize().await?, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// audit_list.lua

#[tokio::test]
async fn list_returns_every_field_newest_first() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let events = spaced(5, NOW);
    h.seed(CLIENT, &events).await?;

    let (next, rows) = h.list(CLIENT, 0, NOW + 100, 10, "", "", ALL).await?;
    assert_eq!(next, "", "a page that did not fill has no continuation");
    // Exactly the stored fields, per event, newest first.
    let expected: Vec<Row> = events
        .iter()
        .rev()
        .map(|e| {
            [
                format!("{}-0", e.at),
                e.at.to_string(),
                e.outcome.clone(),
                e.reason.clone(),
                e.detail.clone(),
                e.family.clone(),
                e.generation.to_string(),
                e.trace.clone(),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
    Ok(())
}

#[tokio::test]
async fn list_keeps_since_inclusive_and_until_exclusive_by_event_millisecond() -> anyhow::Result<()>
{
    let mut h = Harness::start().await?;
    // Two events in each of the boundary milliseconds.
    let events = [
        ev(1, NOW + 100, "rotated"),
        ev(2, NOW + 100, "rotated"),
        ev(3, NOW + 200, "rotated"),
        ev(4, NOW + 200, "rotated"),
        ev(5, NOW + 300, "rotated"),
        ev(6, NOW + 400, "rotated"),
        ev(7, NOW + 400, "rotated"),
    ];
    h.seed(CLIENT, &events).await?;
    let ids = |rows: &[Row]| rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>();
    let id = |at: u64, seq: u64| format!("{}-{seq}", NOW + at);

    let cases = [
        (200, 400, vec![id(300, 0), id(200, 1), id(200, 0)]),
        (201, 401, vec![id(400, 1), id(400, 0), id(300, 0)]),
        (100, 101, vec![id(100, 1), id(100, 0)]),
        (400, 401, vec![id(400, 1), id(400, 0)]),
        (399, 400, vec![]),
        (401, 1000, vec![]),
        (0, 100, vec![]),
    ];
    for (since, until, expected) in cases {
        let (next, rows) = h
            .list(CLIENT, NOW + since, NOW + until, 10, "", "", ALL)
            .await?;
        assert_eq!(ids(&rows), expected, "[NOW+{since}, NOW+{until})");
        assert_eq!(next, "", "[NOW+{since}, NOW+{until})");
    }
    // Continuing after the newest keeps the same window.
    let (next, rows) = h.list(CLIENT, NOW + 200, NOW + 400, 1, "", "", ALL).await?;
    assert_eq!(
        (next.as_str(), ids(&rows)),
        (id(300, 0).as_str(), vec![id(300, 0)])
    );
    let (next, rows) = h
        .list(CLIENT, NOW + 200, NOW + 400, 5, &next, "", ALL)
        .await?;
    assert_eq!(
        (next, ids(&rows)),
        (String::new(), vec![id(200, 1), id(200, 0)])
    );
    Ok(())
}

#[tokio::test]
async fn list_pages_continue_after_the_last_id_without_overlap_or_gap() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // 25 events, some sharing a millisecond, so pages split inside one.
    let events: Vec<Event> = (0..25)
        .map(|i| ev(i, NOW + i / 3, OUTCOMES[(i % 4) as usize]))
        .collect();
    h.seed(CLIENT, &events).await?;
    let all = newest_first(&h.entries(CLIENT).await?);
    assert_eq!(all.len(), 25);

    // The first page fills: 10 rows, and the continuation is the last row's id.
    let (next, page1) = h.list(CLIENT, NOW, NOW + 100, 10, "", "", ALL).await?;
    assert_eq!(page1, all[..10]);
    assert_eq!(next, all[9][0]);
    // The continuation is exclusive: the next page starts with the event after it.
    let (next, page2) = h.list(CLIENT, NOW, NOW + 100, 10, &next, "", ALL).await?;
    assert_eq!(page2, all[10..20]);
    assert_eq!(next, all[19][0]);
    let (next, page3) = h.list(CLIENT, NOW, NOW + 100, 10, &next, "", ALL).await?;
    assert_eq!(page3, all[20..]);
    assert_eq!(next, "", "nothing older is left");

    // Continuing after an id in the middle of a millisecond, with a page of one.
    let middle = &all[4][0];
    assert_eq!(
        ms(middle),
        ms(&all[5][0]),
        "the continuation should split a millisecond"
    );
    let (next, rows) = h.list(CLIENT, NOW, NOW + 100, 1, middle, "", ALL).await?;
    assert_eq!(rows, all[5..6]);
    assert_eq!(next, all[5][0]);

    // Walking with every page size yields every event exactly once, in order.
    for page in [1, 2, 3, 7, 24, 25, 26] {
        let (rows, _) = h.walk(CLIENT, NOW, NOW + 100, page, "", ALL).await?;
        assert_eq!(rows, all, "page size {page}");
    }
    Ok(())
}

#[tokio::test]
async fn list_walks_pages_larger_than_the_scripts_read_chunk() -> anyhow::Result<()> {
    // The script reads 100 entries at a time; pages and walks cross those reads.
    let mut h = Harness::start().await?;
    let events: Vec<Event> = (0..250)
        .map(|i| ev(i, NOW + i / 2, OUTCOMES[(i % 4) as usize]))
        .collect();
    h.seed(CLIENT, &events).await?;
    let all = newest_first(&h.entries(CLIENT).await?);
    assert_eq!(all.len(), 250);

    let (next, rows) = h.list(CLIENT, NOW, NOW + 1000, 150, "", "", ALL).await?;
    assert_eq!(rows, all[..150]);
    assert_eq!(next, all[149][0]);
    let (next, rows) = h.list(CLIENT, NOW, NOW + 1000, 150, &next, "", ALL).await?;
    assert_eq!(rows, all[150..]);
    assert_eq!(next, "");

    // One page holds everything: read in three chunks, nothing repeated or skipped.
    let (next, rows) = h.list(CLIENT, NOW, NOW + 1000, 1000, "", "", ALL).await?;
    assert_eq!((next.as_str(), rows.len()), ("", 250));
    assert_eq!(rows, all);

    for page in [1, 99, 100, 101, 249, 250] {
        let (rows, _) = h.walk(CLIENT, NOW, NOW + 1000, page, "", ALL).await?;
        assert_eq!(rows, all, "page size {page}");
    }
    // With a filter that matches one event in four, a page of 30 spans more than one chunk.
    let reused: Vec<Row> = all.iter().filter(|r| r[2] == "reused").cloned().collect();
    assert_eq!(reused.len(), 62);
    let (next, rows) = h
        .list(CLIENT, NOW, NOW + 1000, 30, "", "reused", ALL)
        .await?;
    assert_eq!(rows, reused[..30]);
    assert_eq!(next, reused[29][0]);
    let (rows, _) = h.walk(CLIENT, NOW, NOW + 1000, 30, "reused", ALL).await?;
    assert_eq!(rows, reused);
    Ok(())
}

#[tokio::test]
async fn list_keeps_only_the_outcomes_asked_for() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.seed(CLIENT, &spaced(12, NOW)).await?;
    let all = newest_first(&h.entries(CLIENT).await?);
    let only = |outcomes: &[&str]| -> Vec<Row> {
        all.iter()
            .filter(|r| outcomes.contains(&r[2].as_str()))
            .cloned()
            .collect()
    };

    let cases: [(&str, Vec<Row>); 8] = [
        ("", all.clone()),
        ("reused", only(&["reused"])),
        ("reused expired", only(&["reused", "expired"])),
        ("  expired   reused ", only(&["reused", "expired"])),
        ("rotated replayed reused expired", all.clone()),
        // Whole outcomes only: neither a prefix nor an absent outcome matches anything.
        ("reuse", vec![]),
        ("revoked", vec![]),
        // Outcomes are separated by spaces, not found anywhere in the list.
        ("reusedexpired", vec![]),
    ];
    for (outcomes, expected) in cases {
        let (next, rows) = h
            .list(CLIENT, NOW, NOW + 100, 100, "", outcomes, ALL)
            .await?;
        assert_eq!(rows, expected, "outcomes {outcomes:?}");
        assert_eq!(next, "", "outcomes {outcomes:?}");
    }
    assert_eq!(only(&["reused"]).len(), 3);
    Ok(())
}

#[tokio::test]
async fn list_budget_bounds_the_entries_examined_and_gives_a_continuation() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // Ten events; only the three oldest are `reused`.
    let events: Vec<Event> = (1..=10)
        .map(|i| ev(i, NOW + i, if i <= 3 { "reused" } else { "rotated" }))
        .collect();
    h.seed(CLIENT, &events).await?;
    let id = |i: u64| format!("{}-0", NOW + i);
    let row_of = |i: u64| {
        let e = &events[(i - 1) as usize];
        [
            id(i),
            e.at.to_string(),
            e.outcome.clone(),
            e.reason.clone(),
            e.detail.clone(),
            e.family.clone(),
            e.generation.to_string(),
            e.trace.clone(),
        ]
    };

    // Four examined (10..7), none matched: an empty page that continues after the 4th.
    let (next, rows) = h.list(CLIENT, NOW, NOW + 100, 10, "", "reused", 4).await?;
    assert_eq!((next.as_str(), rows), (id(7).as_str(), vec![]));
    // Four more (6..3): one match, fewer than the page size, and a continuation.
    let (next, rows) = h
        .list(CLIENT, NOW, NOW + 100, 10, &next, "reused", 4)
        .await?;
    assert_eq!((next.as_str(), rows), (id(3).as_str(), vec![row_of(3)]));
    // The rest (2, 1): the stream ends before the budget does.
    let (next, rows) = h
        .list(CLIENT, NOW, NOW + 100, 10, &next, "reused", 4)
        .await?;
    assert_eq!((next.as_str(), rows), ("", vec![row_of(2), row_of(1)]));

    // A budget of one examines one entry per call, matching or not.
    let (next, rows) = h.list(CLIENT, NOW, NOW + 100, 10, "", "", 1).await?;
    assert_eq!((next.as_str(), rows), (id(10).as_str(), vec![row_of(10)]));
    let (next, rows) = h.list(CLIENT, NOW, NOW + 100, 10, "", "reused", 1).await?;
    assert_eq!((next.as_str(), rows), (id(10).as_str(), vec![]));

    // Walking under a budget still finds every match exactly once.
    for budget in [1, 2, 3, 4, 9, 10, 11] {
        let (rows, calls) = h.walk(CLIENT, NOW, NOW + 100, 10, "reused", budget).await?;
        assert_eq!(rows, [row_of(3), row_of(2), row_of(1)], "budget {budget}");
        assert!(
            calls as u64 >= 10 / budget,
            "budget {budget}: {calls} calls"
        );
    }
    Ok(())
}

#[tokio::test]
async fn list_budget_counts_entries_across_the_scripts_read_chunks() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.seed(CLIENT, &spaced(250, NOW)).await?;
    let all = newest_first(&h.entries(CLIENT).await?);
    // No entry matches: the budget alone ends each call, 150 entries in.
    let (next, rows) = h
        .list(CLIENT, NOW, NOW + 1000, 10, "", "revoked", 150)
        .await?;
    assert_eq!((next.as_str(), rows.len()), (all[149][0].as_str(), 0));
    let (next, rows) = h
        .list(CLIENT, NOW, NOW + 1000, 10, &next, "revoked", 150)
        .await?;
    assert_eq!((next.as_str(), rows.len()), ("", 0));
    Ok(())
}

#[tokio::test]
async fn list_of_an_empty_or_missing_stream_is_one_empty_continuation() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    assert_eq!(
        h.list_raw(CLIENT, [&0, &(NOW + 1), &100, &"", &"", &1000])
            .await?,
        [""]
    );
    assert_eq!(
        h.list_raw(CLIENT, [&0, &(NOW + 1), &100, &"5-0", &"reused", &1000])
            .await?,
        [""]
    );
    assert!(
        !h.exists(&h.stream(CLIENT)).await?,
        "a list created the stream"
    );

    // A stream emptied by trimming.
    h.live_client(CLIENT).await?;
    assert_eq!(
        h.append(CLIENT, NOW + DAY, HOUR, 100, &[ev(1, NOW, "rotated")])
            .await?,
        1
    );
    assert!(h.exists(&h.stream(CLIENT)).await?);
    assert_eq!(
        h.list_raw(CLIENT, [&0, &(NOW + 2 * DAY), &100, &"", &"", &1000])
            .await?,
        [""]
    );
    Ok(())
}

#[tokio::test]
async fn list_continuation_never_reaches_past_until_or_before_since() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.seed(CLIENT, &spaced(10, NOW)).await?;
    let all = newest_first(&h.entries(CLIENT).await?);
    // A page token from a wider window (or any id the caller sends) beyond `until`: the
    // window still holds, only events before `until` are listed.
    let (next, rows) = h
        .list(
            CLIENT,
            NOW,
            NOW + 5,
            100,
            &format!("{}-0", NOW + 8),
            "",
            ALL,
        )
        .await?;
    assert_eq!(rows, all[5..], "events at or after until were listed");
    assert_eq!(next, "");
    let (_, rows) = h
        .list(
            CLIENT,
            NOW,
            NOW + 5,
            100,
            &format!("{}-3", NOW + 5),
            "",
            ALL,
        )
        .await?;
    assert_eq!(rows, all[5..]);
    // A token inside the window narrows it as usual.
    let (_, rows) = h
        .list(
            CLIENT,
            NOW,
            NOW + 5,
            100,
            &format!("{}-0", NOW + 3),
            "",
            ALL,
        )
        .await?;
    assert_eq!(rows, all[7..]);
    // A token older than `since`: nothing is left.
    let (next, rows) = h
        .list(
            CLIENT,
            NOW + 5,
            NOW + 10,
            100,
            &format!("{}-0", NOW + 2),
            "",
            ALL,
        )
        .await?;
    assert_eq!((next.as_str(), rows), ("", vec![]));
    Ok(())
}

#[tokio::test]
async fn list_rejects_invalid_arguments() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.seed(CLIENT, &spaced(3, NOW)).await?;
    let before = h.snapshot(CLIENT).await?;
    const RANGE: &str = "audit: bad time range, page size or budget";
    const CONTINUATION: &str = "audit: bad continuation id";
    let (since, until) = (NOW, NOW + 10);
    let cases: &[(&str, [&dyn Display; 6], &str)] = &[
        (
            "since == until",
            [&until, &until, &10, &"", &"", &100],
            RANGE,
        ),
        (
            "since > until",
            [&(until + 1), &until, &10, &"", &"", &100],
            RANGE,
        ),
        (
            "until before since",
            [&NOW, &(NOW - 1), &10, &"", &"", &100],
            RANGE,
        ),
        ("page size 0", [&since, &until, &0, &"", &"", &100], RANGE),
        ("budget 0", [&since, &until, &10, &"", &"", &0], RANGE),
        (
            "non-numeric since",
            [&"then", &until, &10, &"", &"", &100],
            RANGE,
        ),
        (
            "non-numeric until",
            [&since, &"now", &10, &"", &"", &100],
            RANGE,
        ),
        (
            "fractional until",
            [&since, &"1700000000010.5", &10, &"", &"", &100],
            RANGE,
        ),
        ("negative since", [&-1, &until, &10, &"", &"", &100], RANGE),
        (
            "fractional page size",
            [&since, &until, &"2.5", &"", &"", &100],
            RANGE,
        ),
        (
            "negative page size",
            [&since, &until, &-10, &"", &"", &100],
            RANGE,
        ),
        (
            "empty page size",
            [&since, &until, &"", &"", &"", &100],
            RANGE,
        ),
        (
            "non-numeric budget",
            [&since, &until, &10, &"", &"", &"all"],
            RANGE,
        ),
        (
            "negative budget",
            [&since, &until, &10, &"", &"", &-1],
            RANGE,
        ),
        (
            "continuation without a sequence",
            [&since, &until, &10, &"5", &"", &100],
            CONTINUATION,
        ),
        (
            "continuation with an empty sequence",
            [&since, &until, &10, &"5-", &"", &100],
            CONTINUATION,
        ),
        (
            "continuation with an empty time",
            [&since, &until, &10, &"-5", &"", &100],
            CONTINUATION,
        ),
        (
            "continuation with three parts",
            [&since, &until, &10, &"5-1-2", &"", &100],
            CONTINUATION,
        ),
        (
            "continuation with a space",
            [&since, &until, &10, &" 5-1", &"", &100],
            CONTINUATION,
        ),
        (
            "continuation with a suffix",
            [&since, &until, &10, &"5-1x", &"", &100],
            CONTINUATION,
        ),
        (
            "continuation that is a word",
            [&since, &until, &10, &"next", &"", &100],
            CONTINUATION,
        ),
        (
            "continuation with a range marker",
            [&since, &until, &10, &"(5-1", &"", &100],
            CONTINUATION,
        ),
        (
            "continuation that is a special id",
            [&since, &until, &10, &"+", &"", &100],
            CONTINUATION,
        ),
    ];
    for (case, args, expected) in cases {
        let result = h.list_raw(CLIENT, *args).await;
        assert_invalid(result, expected, case);
    }
    // Fewer arguments than the contract's six.
    let key = h.stream(CLIENT);
    let result = h
        .invoke(&scripts::AUDIT_LIST, &[&key], &strings(&["0", "10", "5"]))
        .await;
    assert_invalid(result, RANGE, "three arguments");
    // Listing never writes.
    assert_eq!(h.snapshot(CLIENT).await?, before);
    // Control: the valid form answers.
    let (next, rows) = h.list(CLIENT, since, until, 10, "", "", 100).await?;
    assert_eq!((next.as_str(), rows.len()), ("", 3));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// audit_summary.lua

#[tokio::test]
async fn summary_counts_each_outcome_in_the_window_with_its_first_and_last_ids()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let events = [
        ev(1, NOW + 100, "rotated"),
        ev(2, NOW + 100, "reused"),
        ev(3, NOW + 200, "rotated"),
        ev(4, NOW + 200, "expired"),
        ev(5, NOW + 300, "rotated"),
        ev(6, NOW + 400, "reused"),
        ev(7, NOW + 400, "rotated"),
    ];
    h.seed(CLIENT, &events).await?;
    let id = |at: u64, seq: u64| format!("{}-{seq}", NOW + at);
    let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(o, n)| ((*o).to_owned(), *n)).collect()
    };

    let cases = [
        (
            0,
            1000,
            (
                id(100, 0),
                id(400, 1),
                counts(&[("rotated", 4), ("reused", 2), ("expired", 1)]),
            ),
        ),
        // since inclusive, until exclusive, both at milliseconds holding two events.
        (
            200,
            400,
            (
                id(200, 0),
                id(300, 0),
                counts(&[("rotated", 2), ("expired", 1)]),
            ),
        ),
        (
            100,
            101,
            (
                id(100, 0),
                id(100, 1),
                counts(&[("rotated", 1), ("reused", 1)]),
            ),
        ),
        (
            101,
            401,
            (
                id(200, 0),
                id(400, 1),
                counts(&[("rotated", 3), ("reused", 1), ("expired", 1)]),
            ),
        ),
        (
            300,
            301,
            (id(300, 0), id(300, 0), counts(&[("rotated", 1)])),
        ),
    ];
    for (since, until, expected) in cases {
        assert_eq!(
            h.summary(CLIENT, NOW + since, NOW + until).await?,
            expected,
            "[NOW+{since}, NOW+{until})"
        );
    }
    // The exact reply: outcomes in the order they first appear.
    let reply = h.summary_raw(CLIENT, &[&(NOW + 100), &(NOW + 201)]).await?;
    assert_eq!(
        reply,
        [
            id(100, 0),
            id(200, 1),
            "rotated".into(),
            "2".into(),
            "reused".into(),
            "1".into(),
            "expired".into(),
            "1".into(),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn summary_of_an_empty_window_or_missing_stream_has_no_ids_and_no_counts()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    assert_eq!(h.summary_raw(CLIENT, &[&0, &(NOW + 1)]).await?, ["", ""]);
    assert!(!h.exists(&h.stream(CLIENT)).await?);
    h.seed(CLIENT, &spaced(5, NOW + 100)).await?;
    for (since, until) in [
        (0, NOW + 100),
        (NOW + 105, NOW + 200),
        (NOW + 99, NOW + 100),
    ] {
        assert_eq!(
            h.summary_raw(CLIENT, &[&since, &until]).await?,
            ["", ""],
            "[{since}, {until})"
        );
    }
    Ok(())
}

#[tokio::test]
async fn summary_counts_more_events_than_one_read_chunk() -> anyhow::Result<()> {
    // The script reads 1000 entries at a time.
    let mut h = Harness::start().await?;
    let events: Vec<Event> = (0..2500)
        .map(|i| ev(i, NOW + i / 2, OUTCOMES[(i % 3) as usize]))
        .collect();
    h.seed(CLIENT, &events).await?;
    let entries = h.entries(CLIENT).await?;
    assert_eq!(entries.len(), 2500);

    // Windows of exactly one and two chunks, a window that ends on a chunk boundary plus one,
    // everything, and a window cut inside the stream.
    let windows = [
        (NOW, NOW + 500),
        (NOW, NOW + 1000),
        (NOW, NOW + 1001),
        (NOW, NOW + 1250),
        (0, NOW + 10_000),
        (NOW + 123, NOW + 1_177),
    ];
    for (since, until) in windows {
        let inside: Vec<&Entry> = entries
            .iter()
            .filter(|(id, _)| (since..until).contains(&ms(id)))
            .collect();
        let mut expected = BTreeMap::new();
        for (_, fields) in &inside {
            *expected.entry(fields[0].1.clone()).or_insert(0u64) += 1;
        }
        let (first, last, counts) = h.summary(CLIENT, since, until).await?;
        assert_eq!(counts, expected, "[{since}, {until})");
        assert_eq!(counts.values().sum::<u64>(), inside.len() as u64);
        assert_eq!(first, inside[0].0, "[{since}, {until})");
        assert_eq!(last, inside[inside.len() - 1].0, "[{since}, {until})");
    }
    // Spot-check the sizes the windows were meant to have.
    let (_, _, counts) = h.summary(CLIENT, NOW, NOW + 1000).await?;
    assert_eq!(counts.values().sum::<u64>(), 2000);
    let (_, _, counts) = h.summary(CLIENT, 0, NOW + 10_000).await?;
    assert_eq!(
        counts,
        BTreeMap::from([
            ("rotated".to_owned(), 834),
            ("replayed".to_owned(), 833),
            ("reused".to_owned(), 833),
        ])
    );
    Ok(())
}

#[tokio::test]
async fn summary_rejects_a_bad_range() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.seed(CLIENT, &spaced(3, NOW)).await?;
    let before = h.snapshot(CLIENT).await?;
    let cases: &[(&str, &[&dyn Display])] = &[
        ("since == until", &[&NOW, &NOW]),
        ("since > until", &[&(NOW + 1), &NOW]),
        ("non-numeric since", &[&"then", &NOW]),
        ("non-numeric until", &[&NOW, &"now"]),
        ("fractional until", &[&NOW, &"1700000000001.5"]),
        ("negative since", &[&-1, &NOW]),
        ("empty until", &[&NOW, &""]),
        ("one argument", &[&NOW]),
        ("no arguments", &[]),
    ];
    for (case, args) in cases {
        let result = h.summary_raw(CLIENT, args).await;
        assert_invalid(result, "audit: bad time range", case);
    }
    assert_eq!(h.snapshot(CLIENT).await?, before);
    // Control: the valid form answers.
    let (_, _, counts) = h.summary(CLIENT, NOW, NOW + 3).await?;
    assert_eq!(counts.values().sum::<u64>(), 3);
    Ok(())
}

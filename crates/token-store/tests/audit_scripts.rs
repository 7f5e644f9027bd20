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
//! Cases of one shape are tables, each run by one loop whose assertion messages name the row:
//! - refusals ([`Harness::assert_refused`]): a valid baseline call; per row, the [`Changes`] it
//!   makes to the baseline's arguments and the error text it must get; after every row the
//!   stream must be exactly as it was;
//! - list pages ([`Harness::assert_pages`]): a baseline query; per row, its changes and the page
//!   it must answer (continuation and rows);
//! - append stories ([`Harness::assert_steps`]): per row, one append call, its reply and the
//!   whole stream afterwards.
//!
//! Time is a script argument, so `now` values are chosen freely; nothing waits. The real TTLs
//! set here are hours or days, so no key can lapse while a test runs.

mod reply;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::time::Duration;

use anyhow::Context;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, RedisError, Script, Value, aio::MultiplexedConnection,
};
use reply::{assert_invalid, texts};
use test_support::RedisServer;
use token_store::keys::KeyLayout;
use token_store::script;

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
/// The outcomes [`spaced`] events cycle through.
const CYCLE: [&str; 4] = ["rotated", "replayed", "reused", "expired"];

// ARGV slots, numbered as the scripts' headers number them. `audit_append.lua`: now,
// retention, most events kept, then 7 arguments per event.
const ARG_NOW: usize = 1;
const ARG_RETENTION: usize = 2;
const ARG_MAX: usize = 3;
/// The time and generation of a call's second event (the first is ARGV[4..=10]).
const ARG_SECOND_AT: usize = 11;
const ARG_SECOND_GENERATION: usize = 16;
// `audit_list.lua`; `audit_summary.lua` takes the first two.
const ARG_SINCE: usize = 1;
const ARG_UNTIL: usize = 2;
const ARG_PAGE: usize = 3;
const ARG_AFTER: usize = 4;
const ARG_OUTCOMES: usize = 5;
const ARG_BUDGET: usize = 6;

/// One stream entry as `XRANGE` returns it: id and field/value pairs in stored order.
type Entry = (String, Vec<(String, String)>);

/// Every entry of a stream, its last generated id (`None`: no key) and its `PEXPIRETIME`
/// (-1: no expiry, -2: no key).
type Snapshot = (Vec<Entry>, Option<String>, i64);

/// The 8 strings `audit_list.lua` returns per event.
type Row = [String; 8];

/// A refusal row: what it shows, its changes to the baseline, and the error text it must get.
type Refusal<'a> = (&'a str, Changes, &'a str);

/// A list row: what it shows, its changes to the baseline, and the page it must answer: the
/// continuation ('' for none) and the rows.
type Query<'a> = (&'a str, Changes, &'a str, &'a [Row]);

/// An append row: what it shows; now, retention, most events kept and the events; the reply
/// (events appended) and the whole stream afterwards.
type Step<'a> = (&'a str, u64, u64, u64, &'a [Event], u64, &'a [Entry]);

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
        let [_, o, r, d, f, g, t] = self.args();
        [("o", o), ("r", r), ("d", d), ("f", f), ("g", g), ("t", t)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// The row `audit_list.lua` should return for this event filed under its own millisecond,
    /// built from the event rather than from the stream.
    fn row(&self) -> Row {
        let [at, o, r, d, f, g, t] = self.args();
        [format!("{at}-0"), at, o, r, d, f, g, t]
    }
}

/// The entry of an event filed under `<ms>-<seq>`.
fn filed(ms: u64, seq: u64, event: &Event) -> Entry {
    (format!("{ms}-{seq}"), event.fields())
}

/// The entries of events that each have a millisecond of their own (`<at>-0`), in order.
fn own_ms<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<Entry> {
    events.into_iter().map(|e| filed(e.at, 0, e)).collect()
}

/// One change a table row makes to its baseline's arguments.
#[derive(Debug, Clone)]
enum Change {
    /// ARGV[slot] takes the value; the slot one past the last argument adds it.
    Set(usize, String),
    /// Only the first n arguments are passed.
    Keep(usize),
}

/// The changes a table row makes to its baseline's arguments, applied in order.
#[derive(Debug, Clone, Default)]
struct Changes(Vec<Change>);

/// The baseline as it is.
fn unchanged() -> Changes {
    Changes::default()
}

fn set(slot: usize, value: impl Display) -> Changes {
    unchanged().set(slot, value)
}

fn keep(n: usize) -> Changes {
    unchanged().keep(n)
}

/// The time window of `audit_list.lua` and `audit_summary.lua`.
fn window(since: impl Display, until: impl Display) -> Changes {
    set(ARG_SINCE, since).set(ARG_UNTIL, until)
}

impl Changes {
    fn set(mut self, slot: usize, value: impl Display) -> Self {
        self.0.push(Change::Set(slot, value.to_string()));
        self
    }

    fn keep(mut self, n: usize) -> Self {
        self.0.push(Change::Keep(n));
        self
    }

    fn apply(&self, baseline: &[String]) -> Vec<String> {
        let mut args = baseline.to_vec();
        for change in &self.0 {
            match change {
                Change::Set(slot, value) if (1..=args.len()).contains(slot) => {
                    args[slot - 1] = value.clone()
                }
                Change::Set(slot, value) if *slot == args.len() + 1 => args.push(value.clone()),
                Change::Keep(n) if *n <= args.len() => args.truncate(*n),
                other => panic!("{other:?} does not fit {} arguments", args.len()),
            }
        }
        args
    }
}

/// Arguments as the scripts receive them.
fn args(items: &[&dyn Display]) -> Vec<String> {
    items.iter().map(|a| a.to_string()).collect()
}

/// The row `audit_list.lua` should return for a stored entry.
fn row((id, fields): &Entry) -> Row {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("entry {id} has no field {name}"))
    };
    let [o, r, d, f, g, t] = ["o", "r", "d", "f", "g", "t"].map(field);
    [id.clone(), ms(id).to_string(), o, r, d, f, g, t]
}

/// The millisecond part of a stream id.
fn ms(id: &str) -> u64 {
    id.split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or_else(|| panic!("not a stream id: {id:?}"))
}

/// The scripts under test, each called with the keys `audit.rs` passes it.
#[derive(Debug, Clone, Copy)]
enum Audit {
    Append,
    List,
    Summary,
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
        let created = NOW.to_string();
        #[rustfmt::skip]
        let fields = [("n", "Web app"), ("ty", "confidential"), ("sc", "read write"),
            ("rp", "reject-only"), ("h", "hash-1"), ("ca", &created)];
        self.hset(client, &fields).await
    }

    /// Sets fields of the client's record.
    async fn hset(&mut self, client: &str, fields: &[(&str, &str)]) -> anyhow::Result<()> {
        let key = self.client_key(client);
        let cmd = redis::cmd("HSET").arg(&key).arg(fields).to_owned();
        Ok(cmd.query_async(&mut self.conn).await?)
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

    /// An audit script for one client, with raw arguments as `audit.rs` passes them.
    async fn call(
        &mut self,
        script: Audit,
        client: &str,
        args: &[String],
    ) -> Result<Vec<String>, RedisError> {
        let (stream, record) = (self.stream(client), self.client_key(client));
        match script {
            Audit::Append => {
                self.invoke(&script::audit_append::SCRIPT, &[&stream, &record], args)
                    .await
            }
            Audit::List => {
                self.invoke(&script::audit_list::SCRIPT, &[&stream], args)
                    .await
            }
            Audit::Summary => {
                self.invoke(&script::audit_summary::SCRIPT, &[&stream], args)
                    .await
            }
        }
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
        let mut args = args(&[&now, &retention, &max]);
        for event in events {
            args.extend(event.args());
        }
        let reply = self.call(Audit::Append, client, &args).await?;
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

    /// Every page of a list query from the newest on, following the continuation ids: the
    /// rows of all pages in order, and the number of calls it took.
    async fn walk(&mut self, client: &str, query: &[String]) -> anyhow::Result<(Vec<Row>, usize)> {
        let page: usize = query[ARG_PAGE - 1].parse()?;
        let mut rows = Vec::new();
        let mut after = String::new();
        for calls in 1..=10_000 {
            let args = set(ARG_AFTER, &after).apply(query);
            let (next, page_rows) = page_of(self.call(Audit::List, client, &args).await?);
            assert!(page_rows.len() <= page, "page longer than its size");
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
        since: impl Display,
        until: impl Display,
    ) -> Result<Vec<String>, RedisError> {
        self.call(Audit::Summary, client, &args(&[&since, &until]))
            .await
    }

    /// First id, last id and the counts by outcome.
    async fn summary(
        &mut self,
        client: &str,
        since: u64,
        until: u64,
    ) -> anyhow::Result<(String, String, BTreeMap<String, u64>)> {
        let reply = self.summary_raw(client, since, until).await?;
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
        let mut info: HashMap<String, Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&key)
            .query_async(&mut self.conn)
            .await?;
        let id = info
            .remove("last-generated-id")
            .context("XINFO STREAM has no last-generated-id")?;
        Ok(texts(id).into_iter().next())
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

    /// Runs every row: the baseline's arguments with the row's changes must be refused with
    /// the row's error text, and leave the client's stream exactly as `before`.
    async fn assert_refused(
        &mut self,
        script: Audit,
        client: &str,
        baseline: &[String],
        rows: &[Refusal<'_>],
        before: &Snapshot,
    ) -> anyhow::Result<()> {
        for (case, changes, error) in rows {
            let result = self.call(script, client, &changes.apply(baseline)).await;
            assert_invalid(result, error, case);
            let after = self.snapshot(client).await?;
            assert_eq!(&after, before, "{case}: the stream changed");
        }
        Ok(())
    }

    /// Runs every row: `audit_list.lua` with the baseline's arguments changed by the row must
    /// answer the row's rows and continuation.
    async fn assert_pages(
        &mut self,
        client: &str,
        baseline: &[String],
        rows: &[Query<'_>],
    ) -> anyhow::Result<()> {
        for (case, changes, next, expected) in rows {
            let reply = self
                .call(Audit::List, client, &changes.apply(baseline))
                .await
                .with_context(|| format!("{case}: the list failed"))?;
            let (got_next, got) = page_of(reply);
            assert_eq!(got, *expected, "{case}: the rows");
            assert_eq!(got_next, *next, "{case}: the continuation");
        }
        Ok(())
    }

    /// Runs every row in order: the append must reply the row's count and leave the row's
    /// stream, and write nothing but the stream (the database holds it and the client record).
    async fn assert_steps(&mut self, client: &str, steps: &[Step<'_>]) -> anyhow::Result<()> {
        for (case, now, retention, max, events, appended, stream) in steps {
            let reply = self
                .append(client, *now, *retention, *max, events)
                .await
                .with_context(|| format!("{case}: the append failed"))?;
            assert_eq!(reply, *appended, "{case}: the events appended");
            let entries = self.entries(client).await?;
            assert_eq!(entries, *stream, "{case}: the stream afterwards");
            assert_eq!(
                self.dbsize().await?,
                2,
                "{case}: keys besides record and stream"
            );
        }
        Ok(())
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

/// The ids of list rows.
fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r[0].clone()).collect()
}

/// Events stamped at these times, numbered from 1, all `rotated`.
fn rotated(times: impl IntoIterator<Item = u64>) -> Vec<Event> {
    (1..)
        .zip(times)
        .map(|(n, at)| ev(n, at, "rotated"))
        .collect()
}

/// `n` events one millisecond apart from `start`, outcomes cycling through [`CYCLE`].
fn spaced(n: u64, start: u64) -> Vec<Event> {
    (0..n)
        .map(|i| ev(i, start + i, CYCLE[(i % 4) as usize]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// audit_append.lua

#[tokio::test]
async fn append_stores_every_event_in_order_with_every_field_under_its_own_millisecond()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    // No family, no reason: the caller passes empty strings, which are kept as such.
    let no_family = Event {
        at: NOW,
        outcome: "invalid_client".into(),
        reason: String::new(),
        detail: String::new(),
        family: String::new(),
        generation: 0,
        trace: String::new(),
    };
    let first = [
        ev(1, NOW - 30, "rotated"),
        ev(2, NOW - 20, "reused"),
        ev(3, NOW - 10, "invalid_token"),
        no_family,
    ];
    let later = [ev(5, NOW + 1, "replayed"), ev(6, NOW + 2, "expired")];
    let stream = own_ms(first.iter().chain(&later));
    #[rustfmt::skip]
    let steps: &[Step] = &[
        // case                              now      retention max  events  reply stream
        ("four events",                      NOW,     DAY,      100, &first, 4,    &stream[..4]),
        ("a second call appends after them", NOW + 2, DAY,      100, &later, 2,    &stream),
    ];
    h.assert_steps(CLIENT, steps).await
}

#[tokio::test]
async fn append_for_an_unknown_or_deleted_client_returns_zero_and_writes_nothing()
-> anyhow::Result<()> {
    /// What Redis holds before the row's append.
    #[derive(Debug, Clone, Copy)]
    enum Before {
        Nothing,
        OtherClientsRecord,
        Tombstone,
        DeletedAfterEvents,
    }
    use Before::*;
    let ghost = [1, 2].map(|n| ev(n, NOW + n - 1, "invalid_client"));
    let revoked = [ev(1, NOW, "revoked")];
    let later = [ev(9, NOW + 10 * DAY, "rotated")];
    /// What Redis holds, the client; now, retention, most events kept and the events; the
    /// number of keys afterwards.
    type NotLive<'a> = (Before, &'a str, u64, u64, u64, &'a [Event], i64);
    #[rustfmt::skip]
    let rows: [NotLive; 4] = [
        // before           client   now             retention max  events    keys afterwards
        (Nothing,            "ghost", NOW + 1,        DAY,      100, &ghost,   0),
        // Another client's live record does not make this one known (the check is on
        // KEYS[2]).
        (OtherClientsRecord, "ghost", NOW + 1,        DAY,      100, &ghost,   1),
        // A tombstone as delete_client.lua leaves it: a hash with only `del`.
        (Tombstone,          "gone",  NOW,            DAY,      100, &revoked, 1),
        // A client with 3 events, then deleted by delete_client.lua: its stream is not appended
        // to, trimmed or re-armed any more. With max 1 and a retention that trims everything,
        // any write would show.
        (DeletedAfterEvents, CLIENT,  NOW + 10 * DAY, HOUR,     1,   &later,   2),
    ];
    for (before, client, now, retention, max, events, keys) in rows {
        let mut h = Harness::start().await?;
        match before {
            Nothing => {}
            OtherClientsRecord => h.live_client(OTHER_CLIENT).await?,
            Tombstone => h.hset(client, &[("del", &NOW.to_string())]).await?,
            DeletedAfterEvents => {
                h.seed(client, &spaced(3, NOW)).await?;
                let record = h.client_key(client);
                let deleted = h
                    .invoke(
                        &script::delete_client::SCRIPT,
                        &[&record],
                        &args(&[&(NOW + 5)]),
                    )
                    .await?;
                assert_eq!(deleted, ["1"], "delete_client did not delete the client");
            }
        }
        let snapshot = h.snapshot(client).await?;
        let appended = h
            .append(client, now, retention, max, events)
            .await
            .with_context(|| format!("{before:?}: the append failed"))?;
        assert_eq!(appended, 0, "{before:?}: events appended");
        assert_eq!(h.snapshot(client).await?, snapshot, "{before:?}: stream");
        assert_eq!(h.dbsize().await?, keys, "{before:?}: keys");
    }
    Ok(())
}

#[tokio::test]
async fn append_trims_to_exactly_the_most_events_kept_oldest_first() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let first = spaced(8, NOW);
    let more = [ev(8, NOW + 8, "rotated"), ev(9, NOW + 9, "rotated")];
    let newest = [ev(10, NOW + 10, "reused")];
    let kept_then: Vec<Event> = first.iter().chain(&more).cloned().collect();
    #[rustfmt::skip]
    let steps: &[Step] = &[
        // All 8 are appended (the reply counts appends, not survivors); the 3 oldest trimmed.
        ("8 events, at most 5 kept", NOW + 7,  DAY, 5, &first,  8, &own_ms(&first[3..])),
        // A later call trims what was there before it, still oldest first, still exactly.
        ("2 more, at most 5 kept",   NOW + 9,  DAY, 5, &more,   2, &own_ms(&kept_then[5..])),
        // A smaller maximum applies at once; max 1 keeps just the newest.
        ("1 more, at most 1 kept",   NOW + 10, DAY, 1, &newest, 1, &own_ms(&newest)),
    ];
    h.assert_steps(CLIENT, steps).await
}

#[tokio::test]
async fn append_drops_events_older_than_now_minus_retention() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let cutoff = NOW - HOUR;
    let events = rotated([cutoff - 1000, cutoff - 1, cutoff, cutoff + 1, NOW, NOW + 1]);
    #[rustfmt::skip]
    let steps: &[Step] = &[
        // Every event is appended, then everything before `now - retention` is trimmed: the
        // event at exactly the cutoff stays.
        ("events around the cutoff", NOW,     HOUR, 100, &events[..5], 5, &own_ms(&events[2..5])),
        // A later `now` trims events that earlier calls kept, by the later cutoff.
        ("a later now",              NOW + 1, HOUR, 100, &events[5..], 1, &own_ms(&events[3..])),
    ];
    h.assert_steps(CLIENT, steps).await
}

#[tokio::test]
async fn append_with_now_below_the_retention_trims_nothing_and_does_not_fail() -> anyhow::Result<()>
{
    // A clock (or a test) near the epoch: now - retention would be negative, an invalid
    // stream id for XTRIM, so no age trimming may be attempted.
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let events = rotated([1, 5, 10, 20]);
    let stream = own_ms(&events);
    #[rustfmt::skip]
    let steps: &[Step] = &[
        ("now below the retention", 10,  DAY, 100, &events[..3], 3, &stream[..3]),
        // The cutoff is 0: nothing is older.
        ("now == retention",        DAY, DAY, 100, &events[3..], 1, &stream),
    ];
    h.assert_steps(CLIENT, steps).await
}

#[tokio::test]
async fn append_sets_the_stream_to_expire_after_the_retention() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let key = h.stream(CLIENT);
    // Every append re-arms the expiry with its own retention (the second longer than the
    // first).
    #[rustfmt::skip]
    let rows = [
        // retention  event                      PTTL afterwards in (low, high]
        ("1 hour",    ev(1, NOW, "rotated"),     HOUR,    (0, HOUR)),
        ("7 days",    ev(2, NOW + 1, "rotated"), 7 * DAY, (HOUR, 7 * DAY)),
    ];
    for (case, event, retention, (low, high)) in rows {
        let appended = h.append(CLIENT, event.at, retention, 100, &[event]).await?;
        assert_eq!(appended, 1, "{case}");
        let pttl = h.pttl(&key).await?;
        assert!(
            pttl > low as i64 && pttl <= high as i64,
            "PTTL {pttl} after a {case} retention"
        );
    }
    // The client record gets no expiry from the audit.
    assert_eq!(h.pttl(&h.client_key(CLIENT)).await?, -1);
    Ok(())
}

#[tokio::test]
async fn append_files_an_event_stamped_before_the_newest_under_the_newest_millisecond()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let first = [ev(1, NOW, "rotated")];
    let behind = [ev(2, NOW - 500, "replayed"), ev(3, NOW - 400, "reused")];
    let out_of_order = [ev(4, NOW + 10, "rotated"), ev(5, NOW + 5, "expired")];
    let timely = [ev(6, NOW + 20, "rotated")];
    let stream = [
        filed(NOW, 0, &first[0]),
        filed(NOW, 1, &behind[0]),
        filed(NOW, 2, &behind[1]),
        filed(NOW + 10, 0, &out_of_order[0]),
        filed(NOW + 10, 1, &out_of_order[1]),
        filed(NOW + 20, 0, &timely[0]),
    ];
    #[rustfmt::skip]
    let steps: &[Step] = &[
        ("an event at NOW",                NOW,       DAY, 100, &first,        1, &stream[..1]),
        // Another instance, its clock 500 ms behind: filed under NOW, after the existing
        // event, without an error. Its later, still-behind event follows it in the same ms.
        ("two events from a clock behind", NOW - 400, DAY, 100, &behind,       2, &stream[..3]),
        // Within one call, an event stamped before the previous one of the same call
        // (requests that finished out of order) follows it too.
        ("two events out of order",        NOW + 10,  DAY, 100, &out_of_order, 2, &stream[..5]),
        // A timely event after them gets its own millisecond again.
        ("a timely event",                 NOW + 20,  DAY, 100, &timely,       1, &stream),
    ];
    h.assert_steps(CLIENT, steps).await
}

#[tokio::test]
async fn append_files_a_late_event_after_the_newest_id_even_when_trimming_emptied_the_stream()
-> anyhow::Result<()> {
    // XADD refuses any id at or below the stream's last generated id, which survives trimming:
    // the clamp must hold against that id, not only against the newest entry still there.
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let stale = [ev(1, NOW - 10, "rotated"), ev(2, NOW, "rotated")];
    let late = [ev(3, NOW - 5, "reused")];
    let after = [filed(NOW, 1, &late[0])];
    #[rustfmt::skip]
    let steps: &[Step] = &[
        // Events that were queued past the retention (Redis was away): appended, then trimmed
        // by age at once, leaving an empty stream that remembers NOW-0 as its last id.
        ("events past the retention",  NOW + 2 * HOUR, HOUR, 100, &stale, 2, &[]),
        // An event stamped before that id (another instance's slower clock) is appended
        // after it.
        ("an event stamped before it", NOW - 5,        HOUR, 100, &late,  1, &after),
    ];
    h.assert_steps(CLIENT, &steps[..1]).await?;
    assert_eq!(h.last_generated_id(CLIENT).await?, Some(format!("{NOW}-0")));
    h.assert_steps(CLIENT, &steps[1..]).await
}

#[tokio::test]
async fn append_gives_events_of_the_same_millisecond_distinct_growing_ids() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.live_client(CLIENT).await?;
    let same = [
        ev(1, NOW, "rotated"),
        ev(2, NOW, "replayed"),
        ev(3, NOW, "reused"),
        ev(4, NOW, "expired"),
    ];
    let stream: Vec<Entry> = (0..)
        .zip(&same)
        .map(|(seq, e)| filed(NOW, seq, e))
        .collect();
    #[rustfmt::skip]
    let steps: &[Step] = &[
        ("three events of one millisecond",       NOW, DAY, 100, &same[..3], 3, &stream[..3]),
        // And across calls: a second call in the same millisecond continues the sequence.
        ("a second call in the same millisecond", NOW, DAY, 100, &same[3..], 1, &stream),
    ];
    h.assert_steps(CLIENT, steps).await
}

#[tokio::test]
async fn append_rejects_invalid_arguments_and_writes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // A stream whose every property a write would change: more entries than the calls' max,
    // events old enough for their cutoff, and a deadline far from theirs.
    h.seed(CLIENT, &spaced(4, NOW)).await?;
    let before = h.snapshot(CLIENT).await?;
    assert_eq!(before.0.len(), 4);

    // The baselines: valid calls, `DAY` retention, max 2, with one event and with two.
    let later = NOW + 10 * DAY;
    let mut one_event = args(&[&later, &DAY, &2]);
    one_event.extend(ev(10, later, "rotated").args());
    let mut two_events = one_event.clone();
    two_events.extend(ev(11, later + 1, "rotated").args());

    const HEADER: &str = "audit: now, retention and max length must be positive integers";
    const GROUPS: &str = "audit: events come in groups of 7 arguments";
    const NUMBERS: &str = "audit: event time and generation must be integers";
    #[rustfmt::skip]
    let header: &[Refusal] = &[
        ("now: a word",                 set(ARG_NOW, "soon"),        HEADER),
        ("now: a fraction",             set(ARG_NOW, "1.5"),         HEADER),
        ("now: negative",               set(ARG_NOW, "-1"),          HEADER),
        ("now: empty",                  set(ARG_NOW, ""),            HEADER),
        ("now: an exponent",            set(ARG_NOW, "1e12"),        HEADER),
        ("now: a leading space",        set(ARG_NOW, " 1"),          HEADER),
        ("now: hexadecimal",            set(ARG_NOW, "0x10"),        HEADER),
        ("retention: zero",             set(ARG_RETENTION, "0"),     HEADER),
        ("retention: a word",           set(ARG_RETENTION, "day"),   HEADER),
        ("retention: a fraction",       set(ARG_RETENTION, "1.5"),   HEADER),
        ("retention: negative",         set(ARG_RETENTION, "-5"),    HEADER),
        ("retention: empty",            set(ARG_RETENTION, ""),      HEADER),
        ("max: zero",                   set(ARG_MAX, "0"),           HEADER),
        ("max: a word",                 set(ARG_MAX, "x"),           HEADER),
        ("max: a float",                set(ARG_MAX, "2.0"),         HEADER),
        ("max: negative",               set(ARG_MAX, "-2"),          HEADER),
        ("max: empty",                  set(ARG_MAX, ""),            HEADER),
    ];
    // The bad event comes second: a check made while writing would have written the first.
    // Argument counts other than 3 + 7k: 3 + 7 + 6 has numbers where a second event's time
    // and generation would be, so only the count check stops the first event being written.
    #[rustfmt::skip]
    let events: &[Refusal] = &[
        ("event time: a fraction",      set(ARG_SECOND_AT, "1.5"),   NUMBERS),
        ("event time: negative",        set(ARG_SECOND_AT, "-1"),    NUMBERS),
        ("event time: empty",           set(ARG_SECOND_AT, ""),      NUMBERS),
        ("event time: an exponent",     set(ARG_SECOND_AT, "1e3"),   NUMBERS),
        ("event time: a word",          set(ARG_SECOND_AT, "soon"),  NUMBERS),
        ("event time: a float",         set(ARG_SECOND_AT, format!("{later}.0")), NUMBERS),
        ("generation: a fraction",      set(ARG_SECOND_GENERATION, "1.5"), NUMBERS),
        ("generation: negative",        set(ARG_SECOND_GENERATION, "-1"),  NUMBERS),
        ("generation: empty",           set(ARG_SECOND_GENERATION, ""),    NUMBERS),
        ("generation: an exponent",     set(ARG_SECOND_GENERATION, "2e0"), NUMBERS),
        ("generation: a word",          set(ARG_SECOND_GENERATION, "g"),   NUMBERS),
        ("3 + 7 + 6 arguments",         keep(16),                          GROUPS),
        ("3 + 7 + 1 arguments",         set(ARG_SECOND_AT, "x").keep(11),  GROUPS),
        ("3 + 1 arguments",             keep(4),                           GROUPS),
        ("3 + 6 arguments",             keep(9),                           GROUPS),
        ("2 arguments",                 keep(2),                           HEADER),
        ("no arguments",                keep(0),                           HEADER),
    ];
    h.assert_refused(Audit::Append, CLIENT, &one_event, header, &before)
        .await?;
    h.assert_refused(Audit::Append, CLIENT, &two_events, events, &before)
        .await?;

    // Control: the second baseline does change the stream, so the refusals above were about
    // the arguments alone.
    assert_eq!(h.call(Audit::Append, CLIENT, &two_events).await?, ["2"]);
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
    // (case, arguments, the error's words): a bad header, then bad events.
    let event = |at: &'static str, generation: &'static str| {
        args(&[
            &NOW,
            &60_000,
            &10,
            &at,
            &"rotated",
            &"",
            &"",
            &"fam",
            &generation,
            &"",
        ])
    };
    let cases = [
        (
            "retention 0",
            args(&[&NOW, &0, &10]),
            "audit: now, retention and max length",
        ),
        (
            "event generation not a number",
            event("1", "two"),
            "audit: event time and generation",
        ),
        (
            "event time not a number",
            event("soon", "1"),
            "audit: event time and generation",
        ),
    ];
    for (case, argv, words) in cases {
        let result = h.call(Audit::Append, "ghost", &argv).await;
        assert_invalid(result, words, case);
        assert_eq!(h.dbsize().await?, 0, "{case}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// audit_list.lua

#[tokio::test]
async fn list_returns_every_field_newest_first() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let events = spaced(5, NOW);
    h.seed(CLIENT, &events).await?;

    // Exactly the stored fields, per event, newest first; a page that did not fill has no
    // continuation.
    let expected: Vec<Row> = events.iter().rev().map(Event::row).collect();
    let baseline = args(&[&0, &(NOW + 100), &10, &"", &"", &ALL]);
    let pages: &[Query] = &[("every event", unchanged(), "", &expected)];
    h.assert_pages(CLIENT, &baseline, pages).await
}

#[tokio::test]
async fn list_keeps_since_inclusive_and_until_exclusive_by_event_millisecond() -> anyhow::Result<()>
{
    let mut h = Harness::start().await?;
    // Two events in each of the boundary milliseconds.
    h.seed(
        CLIENT,
        &rotated([100, 100, 200, 200, 300, 400, 400].map(|ms| NOW + ms)),
    )
    .await?;
    let all = newest_first(&h.entries(CLIENT).await?);
    // The rows by index, as the table below takes them.
    let id = |at: u64, seq: u64| format!("{}-{seq}", NOW + at);
    #[rustfmt::skip]
    let by_index = [id(400, 1), id(400, 0), id(300, 0), id(200, 1), id(200, 0),
        id(100, 1), id(100, 0)];
    assert_eq!(ids(&all), by_index);
    let w = |since: u64, until: u64| window(NOW + since, NOW + until);
    let baseline = args(&[&NOW, &(NOW + 1000), &10, &"", &"", &ALL]);
    #[rustfmt::skip]
    let pages: &[Query] = &[
        ("[NOW+200, NOW+400)",  w(200, 400),  "", &all[2..5]),
        ("[NOW+201, NOW+401)",  w(201, 401),  "", &all[..3]),
        ("[NOW+100, NOW+101)",  w(100, 101),  "", &all[5..]),
        ("[NOW+400, NOW+401)",  w(400, 401),  "", &all[..2]),
        ("[NOW+399, NOW+400)",  w(399, 400),  "", &[]),
        ("[NOW+401, NOW+1000)", w(401, 1000), "", &[]),
        ("[NOW+0, NOW+100)",    w(0, 100),    "", &[]),
        // Continuing after the newest keeps the same window.
        ("a page of one",       w(200, 400).set(ARG_PAGE, 1), &all[2][0], &all[2..3]),
        ("continued",           w(200, 400).set(ARG_PAGE, 5).set(ARG_AFTER, &all[2][0]),
                                                              "",         &all[3..5]),
    ];
    h.assert_pages(CLIENT, &baseline, pages).await
}

#[tokio::test]
async fn list_pages_continue_after_the_last_id_without_overlap_or_gap() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // 25 events, some sharing a millisecond, so pages split inside one.
    let events: Vec<Event> = (0..25)
        .map(|i| ev(i, NOW + i / 3, CYCLE[(i % 4) as usize]))
        .collect();
    h.seed(CLIENT, &events).await?;
    let all = newest_first(&h.entries(CLIENT).await?);
    assert_eq!(all.len(), 25);
    let middle = &all[4][0];
    assert_eq!(
        ms(middle),
        ms(&all[5][0]),
        "the continuation should split a millisecond"
    );

    let baseline = args(&[&NOW, &(NOW + 100), &10, &"", &"", &ALL]);
    #[rustfmt::skip]
    let pages: &[Query] = &[
        // The first page fills: 10 rows, and the continuation is the last row's id.
        ("the first page",  unchanged(),                   &all[9][0],  &all[..10]),
        // The continuation is exclusive: the next page starts with the event after it.
        ("the second page", set(ARG_AFTER, &all[9][0]),    &all[19][0], &all[10..20]),
        ("the last page",   set(ARG_AFTER, &all[19][0]),   "",          &all[20..]),
        ("after the middle of a millisecond, a page of one",
                            set(ARG_AFTER, middle).set(ARG_PAGE, 1), &all[5][0], &all[5..6]),
    ];
    h.assert_pages(CLIENT, &baseline, pages).await?;

    // Walking with every page size yields every event exactly once, in order.
    for page in [1, 2, 3, 7, 24, 25, 26] {
        let (rows, _) = h
            .walk(CLIENT, &set(ARG_PAGE, page).apply(&baseline))
            .await?;
        assert_eq!(rows, all, "page size {page}");
    }
    Ok(())
}

#[tokio::test]
async fn list_walks_pages_larger_than_the_scripts_read_chunk() -> anyhow::Result<()> {
    // The script reads 100 entries at a time; pages and walks cross those reads.
    let mut h = Harness::start().await?;
    let events: Vec<Event> = (0..250)
        .map(|i| ev(i, NOW + i / 2, CYCLE[(i % 4) as usize]))
        .collect();
    h.seed(CLIENT, &events).await?;
    let all = newest_first(&h.entries(CLIENT).await?);
    assert_eq!(all.len(), 250);
    let reused: Vec<Row> = all.iter().filter(|r| r[2] == "reused").cloned().collect();
    assert_eq!(reused.len(), 62);

    let baseline = args(&[&NOW, &(NOW + 1000), &150, &"", &"", &ALL]);
    let filtered = set(ARG_PAGE, 30).set(ARG_OUTCOMES, "reused");
    #[rustfmt::skip]
    let pages: &[Query] = &[
        ("a page of 150",          unchanged(),                  &all[149][0],   &all[..150]),
        ("the rest",               set(ARG_AFTER, &all[149][0]), "",             &all[150..]),
        // One page holds everything: read in three chunks, nothing repeated or skipped.
        ("one page of everything", set(ARG_PAGE, 1000),          "",             &all),
        // A filter that matches one event in four: a page of 30 spans more than one chunk.
        ("a filtered page of 30",  filtered.clone(),             &reused[29][0], &reused[..30]),
    ];
    h.assert_pages(CLIENT, &baseline, pages).await?;

    for page in [1, 99, 100, 101, 249, 250] {
        let (rows, _) = h
            .walk(CLIENT, &set(ARG_PAGE, page).apply(&baseline))
            .await?;
        assert_eq!(rows, all, "page size {page}");
    }
    let (rows, _) = h.walk(CLIENT, &filtered.apply(&baseline)).await?;
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
    let reused = only(&["reused"]);
    assert_eq!(reused.len(), 3);
    let either = only(&["reused", "expired"]);

    let baseline = args(&[&NOW, &(NOW + 100), &100, &"", &"", &ALL]);
    #[rustfmt::skip]
    let pages: &[Query] = &[
        ("no filter",         set(ARG_OUTCOMES, ""),                                "", &all),
        ("one",               set(ARG_OUTCOMES, "reused"),                          "", &reused),
        ("two",               set(ARG_OUTCOMES, "reused expired"),                  "", &either),
        ("spaces around",     set(ARG_OUTCOMES, "  expired   reused "),             "", &either),
        ("every outcome",     set(ARG_OUTCOMES, "rotated replayed reused expired"), "", &all),
        // Whole outcomes only: neither a prefix nor an absent outcome matches anything.
        ("a prefix",          set(ARG_OUTCOMES, "reuse"),                           "", &[]),
        ("never recorded",    set(ARG_OUTCOMES, "revoked"),                         "", &[]),
        // Outcomes are separated by spaces, not found anywhere in the list.
        ("without a space",   set(ARG_OUTCOMES, "reusedexpired"),                   "", &[]),
    ];
    h.assert_pages(CLIENT, &baseline, pages).await
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
    let row_of = |i: u64| events[(i - 1) as usize].row();

    let baseline = args(&[&NOW, &(NOW + 100), &10, &"", &"reused", &4]);
    #[rustfmt::skip]
    let pages: &[Query] = &[
        ("four examined (10..7), none matched: an empty page that continues after the 4th",
            unchanged(),                                &id(7),  &[]),
        ("four more (6..3): one match, fewer than the page size, and a continuation",
            set(ARG_AFTER, id(7)),                      &id(3),  &[row_of(3)]),
        ("the rest (2, 1): the stream ends before the budget does",
            set(ARG_AFTER, id(3)),                      "",      &[row_of(2), row_of(1)]),
        // A budget of one examines one entry per call, matching or not.
        ("a budget of one, no filter",
            set(ARG_OUTCOMES, "").set(ARG_BUDGET, 1),   &id(10), &[row_of(10)]),
        ("a budget of one, filtered",
            set(ARG_BUDGET, 1),                         &id(10), &[]),
    ];
    h.assert_pages(CLIENT, &baseline, pages).await?;

    // Walking under a budget still finds every match exactly once.
    for budget in [1, 2, 3, 4, 9, 10, 11] {
        let query = set(ARG_BUDGET, budget).apply(&baseline);
        let (rows, calls) = h.walk(CLIENT, &query).await?;
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
    let baseline = args(&[&NOW, &(NOW + 1000), &10, &"", &"revoked", &150]);
    #[rustfmt::skip]
    let pages: &[Query] = &[
        ("150 examined",  unchanged(),                  &all[149][0], &[]),
        ("the other 100", set(ARG_AFTER, &all[149][0]), "",           &[]),
    ];
    h.assert_pages(CLIENT, &baseline, pages).await
}

#[tokio::test]
async fn list_of_an_empty_or_missing_stream_is_one_empty_continuation() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let baseline = args(&[&0, &(NOW + 1), &100, &"", &"", &1000]);
    #[rustfmt::skip]
    let missing: &[Query] = &[
        ("a missing stream",   unchanged(),                                           "", &[]),
        ("continued, filtered", set(ARG_AFTER, "5-0").set(ARG_OUTCOMES, "reused"),    "", &[]),
    ];
    h.assert_pages(CLIENT, &baseline, missing).await?;
    assert!(
        !h.exists(&h.stream(CLIENT)).await?,
        "a list created the stream"
    );

    // A stream emptied by trimming.
    h.live_client(CLIENT).await?;
    let appended = h
        .append(CLIENT, NOW + DAY, HOUR, 100, &[ev(1, NOW, "rotated")])
        .await?;
    assert_eq!(appended, 1);
    assert!(h.exists(&h.stream(CLIENT)).await?);
    let emptied: &[Query] = &[("a trimmed stream", set(ARG_UNTIL, NOW + 2 * DAY), "", &[])];
    h.assert_pages(CLIENT, &baseline, emptied).await
}

#[tokio::test]
async fn list_continuation_never_reaches_past_until_or_before_since() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.seed(CLIENT, &spaced(10, NOW)).await?;
    let all = newest_first(&h.entries(CLIENT).await?);
    let id = |at: u64, seq: u64| format!("{}-{seq}", NOW + at);
    let baseline = args(&[&NOW, &(NOW + 5), &100, &"", &"", &ALL]);
    #[rustfmt::skip]
    let pages: &[Query] = &[
        // A page token from a wider window (or any id the caller sends) beyond `until`: the
        // window still holds, only events before `until` are listed.
        ("past until",         set(ARG_AFTER, id(8, 0)),                           "", &all[5..]),
        ("in until's ms",      set(ARG_AFTER, id(5, 3)),                           "", &all[5..]),
        // A token inside the window narrows it as usual.
        ("inside the window",  set(ARG_AFTER, id(3, 0)),                           "", &all[7..]),
        // A token older than `since`: nothing is left.
        ("older than since",   window(NOW + 5, NOW + 10).set(ARG_AFTER, id(2, 0)), "", &[]),
    ];
    h.assert_pages(CLIENT, &baseline, pages).await
}

#[tokio::test]
async fn list_rejects_invalid_arguments() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.seed(CLIENT, &spaced(3, NOW)).await?;
    let before = h.snapshot(CLIENT).await?;
    const RANGE: &str = "audit: bad time range, page size or budget";
    const CONTINUATION: &str = "audit: bad continuation id";
    let baseline = args(&[&NOW, &(NOW + 10), &10, &"", &"", &100]);
    #[rustfmt::skip]
    let rows: &[Refusal] = &[
        ("since == until",                      set(ARG_SINCE, NOW + 10),           RANGE),
        ("since > until",                       set(ARG_SINCE, NOW + 11),           RANGE),
        ("until before since",                  set(ARG_UNTIL, NOW - 1),            RANGE),
        ("page size 0",                         set(ARG_PAGE, 0),                   RANGE),
        ("budget 0",                            set(ARG_BUDGET, 0),                 RANGE),
        ("non-numeric since",                   set(ARG_SINCE, "then"),             RANGE),
        ("non-numeric until",                   set(ARG_UNTIL, "now"),              RANGE),
        ("fractional until",                    set(ARG_UNTIL, "1700000000010.5"),  RANGE),
        ("negative since",                      set(ARG_SINCE, -1),                 RANGE),
        ("fractional page size",                set(ARG_PAGE, "2.5"),               RANGE),
        ("negative page size",                  set(ARG_PAGE, -10),                 RANGE),
        ("empty page size",                     set(ARG_PAGE, ""),                  RANGE),
        ("non-numeric budget",                  set(ARG_BUDGET, "all"),             RANGE),
        ("negative budget",                     set(ARG_BUDGET, -1),                RANGE),
        ("continuation without a sequence",     set(ARG_AFTER, "5"),                CONTINUATION),
        ("continuation with an empty sequence", set(ARG_AFTER, "5-"),               CONTINUATION),
        ("continuation with an empty time",     set(ARG_AFTER, "-5"),               CONTINUATION),
        ("continuation with three parts",       set(ARG_AFTER, "5-1-2"),            CONTINUATION),
        ("continuation with a space",           set(ARG_AFTER, " 5-1"),             CONTINUATION),
        ("continuation with a suffix",          set(ARG_AFTER, "5-1x"),             CONTINUATION),
        ("continuation that is a word",         set(ARG_AFTER, "next"),             CONTINUATION),
        ("continuation with a range marker",    set(ARG_AFTER, "(5-1"),             CONTINUATION),
        ("continuation that is a special id",   set(ARG_AFTER, "+"),                CONTINUATION),
        // Fewer arguments than the contract's six.
        ("three arguments",                     window(0, 10).set(ARG_PAGE, 5).keep(3), RANGE),
    ];
    // Listing never writes, whatever its arguments.
    h.assert_refused(Audit::List, CLIENT, &baseline, rows, &before)
        .await?;
    // Control: the valid form answers.
    let (next, rows) = page_of(h.call(Audit::List, CLIENT, &baseline).await?);
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
    let tally = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(o, n)| ((*o).to_owned(), *n)).collect()
    };

    #[rustfmt::skip]
    let windows = [
        // [NOW + since, NOW + until): first id, last id, counts by outcome
        (0, 1000, id(100, 0), id(400, 1), tally(&[("rotated", 4), ("reused", 2), ("expired", 1)])),
        // since inclusive, until exclusive, both at milliseconds holding two events.
        (200, 400, id(200, 0), id(300, 0), tally(&[("rotated", 2), ("expired", 1)])),
        (100, 101, id(100, 0), id(100, 1), tally(&[("rotated", 1), ("reused", 1)])),
        (101, 401, id(200, 0), id(400, 1), tally(&[("rotated", 3), ("reused", 1), ("expired", 1)])),
        (300, 301, id(300, 0), id(300, 0), tally(&[("rotated", 1)])),
    ];
    for (since, until, first, last, counts) in windows {
        assert_eq!(
            h.summary(CLIENT, NOW + since, NOW + until).await?,
            (first, last, counts),
            "[NOW+{since}, NOW+{until})"
        );
    }
    // The exact reply: outcomes in the order they first appear.
    let reply = h.summary_raw(CLIENT, NOW + 100, NOW + 201).await?;
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
            "1".into()
        ]
    );
    Ok(())
}

#[tokio::test]
async fn summary_of_an_empty_window_or_missing_stream_has_no_ids_and_no_counts()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    assert_eq!(h.summary_raw(CLIENT, 0, NOW + 1).await?, ["", ""]);
    assert!(!h.exists(&h.stream(CLIENT)).await?);
    h.seed(CLIENT, &spaced(5, NOW + 100)).await?;
    for (since, until) in [
        (0, NOW + 100),
        (NOW + 105, NOW + 200),
        (NOW + 99, NOW + 100),
    ] {
        assert_eq!(
            h.summary_raw(CLIENT, since, until).await?,
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
        .map(|i| ev(i, NOW + i / 2, CYCLE[(i % 3) as usize]))
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
    const RANGE: &str = "audit: bad time range";
    let baseline = args(&[&NOW, &(NOW + 3)]);
    #[rustfmt::skip]
    let rows: &[Refusal] = &[
        ("since == until",     set(ARG_UNTIL, NOW),                        RANGE),
        ("since > until",      window(NOW + 1, NOW),                       RANGE),
        ("non-numeric since",  window("then", NOW),                        RANGE),
        ("non-numeric until",  set(ARG_UNTIL, "now"),                      RANGE),
        ("fractional until",   set(ARG_UNTIL, "1700000000001.5"),          RANGE),
        ("negative since",     window(-1, NOW),                            RANGE),
        ("empty until",        set(ARG_UNTIL, ""),                         RANGE),
        ("one argument",       keep(1),                                    RANGE),
        ("no arguments",       keep(0),                                    RANGE),
    ];
    // Summarising never writes, whatever its arguments.
    h.assert_refused(Audit::Summary, CLIENT, &baseline, rows, &before)
        .await?;
    // Control: the valid form answers.
    let (_, _, counts) = h.summary(CLIENT, NOW, NOW + 3).await?;
    assert_eq!(counts.values().sum::<u64>(), 3);
    Ok(())
}

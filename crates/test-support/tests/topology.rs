//! The multi-node topologies of `test_support::topology` against real processes: a Redis
//! Cluster (3 primaries, 3 replicas) and a Sentinel setup (primary, replica, 3 sentinels).
//!
//! Each test prints how long its topology took to start and to fail over (visible with
//! `--nocapture`). Every wait is a bounded poll of the real condition, done by the harness.

use std::net::SocketAddr;
use std::time::Instant;

use test_support::topology::{
    RedisCluster, RedisSentinel, Reply, SLOTS, command, crc16, pipeline, slot_of, slot_of_bytes,
};

fn run(addr: SocketAddr, args: &[&str]) -> Reply {
    command(addr, args).unwrap_or_else(|e| panic!("{e}"))
}

/// SET on `primary`, then WAIT (on the same connection, so for that write) until its one
/// replica has acknowledged it.
fn set_replicated(primary: SocketAddr, key: &str, value: &str) {
    let replies = pipeline(primary, &[&["SET", key, value], &["WAIT", "1", "3000"]])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        replies,
        [Reply::Status("OK".into()), Reply::Int(1)],
        "{primary} {key}"
    );
}

fn info_field(addr: SocketAddr, section: &[&str], field: &str) -> String {
    let text = run(addr, section);
    let text = text.text().expect("INFO gives text");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{addr}: no {field} in {text}"))
        .trim()
        .to_owned()
}

/// Keys covering the hash-tag rules: plain keys, tags, empty tags, unbalanced braces, nested
/// braces, several tags (only the first counts), non-ASCII bytes, and the project's key shapes.
fn sample_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        "a",
        "foo",
        "123456789",
        "{user1000}.following",
        "{user1000}.followers",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "{}",
        "{",
        "}",
        "}{",
        "{a",
        "a}",
        "}a{b}",
        "{a}",
        "x{a}y",
        "{{a}",
        "{a}}",
        "{ }",
        "{\u{e9}t\u{e9}}:cl\u{e9}",
        "\u{1f511}",
        "s:family:{0195d8a2-3c4e-7f00-8000-000000000001}",
        "s:client:{web}",
    ]
    .map(str::to_owned)
    .to_vec();
    for i in 0..300 {
        keys.push(format!("key:{i}"));
        keys.push(format!("{{tag{i}}}:refresh:{}", i * 7919));
        keys.push(format!("pre{i}{{{}}}post", i % 17));
    }
    keys
}

#[test]
fn crc16_is_redis_crc16_xmodem() {
    // The check value of CRC-16/XMODEM, also asserted by Redis' own crc16 test.
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(crc16(b""), 0);
    // Examples from the Redis Cluster specification.
    assert_eq!(
        slot_of("{user1000}.following"),
        slot_of("{user1000}.followers")
    );
    assert_eq!(slot_of("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
    assert_eq!(slot_of("foo{{bar}}zap"), crc16(b"{bar") % SLOTS);
    assert_eq!(slot_of("foo{bar}{zap}"), crc16(b"bar") % SLOTS);
    assert_eq!(slot_of_bytes(b"\xff{\x00}"), crc16(b"\x00") % SLOTS);
}

#[test]
fn cluster_covers_every_slot_and_hashes_like_redis() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("cluster: started in {:?}", started.elapsed());

    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), RedisCluster::NODES);
    let url = cluster.seed_url();
    let expected: Vec<String> = nodes.iter().map(SocketAddr::to_string).collect();
    assert_eq!(url, format!("redis+cluster://{}", expected.join(",")));

    // Every node: state ok, every slot assigned and ok, 6 known nodes, 3 shards.
    for &node in &nodes {
        for (field, want) in [
            ("cluster_state", "ok"),
            ("cluster_slots_assigned", "16384"),
            ("cluster_slots_ok", "16384"),
            ("cluster_known_nodes", "6"),
            ("cluster_size", "3"),
        ] {
            assert_eq!(
                info_field(node, &["CLUSTER", "INFO"], field),
                want,
                "{node}"
            );
        }
    }

    // 3 primaries, each with exactly one replica that is in sync.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), RedisCluster::PRIMARIES, "{primaries:?}");
    for &primary in &primaries {
        assert_eq!(
            info_field(primary, &["INFO", "replication"], "role"),
            "master"
        );
        let replicas = cluster.replicas_of(primary);
        assert_eq!(
            replicas.len(),
            1,
            "replicas of {primary}: {replicas:?} {:#?}",
            cluster.view()
        );
        let replica = replicas[0];
        assert_eq!(
            info_field(replica, &["INFO", "replication"], "master_link_status"),
            "up"
        );
        assert_eq!(
            info_field(replica, &["INFO", "replication"], "master_port"),
            primary.port().to_string()
        );
    }

    // Every slot has one of those primaries as its owner, per CLUSTER SLOTS as well.
    let mut covered = vec![false; usize::from(SLOTS)];
    for range in run(nodes[0], &["CLUSTER", "SLOTS"]).array().unwrap() {
        let range = range.array().unwrap();
        let (lo, hi) = (range[0].int().unwrap(), range[1].int().unwrap());
        let owner = range[2].array().unwrap();
        let owner_port = u16::try_from(owner[1].int().unwrap()).unwrap();
        for slot in lo..=hi {
            let slot = u16::try_from(slot).unwrap();
            assert!(!covered[usize::from(slot)], "slot {slot} listed twice");
            covered[usize::from(slot)] = true;
            if slot % 97 == 0 || slot == SLOTS - 1 {
                assert_eq!(cluster.primary_for_slot(slot).port(), owner_port);
            }
        }
    }
    assert!(covered.iter().all(|&c| c), "some slot is not covered");

    // slot_of agrees with CLUSTER KEYSLOT on every node's answer for many keys.
    let keys = sample_keys();
    for (i, key) in keys.iter().enumerate() {
        let node = nodes[i % nodes.len()];
        let theirs = run(node, &["CLUSTER", "KEYSLOT", key]).int().unwrap();
        assert_eq!(i64::from(slot_of(key)), theirs, "slot of {key:?}");
    }
    eprintln!(
        "cluster: slot_of matched CLUSTER KEYSLOT for {} keys",
        keys.len()
    );

    // One tag per primary: distinct primaries, and a key with the tag is served by its primary
    // and redirected (MOVED) by every other primary.
    let tags = cluster.tag_on_each_primary();
    assert_eq!(tags.len(), RedisCluster::PRIMARIES);
    let mut tag_primaries: Vec<SocketAddr> = tags.iter().map(|(p, _)| *p).collect();
    tag_primaries.sort();
    tag_primaries.dedup();
    assert_eq!(tag_primaries.len(), RedisCluster::PRIMARIES, "{tags:?}");
    for (primary, tag) in &tags {
        assert!(tag.starts_with('{') && tag.ends_with('}'), "{tag}");
        let key = format!("family:{tag}:refresh");
        assert_eq!(cluster.primary_for_slot(slot_of(&key)), *primary);
        assert_eq!(
            run(*primary, &["SET", &key, "v"]),
            Reply::Status("OK".into())
        );
        for other in primaries.iter().filter(|p| *p != primary) {
            let err = command(*other, &["GET", &key]).unwrap_err();
            assert!(err.contains("MOVED"), "{other} on {key}: {err}");
        }
    }
}

#[test]
fn cluster_failover_promotes_a_replica_and_the_old_primary_rejoins() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start();
    eprintln!("cluster: started in {:?}", started.elapsed());

    let (victim, tag) = cluster.tag_on_each_primary()[1].clone();
    let replicas = cluster.replicas_of(victim);
    let key = format!("{tag}:durable");
    // The write has reached the replica before the crash.
    set_replicated(victim, &key, "before");

    cluster.kill(victim);
    let killed = Instant::now();
    let promoted = cluster.wait_for_failover(victim);
    eprintln!(
        "cluster: failover of {victim} to {promoted} took {:?}",
        killed.elapsed()
    );

    assert!(
        replicas.contains(&promoted),
        "{promoted} not in {replicas:?}"
    );
    assert_eq!(cluster.primary_for_slot(slot_of(&key)), promoted);
    assert!(cluster.primaries().contains(&promoted));
    assert!(!cluster.primaries().contains(&victim));
    for node in cluster.nodes().into_iter().filter(|&n| n != victim) {
        assert_eq!(
            info_field(node, &["CLUSTER", "INFO"], "cluster_state"),
            "ok"
        );
        assert_eq!(
            info_field(node, &["CLUSTER", "INFO"], "cluster_slots_ok"),
            "16384"
        );
    }
    assert_eq!(
        info_field(promoted, &["INFO", "replication"], "role"),
        "master"
    );
    assert_eq!(run(promoted, &["GET", &key]), Reply::Bulk("before".into()));
    assert_eq!(
        run(promoted, &["SET", &key, "after"]),
        Reply::Status("OK".into())
    );

    let restarting = Instant::now();
    cluster.restart(victim);
    eprintln!(
        "cluster: {victim} rejoined as a replica in {:?}",
        restarting.elapsed()
    );
    assert_eq!(cluster.replicas_of(promoted), vec![victim]);
    assert_eq!(
        info_field(victim, &["INFO", "replication"], "role"),
        "slave"
    );
    // The old primary replicates its successor: it has the write made while it was down and
    // acknowledges new ones; it redirects plain reads and serves READONLY ones.
    set_replicated(promoted, &key, "after-restart");
    let err = command(victim, &["GET", &key]).unwrap_err();
    assert!(err.contains(&format!("MOVED {}", slot_of(&key))), "{err}");
    let replies = pipeline(victim, &[&["READONLY"], &["GET", &key]]).unwrap();
    assert_eq!(replies[1], Reply::Bulk("after-restart".into()));
}

#[test]
fn sentinel_failover_promotes_the_replica_and_every_sentinel_agrees() {
    let started = Instant::now();
    let mut setup = RedisSentinel::start();
    eprintln!("sentinel: started in {:?}", started.elapsed());

    assert_eq!(setup.master_name(), "mymaster");
    let sentinels = setup.sentinel_addrs();
    assert_eq!(sentinels.len(), RedisSentinel::SENTINELS);
    let list: Vec<String> = sentinels.iter().map(SocketAddr::to_string).collect();
    assert_eq!(
        setup.url(),
        format!("redis+sentinel://{}/mymaster", list.join(","))
    );

    let (old_primary, replica) = (setup.primary(), setup.replica());
    for &sentinel in &sentinels {
        assert_eq!(setup.master_addr_by_sentinel(sentinel), old_primary);
    }
    assert_eq!(
        info_field(old_primary, &["INFO", "replication"], "role"),
        "master"
    );
    assert_eq!(
        info_field(replica, &["INFO", "replication"], "role"),
        "slave"
    );
    set_replicated(old_primary, "k", "before");

    setup.kill_primary();
    let killed = Instant::now();
    let promoted = setup.wait_for_failover();
    eprintln!(
        "sentinel: failover to {promoted} took {:?}",
        killed.elapsed()
    );

    assert_eq!(promoted, replica);
    assert_eq!(setup.primary(), replica);
    assert_eq!(setup.replica(), old_primary);
    for &sentinel in &sentinels {
        assert_eq!(
            setup.master_addr_by_sentinel(sentinel),
            promoted,
            "{sentinel}"
        );
    }
    assert_eq!(
        info_field(promoted, &["INFO", "replication"], "role"),
        "master"
    );
    assert_eq!(run(promoted, &["GET", "k"]), Reply::Bulk("before".into()));
    assert_eq!(
        run(promoted, &["SET", "k", "after"]),
        Reply::Status("OK".into())
    );

    let restarting = Instant::now();
    setup.restart_old_primary_as_replica();
    eprintln!(
        "sentinel: old primary rejoined as a replica in {:?}",
        restarting.elapsed()
    );
    assert_eq!(setup.replica(), old_primary);
    assert_eq!(
        info_field(old_primary, &["INFO", "replication"], "role"),
        "slave"
    );
    assert_eq!(run(old_primary, &["GET", "k"]), Reply::Bulk("after".into()));
    set_replicated(promoted, "k", "after-restart");
    assert_eq!(
        run(old_primary, &["GET", "k"]),
        Reply::Bulk("after-restart".into())
    );
    for &sentinel in &sentinels {
        assert_eq!(
            setup.master_addr_by_sentinel(sentinel),
            promoted,
            "{sentinel}"
        );
    }
}

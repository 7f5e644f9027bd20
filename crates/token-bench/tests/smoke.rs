//! `token-bench` works end to end, so `make bench` cannot rot unnoticed: every mode runs with
//! small numbers against a real server and Redis, and prints its machine-readable line with no
//! errors. Speed is not asserted (benchmarks print figures; tests check behaviour).

use std::process::Command;
use test_support::harness;

use test_support::harness::{RedisServer, ServerOptions, TestServer};

const BINARY: &str = env!("CARGO_BIN_EXE_token-bench");

/// What the benchmark presents as an operator (`TOKEN_OPERATOR_CREDENTIAL`).
const OPERATOR_CREDENTIAL: &str = "smoke-operator-credential";

/// Runs one mode and returns its `bench <mode>:` line.
fn bench(args: &[&str], mode: &str) -> String {
    let output = Command::new(BINARY)
        .args(args)
        .env("TOKEN_OPERATOR_CREDENTIAL", OPERATOR_CREDENTIAL)
        .output()
        .expect("token-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "token-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("bench {mode}: ")))
        .unwrap_or_else(|| panic!("no `bench {mode}:` line in:\n{stdout}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_prints_its_line_without_errors() {
    let redis = RedisServer::start();
    let policy = harness::bearer_policy(OPERATOR_CREDENTIAL);
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            operators: policy,
            ..ServerOptions::default()
        },
    )
    .await;
    let endpoint = server.endpoint();
    let redis_url = redis.url();
    let target = ["--endpoint", &endpoint, "--redis-url", &redis_url];
    let with = |mode: &str, extra: &[&str]| -> Vec<String> {
        std::iter::once(mode)
            .chain(target)
            .chain(extra.iter().copied())
            .map(str::to_owned)
            .collect()
    };
    let run = |args: Vec<String>, mode: &'static str| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bench(&args, mode)
        })
    };

    let ready = Command::new(BINARY)
        .args(with("wait-ready", &[]))
        .status()
        .expect("token-bench runs");
    assert!(
        ready.success(),
        "wait-ready failed against a serving server"
    );

    let ceiling = run(
        vec![
            "ceiling".into(),
            "--redis-url".into(),
            redis_url.clone(),
            "--requests".into(),
            "2000".into(),
            "--concurrency".into(),
            "4".into(),
        ],
        "ceiling",
    )
    .await
    .unwrap();
    assert!(ceiling.contains("evalsha_per_s="), "{ceiling}");

    // Each mode with small numbers, and what its line must say.
    let small_throughput = ["--duration", "1s", "--warmup", "0s"];
    let modes: [(&str, &'static str, Vec<&str>, &[&str]); 4] = [
        // With the echo ceiling and the combined ceiling it makes with a given EVALSHA rate.
        (
            "throughput",
            "throughput",
            [
                &small_throughput[..],
                &["--families", "16", "--concurrency", "4"],
                &["--echo-duration", "1s", "--ceiling-per-s", "1000"],
            ]
            .concat(),
            &[
                " errors=0 ",
                "echo_per_s=",
                "combined_ceiling_per_s=",
                "ratio_to_combined=",
            ],
        ),
        // A jwt client's refreshes, as `make bench` runs them beside the opaque ones.
        (
            "throughput",
            "throughput",
            [
                &small_throughput[..],
                &["--families", "8", "--concurrency", "2"],
                &["--access-token-format", "jwt"],
            ]
            .concat(),
            &[" errors=0 ", " access_token_format=jwt"],
        ),
        (
            "throughput",
            "mixed",
            [
                &small_throughput[..],
                &["--families", "8", "--concurrency", "2"],
                &["--introspect-share", "0.5"],
            ]
            .concat(),
            &[" errors=0 "],
        ),
        (
            "storm",
            "storm",
            vec!["--parallel", "50", "--rounds", "3"],
            &["rotations_per_round=1.00", " errors=0"],
        ),
    ];
    for (mode, line, extra, expected) in modes {
        let printed = run(with(mode, &extra), line).await.unwrap();
        for figure in expected {
            assert!(printed.contains(figure), "no {figure:?} in {printed}");
        }
    }

    // Every distribution of families per subject, and one subject's many.
    let memory = run(
        with(
            "memory",
            &[
                &["--families", "200", "--per-subject", "1,5,100"][..],
                &["--one-subject", "300", "--key-prefix", "t:"],
            ]
            .concat(),
        ),
        "memory",
    )
    .await
    .unwrap();
    for figure in [
        " errors=0 ",
        " bytes_per_family=",
        " bytes_per_family_5_per_subject=",
        " bytes_per_family_100_per_subject=",
        " bytes_per_family_300_one_subject=",
        " encoding=",
    ] {
        assert!(memory.contains(figure), "no {figure:?} in {memory}");
    }

    // The mode itself fails unless every family is counted and a refresh is refused after.
    let revoked = run(
        with(
            "revoke-subject",
            &["--families", "500", "--key-prefix", "t:"],
        ),
        "revoke-subject",
    )
    .await
    .unwrap();
    for figure in [
        "families=500 revoked=500 ",
        "longest_redis_command_us=",
        " fields_left=1 ",
        " refresh_after=TOKEN_REVOKED",
    ] {
        assert!(revoked.contains(figure), "no {figure:?} in {revoked}");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tokens");
    let out_arg = out.to_str().unwrap();
    let issue = run(
        with("issue", &["--families", "3", "--out", out_arg]),
        "issue",
    )
    .await
    .unwrap();
    assert!(issue.contains("families=3 "), "{issue}");
    let written = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 4, "credentials, then one token a line");
    assert_eq!(
        lines[0].split(' ').count(),
        2,
        "<client_id> <client_secret>"
    );
    assert!(
        lines[1..].iter().all(|t| t.starts_with("rt1.")),
        "{written}"
    );
    server.stop().await;
}

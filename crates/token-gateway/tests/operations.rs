//! Operating it: every metric the alert rules (deploy/prometheus/alerts.yaml) and the Grafana
//! dashboard (deploy/grafana/token-service.json) name is exported by a running token server
//! and gateway, and a real Prometheus (Debian's `prometheus` package) scrapes both, loads the
//! rules and accepts every dashboard query.
//!
//! The token server runs in-process with its admin port; the gateway is the real binary with
//! `GATEWAY_ADMIN_LISTEN`. Traffic: refreshes that succeed and fail through the gateway, and a
//! Redis outage (connection errors, STORE_UNAVAILABLE, the SDK's retries).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use test_support::free_port;
use test_support::harness::{
    RedisServer, ServerOptions, ServingStatus, TestServer, issue, register_client,
};

const BINARY: &str = env!("CARGO_BIN_EXE_token-gateway");
const INSTALL_HINT: &str = "run `make deps` (scripts/deps.sh installs Debian's prometheus package)";

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Bounded readiness probe: `GET url` until it answers 200.
async fn wait_for_200(http: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if let Ok(response) = http.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered 200");
}

/// Metric names in the Prometheus text format (sample lines, comments skipped).
fn names_in_exposition(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metric names a PromQL expression selects: identifiers outside strings, label
/// matchers, range brackets and grouping lists that are not functions, keywords, numbers or
/// Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan", // aggregation operators, which may come before `by`:
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            i += if chars[i] == '\\' { 2 } else { 1 };
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_list => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_list = false;
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '{' | '}'))
                {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers, durations (5m) and exponents (1e3).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let is_call = next < chars.len() && chars[next] == '(';
                if GROUPING.contains(&word.as_str()) {
                    skip_list = is_call;
                } else if !is_call && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every query of the dashboard (panels, rows' panels, template variables), as Grafana has it.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("target expr").to_owned());
        }
        stack.extend(panel["panels"].as_array().into_iter().flatten());
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            // `label_values(metric, label)`: the metric is a selector.
            let query = variable["query"]["query"].as_str().unwrap();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.split_once(','))
                .map(|(metric, _)| metric.trim())
                .unwrap_or_else(|| panic!("unexpected variable query {query}"));
            queries.push(inner.to_owned());
        }
    }
    queries
}

/// The dashboard's Grafana variables replaced by what they stand for, so that Prometheus can
/// run the query.
fn as_promql(query: &str) -> String {
    query
        .replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$namespace", ".*")
}

/// A child process killed when dropped (a failing test leaves none behind).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running Prometheus, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(server_admin: &str, gateway_admin: &str) -> Prometheus {
    let binary = test_support::require_program("prometheus", INSTALL_HINT);
    let dir = tempfile::tempdir().unwrap();
    let rules = repo_file("deploy/prometheus/alerts.yaml")
        .canonicalize()
        .unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n\
         \x20 - job_name: token-server\n    static_configs:\n      - targets: ['{server_admin}']\n\
         \x20 - job_name: token-gateway\n    static_configs:\n      - targets: ['{gateway_admin}']\n",
        rules = rules.display()
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    Prometheus {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

async fn api(http: &reqwest::Client, url: String) -> Value {
    let response = http.get(&url).send().await.expect("Prometheus answers");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["status"], "success", "{url}: {body}");
    body["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_name_is_exported_and_scraped() {
    let mut redis = RedisServer::start();
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            admin: true,
            ..ServerOptions::default()
        },
    )
    .await;
    let client = register_client(&mut server.registry().await, "confidential", "", &["read"]).await;
    let pairs = [
        issue(&mut server.tokens().await, &client, "alice").await,
        issue(&mut server.tokens().await, &client, "bob").await,
    ];

    let addr = format!("127.0.0.1:{}", free_port());
    let gateway_admin = format!("127.0.0.1:{}", free_port());
    let gateway = Command::new(BINARY)
        .env("GATEWAY_LISTEN", &addr)
        .env("GATEWAY_ADMIN_LISTEN", &gateway_admin)
        .env("GATEWAY_TOKEN_SERVICE", server.endpoint())
        .env("GATEWAY_RPC_ATTEMPTS", "2")
        .env("GATEWAY_RPC_DEADLINE", "2s")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("token-gateway starts");
    // Killed if the test fails before stopping it.
    let mut gateway = KillOnDrop(Some(gateway));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    wait_for_200(&http, &format!("{base}/healthz")).await;

    let refresh = |token: &str| {
        let request = http
            .post(format!("{base}/oauth/token"))
            .basic_auth(&client.client_id, Some(&client.client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=refresh_token&refresh_token={token}"));
        async move {
            let response = request.send().await.expect("POST /oauth/token");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };
    // A rotation, an invalid_grant (a garbled token), a 404 and a 405.
    let first = refresh(&pairs[0].refresh_token).await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(refresh("garbled.token").await.0, 400);
    assert_eq!(
        http.get(format!("{base}/nowhere"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(format!("{base}/oauth/token"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    // Redis goes away: the server's connections fail and refreshes are refused as
    // STORE_UNAVAILABLE; the gateway retries, then answers 503.
    redis.kill();
    server.wait_for_health(ServingStatus::NotServing).await;
    assert_eq!(refresh(&pairs[1].refresh_token).await.0, 503);
    // Back (empty: the test Redis keeps no data over a restart), and the queued audit events
    // are written or discarded, which the writer does in the background.
    redis.restart(&[]);
    server.wait_for_health(ServingStatus::Serving).await;
    server.audit.flush().await;

    let scrape = |admin: String| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("http://{admin}/metrics"))
                .send()
                .await
                .expect("GET /metrics");
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let server_admin = server.admin_addr.unwrap().to_string();
    let server_text = scrape(server_admin.clone()).await;
    let gateway_text = scrape(gateway_admin.clone()).await;

    // The gateway's own series, with the labels the dashboard and rules group by.
    for series in [
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/oauth/token\"",
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"503\",http_route=\"/oauth/token\"",
        "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"404\",http_route=\"unmatched\"",
        "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"405\",http_route=\"/oauth/token\"",
        "http_server_active_requests{http_request_method=\"POST\"",
        "token_gateway_oauth_errors_total{error=\"invalid_grant\"",
        "token_gateway_oauth_errors_total{error=\"temporarily_unavailable\"",
        "token_gateway_token_service_calls_total{rpc_grpc_status_code=\"0\",rpc_method=\"RefreshTokenPair\"",
    ] {
        assert!(
            gateway_text.contains(series),
            "the gateway exports no {series}}}:\n{gateway_text}"
        );
    }
    let retries = gateway_text
        .lines()
        .find(|line| line.starts_with("token_gateway_token_service_retries_total"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no retries counter:\n{gateway_text}"));
    assert!(retries >= 1.0, "the 503 came after a retry: {retries}");
    // No client id, token or secret in any label.
    for secret in [
        &client.client_id,
        &client.client_secret,
        &pairs[0].refresh_token,
    ] {
        assert!(
            !gateway_text.contains(secret.as_str()),
            "{secret} in gateway metrics"
        );
    }

    let exported: BTreeSet<String> = names_in_exposition(&server_text)
        .into_iter()
        .chain(names_in_exposition(&gateway_text))
        .collect();

    // A real Prometheus scrapes both, with the rules loaded.
    let prometheus = start_prometheus(&server_admin, &gateway_admin);
    wait_for_200(&http, &format!("{}/-/ready", prometheus.base)).await;
    let rule_groups = api(&http, format!("{}/api/v1/rules", prometheus.base)).await;
    let mut rule_queries = Vec::new();
    let mut recorded = BTreeSet::new();
    let mut alerts = 0;
    for group in rule_groups["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            rule_queries.push(rule["query"].as_str().unwrap().to_owned());
            match rule["type"].as_str().unwrap() {
                "recording" => {
                    recorded.insert(rule["name"].as_str().unwrap().to_owned());
                }
                _ => alerts += 1,
            }
        }
    }
    assert!(
        alerts >= 10 && recorded.len() >= 7,
        "Prometheus did not load deploy/prometheus/alerts.yaml: {rule_groups}"
    );

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("deploy/grafana/token-service.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let dashboard_queries = dashboard_queries(&dashboard);
    assert!(dashboard_queries.len() >= 20, "{dashboard_queries:?}");

    let mut wanted = BTreeSet::new();
    for query in rule_queries.iter().chain(&dashboard_queries) {
        wanted.extend(metric_names(query));
    }
    let wanted: BTreeSet<String> = wanted.difference(&recorded).cloned().collect();
    assert!(
        wanted.len() >= 15,
        "the name scanner found too few: {wanted:?}"
    );
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named by the rules or the dashboard but not exported: {missing:?}\n\
         exported: {exported:?}"
    );

    // Prometheus has every name from its scrapes (bounded wait for the first scrapes).
    let mut scraped = BTreeSet::new();
    for _ in 0..300 {
        let names = api(
            &http,
            format!("{}/api/v1/label/__name__/values", prometheus.base),
        )
        .await;
        scraped = names
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        if wanted.is_subset(&scraped) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let not_scraped: Vec<&String> = wanted.difference(&scraped).collect();
    assert!(
        not_scraped.is_empty(),
        "Prometheus never scraped {not_scraped:?}"
    );
    // Both jobs were scraped successfully (at some scrape: one that timed out on a loaded
    // machine is not what this checks).
    let up = api(
        &http,
        format!(
            "{}/api/v1/query?query=max+by+(job)+(max_over_time(up[5m]))",
            prometheus.base
        ),
    )
    .await;
    let mut jobs: Vec<(String, String)> = up["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["job"].as_str().unwrap().to_owned(),
                s["value"][1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        [
            ("token-gateway".to_owned(), "1".to_owned()),
            ("token-server".to_owned(), "1".to_owned())
        ],
        "{up}"
    );

    // Every dashboard query is PromQL Prometheus runs.
    for query in &dashboard_queries {
        let promql = as_promql(query);
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", prometheus.base),
            [("query", promql.as_str())],
        )
        .unwrap();
        api(&http, url.to_string()).await;
    }
    // And Prometheus evaluates every rule without an error.
    let rule_groups = api(&http, format!("{}/api/v1/rules", prometheus.base)).await;
    for group in rule_groups["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_ne!(rule["health"], "err", "{rule}");
        }
    }

    let child = gateway.0.take().unwrap();
    let status = tokio::task::spawn_blocking(move || test_support::terminate(child))
        .await
        .unwrap();
    assert!(status.success(), "token-gateway exited with {status}");
    server.stop().await;
}

#[test]
fn the_name_scanner_finds_metrics_and_nothing_else() {
    let names = metric_names(
        r#"sum by (client, reason) (rate(tokens_refreshes_total{outcome!~"a|b", x="{y}"}[5m])) / on (client) group_left sum(rate(foo:bar[1h] offset 5m)) > 0.05 and histogram_quantile(0.99, sum by (le) (rate(x_bucket{le="0.1"}[$__rate_interval])))"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["foo:bar", "tokens_refreshes_total", "x_bucket"]
    );
}

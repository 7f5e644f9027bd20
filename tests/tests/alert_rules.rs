//! The alert rules (deploy/prometheus/alerts.yaml) as Prometheus's own tool sees them:
//! `promtool check rules` (syntax, PromQL, templates) and `promtool test rules` (the unit
//! tests in deploy/prometheus/alerts-test.yaml: each alert fires on what it is about and not
//! on its healthy neighbours); and every alert has a summary and a runbook section in
//! deploy/README.md. promtool comes from Debian's `prometheus` package (scripts/deps.sh).
//! Which metric names the rules may use is checked against a running server and gateway in
//! crates/token-gateway/tests/operations.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn promtool(args: &[&str]) -> String {
    let promtool = test_support::require_program(
        "promtool",
        "run `make deps` (scripts/deps.sh installs Debian's prometheus package)",
    );
    let output = Command::new(promtool)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

/// `(alert name, summary present, runbook anchor)` of each alert, read from the rule file's
/// layout (`- alert:` then its annotations).
fn alerts() -> Vec<(String, bool, Option<String>)> {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yaml")).unwrap();
    let mut alerts: Vec<(String, bool, Option<String>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            alerts.push((name.trim().to_owned(), false, None));
        } else if line.starts_with("- record:") {
            continue;
        } else if let Some(last) = alerts.last_mut() {
            if line.starts_with("summary:") {
                last.1 = true;
            } else if let Some(link) = line.strip_prefix("runbook: deploy/README.md#") {
                last.2 = Some(link.trim().to_owned());
            }
        }
    }
    alerts
}

/// GitHub's anchors of the Markdown headings in `text`.
fn anchors(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| {
            line.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn promtool_checks_the_rules() {
    let output = promtool(&["check", "rules", "deploy/prometheus/alerts.yaml"]);
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let output = promtool(&["test", "rules", "deploy/prometheus/alerts-test.yaml"]);
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn every_alert_is_unit_tested_and_has_a_summary_and_a_runbook_section() {
    let alerts = alerts();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let tests = std::fs::read_to_string(repo().join("deploy/prometheus/alerts-test.yaml")).unwrap();
    let runbook = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    let anchors = anchors(&runbook);
    for (name, summary, link) in &alerts {
        assert!(*summary, "{name} has no summary");
        let link = link
            .as_deref()
            .unwrap_or_else(|| panic!("{name} has no runbook annotation"));
        assert!(
            anchors.iter().any(|a| a == link),
            "{name}: deploy/README.md has no section #{link}"
        );
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no test in alerts-test.yaml"
        );
    }
}

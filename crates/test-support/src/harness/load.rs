//! Callers refreshing their own token families through the SDK, one refresh after another,
//! while a test does something to the deployment (kills a Redis primary, rotates keys). Any
//! failed refresh panics the caller: the SDK's retries must absorb whatever the test does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use token_client::{ClientConfig, TokenClient};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{TestClient, TestServer, issue, refresh_request};

/// Running callers.
pub struct RefreshLoad {
    sdks: Vec<TokenClient>,
    callers: Vec<JoinHandle<String>>,
    stop: Arc<AtomicBool>,
    refreshes: Arc<AtomicU64>,
    replayed: Arc<AtomicU64>,
    progress: mpsc::UnboundedReceiver<()>,
}

impl RefreshLoad {
    /// `callers` new families of `client` (subjects `caller-<i>`, issued through the first
    /// server), each refreshed by its own caller through an SDK of every server in turn.
    pub async fn issue_and_start(
        servers: &[TestServer],
        client: &TestClient,
        callers: usize,
        report_every: u64,
    ) -> Self {
        let sdks: Vec<TokenClient> = servers
            .iter()
            .map(|s| TokenClient::connect(&s.endpoint(), ClientConfig::default()).unwrap())
            .collect();
        let mut tokens = servers[0].tokens().await;
        let mut firsts = Vec::new();
        for i in 0..callers {
            let pair = issue(&mut tokens, client, &format!("caller-{i}")).await;
            firsts.push(pair.refresh_token);
        }
        Self::start(&sdks, client, firsts, report_every)
    }

    /// The SDKs the callers use, one per server for [`RefreshLoad::issue_and_start`].
    pub fn sdks(&self) -> &[TokenClient] {
        &self.sdks
    }

    /// One caller per token in `first_tokens`, round-robin over `sdks`; each reports progress
    /// every `report_every` refreshes.
    pub fn start(
        sdks: &[TokenClient],
        client: &TestClient,
        first_tokens: Vec<String>,
        report_every: u64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let refreshes = Arc::new(AtomicU64::new(0));
        let replayed = Arc::new(AtomicU64::new(0));
        let (report, progress) = mpsc::unbounded_channel();
        let callers = first_tokens
            .into_iter()
            .enumerate()
            .map(|(i, mut token)| {
                let sdk = sdks[i % sdks.len()].clone();
                let client = client.clone();
                let (stop, refreshes, replayed, report) = (
                    stop.clone(),
                    refreshes.clone(),
                    replayed.clone(),
                    report.clone(),
                );
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let pair = sdk
                            .refresh_token_pair(refresh_request(&client, &token))
                            .await
                            .unwrap_or_else(|err| {
                                panic!(
                                    "a refresh failed after {} attempts: {:?}",
                                    err.attempts(),
                                    err.status()
                                )
                            });
                        refreshes.fetch_add(1, Ordering::Relaxed);
                        if pair.replayed {
                            replayed.fetch_add(1, Ordering::Relaxed);
                        }
                        token = pair.refresh_token;
                        done += 1;
                        if done.is_multiple_of(report_every) {
                            let _ = report.send(());
                        }
                    }
                    token
                })
            })
            .collect();
        Self {
            sdks: sdks.to_vec(),
            callers,
            stop,
            refreshes,
            replayed,
            progress,
        }
    }

    /// Returns once the callers have made another `callers × report_every` refreshes between
    /// them (progress reports, not time).
    pub async fn progress(&mut self) {
        for _ in 0..self.callers.len() {
            self.progress.recv().await.expect("callers running");
        }
    }

    /// Refreshes answered so far, and how many of them were replays.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.refreshes.load(Ordering::Relaxed),
            self.replayed.load(Ordering::Relaxed),
        )
    }

    /// Stops the callers after their current refresh; returns each one's last refresh token.
    /// Panics if a caller failed.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut last = Vec::new();
        for caller in self.callers {
            last.push(caller.await.expect("a caller failed"));
        }
        last
    }
}

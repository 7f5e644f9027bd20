//! How a [`TokenClient`](crate::TokenClient) times out and retries.

use std::time::Duration;

/// Deadline and retry settings, shared by every call of a client.
///
/// All fields are public; start from [`ClientConfig::default`] and override what you need:
///
/// ```
/// use std::time::Duration;
/// use token_client::ClientConfig;
///
/// let config = ClientConfig {
///     deadline: Duration::from_millis(500),
///     ..ClientConfig::default()
/// };
/// assert_eq!(config.max_attempts, 6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Deadline of each attempt (default 2 s). Sent to the server as the `grpc-timeout` header
    /// and enforced locally: an attempt with no answer by then ends as `DEADLINE_EXCEEDED`
    /// (which is retried). A call can therefore take up to
    /// `max_attempts × deadline` plus the backoff sleeps in between.
    pub deadline: Duration,
    /// Backoff before the first retry, doubled for each further one (default 50 ms).
    pub base_backoff: Duration,
    /// Ceiling of the doubled backoff (default 2 s). A server's `RetryInfo` delay is honoured
    /// even when longer.
    pub max_backoff: Duration,
    /// Attempts per call, the first included (default 6). Zero is treated as one.
    pub max_attempts: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(2),
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_attempts: 6,
        }
    }
}

impl ClientConfig {
    /// `max_attempts`, at least one.
    pub(crate) fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

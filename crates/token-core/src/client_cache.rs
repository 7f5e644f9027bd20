//! A short-lived cache of client records, so a refresh costs one Redis call (the rotation)
//! instead of two. Bounded staleness is the price: on *other* instances a rotated secret or a
//! deleted client takes effect within the TTL (this instance forgets at once). Unknown clients
//! are never cached, so a new client works everywhere immediately. A TTL of zero disables it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::client::Client;

/// Entries beyond this are not worth keeping warm; the map is cleared rather than grown.
const MAX_ENTRIES: usize = 10_000;

pub struct ClientCache {
    ttl_ms: u64,
    /// Client id to (record, when it was read from the store).
    entries: RwLock<HashMap<String, (Arc<Client>, u64)>>,
}

impl ClientCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl_ms: ttl.as_millis() as u64,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The cached record if it was read less than the TTL ago.
    pub fn get(&self, client_id: &str, now_ms: u64) -> Option<Arc<Client>> {
        if self.ttl_ms == 0 {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let (client, read_at) = entries.get(client_id)?;
        (now_ms.saturating_sub(*read_at) < self.ttl_ms).then(|| client.clone())
    }

    pub fn put(&self, client: Client, now_ms: u64) -> Arc<Client> {
        let client = Arc::new(client);
        if self.ttl_ms > 0 {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(client.client_id.clone(), (client.clone(), now_ms));
        }
        client
    }

    pub fn forget(&self, client_id: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.remove(client_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientType, ReusePolicy};
    use crate::scope::Scopes;

    fn client(id: &str) -> Client {
        Client {
            client_id: id.into(),
            name: id.into(),
            client_type: ClientType::Public,
            allowed_scopes: Scopes::default(),
            reuse_policy: ReusePolicy::RevokeFamily,
            secret_hash: String::new(),
            created_at_ms: 0,
            access_token_format: crate::client::AccessTokenFormat::Opaque,
            access_token_audience: String::new(),
        }
    }

    #[test]
    fn entries_live_for_the_ttl_and_can_be_forgotten() {
        let cache = ClientCache::new(Duration::from_millis(1000));
        cache.put(client("a"), 10_000);
        assert!(cache.get("a", 10_999).is_some());
        assert!(cache.get("a", 11_000).is_none());
        cache.put(client("a"), 20_000);
        cache.forget("a");
        assert!(cache.get("a", 20_001).is_none());
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = ClientCache::new(Duration::ZERO);
        cache.put(client("a"), 0);
        assert!(cache.get("a", 0).is_none());
    }
}

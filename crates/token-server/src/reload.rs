//! Files the server re-reads while it runs, so that keys and certificates rotate without a
//! restart: the keyring ([`KeyringFile`]) and the TLS files ([`crate::tls::ReloadingTls`]).
//! Each is checked every interval; a change that does not load is logged (without its
//! contents) and the loaded version kept, so a half-written or broken update never takes
//! keys or certificates away.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use token_core::{Keyring, TokenService};
use token_store::RedisStore;

/// Runs `check` every `interval` (first after one interval), off the runtime's workers since
/// it reads files, until the returned future is dropped.
pub fn every(
    interval: Duration,
    check: impl Fn() + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let check = Arc::new(check);
    async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let check = check.clone();
            let _ = tokio::task::spawn_blocking(move || check()).await;
        }
    }
}

/// The keyring file of a running service.
pub struct KeyringFile {
    path: PathBuf,
    service: Arc<TokenService<RedisStore>>,
    /// The text the loaded keyring came from.
    loaded: Mutex<String>,
    failed_reloads: AtomicU64,
}

impl KeyringFile {
    /// `loaded` is the text the service's keyring was parsed from.
    pub fn new(path: PathBuf, service: Arc<TokenService<RedisStore>>, loaded: String) -> Arc<Self> {
        Arc::new(Self {
            path,
            service,
            loaded: Mutex::new(loaded),
            failed_reloads: AtomicU64::new(0),
        })
    }

    /// Changes seen but refused (unreadable or invalid), keeping the loaded keyring.
    pub fn failed_reloads(&self) -> u64 {
        self.failed_reloads.load(Ordering::Relaxed)
    }

    /// Reads the file and, if it changed and parses, gives the service the new keys. Returns
    /// whether it did.
    pub fn reload_if_changed(&self) -> bool {
        let shown = self.path.display();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) => {
                tracing::error!(path = %shown, error = %err, "keyring unreadable; keeping the loaded keys");
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == text {
            return false;
        }
        let keyring = match Keyring::parse(&text) {
            Ok(keyring) => keyring,
            Err(err) => {
                // KeyringError names the line and the problem, never key material.
                tracing::error!(path = %shown, error = %err, "new keyring is invalid; keeping the loaded keys");
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        let before = self.service.keyring();
        for retired in before.key_ids() {
            if !keyring.key_ids().contains(&retired) {
                tracing::warn!(
                    key_id = retired,
                    "key retired: tokens signed with it no longer verify (TOKEN_INVALID)"
                );
            }
        }
        let jwt_ids = |k: &Keyring| -> Vec<String> {
            k.public_keys().into_iter().map(|key| key.key_id).collect()
        };
        let jwt_keys = jwt_ids(&keyring);
        for retired in jwt_ids(&before) {
            if !jwt_keys.contains(&retired) {
                tracing::warn!(
                    key_id = retired,
                    "ed25519 key retired: left the JWKS; JWTs signed with it no longer verify"
                );
            }
        }
        tracing::info!(
            path = %shown,
            signing = keyring.signing_key_id(),
            keys = ?keyring.key_ids(),
            jwt_signing = keyring.jwt_signing_key_id(),
            jwt_keys = ?jwt_keys,
            "keyring reloaded"
        );
        self.service.replace_keyring(keyring);
        *loaded = text;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_core::{Lifetimes, SystemClock};
    use token_store::StoreConfig;

    fn service(keyring: &str) -> Arc<TokenService<RedisStore>> {
        // The store connects lazily: no Redis is needed to hold keys.
        let store = RedisStore::new(&StoreConfig {
            url: "redis://127.0.0.1:1".into(),
            pool_size: 1,
            timeout: Duration::from_secs(1),
            key_prefix: "t:".into(),
            replica_wait: None,
            high_water_permille: token_store::DEFAULT_HIGH_WATER_PERMILLE,
        })
        .unwrap();
        Arc::new(TokenService::new(
            store,
            Keyring::parse(keyring).unwrap(),
            Arc::new(SystemClock),
            Lifetimes::default(),
        ))
    }

    #[test]
    fn a_broken_keyring_update_keeps_the_loaded_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let k1 = Keyring::generate_line("k1");
        std::fs::write(&path, &k1).unwrap();
        let service = service(&k1);
        let file = KeyringFile::new(path.clone(), service.clone(), k1.clone());
        assert!(!file.reload_if_changed(), "unchanged");

        // Two signing keys, then a line cut short: refused, k1 still signs.
        let k2 = Keyring::generate_line("k2");
        std::fs::write(&path, format!("{k1}\n{k2}\n")).unwrap();
        assert!(!file.reload_if_changed());
        std::fs::write(&path, "k2 abc").unwrap();
        assert!(!file.reload_if_changed());
        assert_eq!(file.failed_reloads(), 2);
        assert_eq!(service.keyring().key_ids(), ["k1"]);

        let promoted = format!("{}\n{k2}\n", k1.replace(" sign", " verify"));
        std::fs::write(&path, promoted).unwrap();
        assert!(file.reload_if_changed());
        assert_eq!(service.keyring().signing_key_id(), "k2");
        assert_eq!(service.keyring().key_ids(), ["k1", "k2"]);
    }
}

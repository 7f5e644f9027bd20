//! TLS to the token service: the CA bundle that verifies its certificate and, for mutual TLS,
//! the gateway's own certificate and key, all PEM files re-read while the gateway runs so
//! that a renewed certificate (cert-manager rewrites the mounted Secret) is used without a
//! restart.
//!
//! Every check reads the files; when their bytes changed and make a valid configuration, a
//! new lazily connected channel is built from them and swapped into the [`Upstream`]: calls
//! from then on connect with the new certificate, calls in flight finish on the old
//! connection. A change that does not load (half-written, unreadable, a key that does not
//! match its certificate) is logged without the files' contents and the loaded configuration
//! kept; the next check tries again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, RootCertStore};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::upstream::Upstream;

/// `--token-service-tls-reload-interval`: as often as the token server checks its own.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// The flags naming each file, as errors name them.
const CA_FLAG: &str = "--token-service-ca";
const CERT_FLAG: &str = "--token-service-cert";
const KEY_FLAG: &str = "--token-service-key";

/// Where the PEM files are, and whom the token service's certificate must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle the token service's certificate must chain to.
    pub ca: PathBuf,
    /// The gateway's certificate chain and its private key, for mutual TLS; `None` when the
    /// token service does not ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the token service's certificate must carry, when not the endpoint's host.
    pub server_name: Option<String>,
}

/// Why the TLS files cannot be used. Names the flag and the file, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{flag} {path} holds no PEM certificate")]
    NoCertificate { flag: &'static str, path: String },
    #[error("{flag} {path} holds no PEM private key")]
    NoKey { flag: &'static str, path: String },
    #[error("{flag} {path}: {reason}")]
    Invalid {
        flag: &'static str,
        path: String,
        reason: String,
    },
    #[error("--token-service {endpoint:?} with TLS: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// Counts of [`ReloadingTls::reload_if_changed`] outcomes, announced to watchers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloads {
    /// Changed files that made a valid configuration, now used for new connections.
    pub loaded: u64,
    /// Changed or unreadable files refused; the configuration before them stays.
    pub refused: u64,
}

/// The TLS configuration of the channel to the token service, rebuilt when the files change.
pub struct ReloadingTls {
    /// `https://host:port`.
    endpoint: String,
    files: TlsFiles,
    /// Bound on connecting (TCP and handshake), as for a plaintext channel.
    connect_timeout: Duration,
    /// The bytes the current channel was built from (CA, then cert and key), to notice
    /// changes. Never logged.
    loaded: Mutex<Vec<Vec<u8>>>,
    reloads: watch::Sender<Reloads>,
}

impl ReloadingTls {
    /// Reads and checks the files and builds the first channel (connected lazily: nothing is
    /// dialled until the first call). An error here stops the gateway from starting.
    pub fn load(
        endpoint: &str,
        files: TlsFiles,
        connect_timeout: Duration,
    ) -> Result<(Arc<Self>, Channel), TlsError> {
        let tls = Self {
            endpoint: endpoint.to_owned(),
            files,
            connect_timeout,
            loaded: Mutex::new(Vec::new()),
            reloads: watch::Sender::new(Reloads::default()),
        };
        let contents = tls.read_all()?;
        let channel = tls.build(&contents)?;
        *tls.loaded.lock().unwrap_or_else(|p| p.into_inner()) = contents;
        Ok((Arc::new(tls), channel))
    }

    /// The reload counts now and every change from here on.
    pub fn watch_reloads(&self) -> watch::Receiver<Reloads> {
        self.reloads.subscribe()
    }

    /// Reads the files again and, if they changed and make a valid configuration, gives
    /// `upstream` a channel built from them. Returns whether it did.
    pub fn reload_if_changed(&self, upstream: &Upstream) -> bool {
        let contents = match self.read_all() {
            Ok(contents) => contents,
            Err(err) => {
                tracing::warn!(error = %err, "token service TLS files unreadable; keeping the loaded certificate");
                self.reloads.send_modify(|r| r.refused += 1);
                return false;
            }
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == contents {
            return false;
        }
        match self.build(&contents) {
            Ok(channel) => {
                upstream.replace_channel(channel);
                *loaded = contents;
                drop(loaded);
                tracing::info!(
                    ca = %self.files.ca.display(),
                    cert = ?self.files.identity.as_ref().map(|(cert, _)| cert.display().to_string()),
                    "token service TLS files reloaded; new connections use them"
                );
                self.reloads.send_modify(|r| r.loaded += 1);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "new token service TLS files are invalid; keeping the loaded certificate");
                self.reloads.send_modify(|r| r.refused += 1);
                false
            }
        }
    }

    /// Checks the files every `interval` (first after one interval) for `upstream`, until the
    /// returned future is dropped. The files are read off the runtime's workers.
    pub fn watch(
        self: &Arc<Self>,
        upstream: Upstream,
        interval: Duration,
    ) -> impl Future<Output = ()> + Send + 'static + use<> {
        let tls = self.clone();
        async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let (tls, upstream) = (tls.clone(), upstream.clone());
                let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed(&upstream)).await;
            }
        }
    }

    /// The files in order: CA, then certificate and key when mutual.
    fn paths(&self) -> Vec<(&'static str, &Path)> {
        let mut paths = vec![(CA_FLAG, self.files.ca.as_path())];
        if let Some((cert, key)) = &self.files.identity {
            paths.push((CERT_FLAG, cert.as_path()));
            paths.push((KEY_FLAG, key.as_path()));
        }
        paths
    }

    fn read_all(&self) -> Result<Vec<Vec<u8>>, TlsError> {
        self.paths()
            .into_iter()
            .map(|(flag, path)| {
                std::fs::read(path).map_err(|source| TlsError::Read {
                    flag,
                    path: shown(path),
                    source,
                })
            })
            .collect()
    }

    /// Checks the contents the way the handshake will use them (so that a broken file is
    /// refused here, naming it, rather than failing every connection later), then builds
    /// the channel.
    fn build(&self, contents: &[Vec<u8>]) -> Result<Channel, TlsError> {
        let paths = self.paths();
        let mut roots = RootCertStore::empty();
        for ca in certificates(paths[0], &contents[0])? {
            roots.add(ca).map_err(|e| invalid(paths[0], &e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(paths[0], &e))?
            .with_root_certificates(roots);
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&contents[0]));
        if contents.len() == 3 {
            let chain = certificates(paths[1], &contents[1])?;
            // Only the key's absence is ever reported, never its parse error (which could
            // quote it).
            let key = PrivateKeyDer::from_pem_slice(&contents[2]).map_err(|_| TlsError::NoKey {
                flag: KEY_FLAG,
                path: shown(paths[2].1),
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                invalid(
                    paths[2],
                    &format!("does not match {CERT_FLAG} {}: {e}", shown(paths[1].1)),
                )
            })?;
            tls = tls.identity(Identity::from_pem(&contents[1], &contents[2]));
        }
        if let Some(name) = &self.files.server_name {
            tls = tls.domain_name(name.clone());
        }
        let endpoint_error = |reason: String| TlsError::Endpoint {
            endpoint: self.endpoint.clone(),
            reason,
        };
        Ok(Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| endpoint_error(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .tls_config(tls)
            .map_err(|e| endpoint_error(e.to_string()))?
            .connect_lazy())
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn invalid((flag, path): (&'static str, &Path), reason: &dyn std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        flag,
        path: shown(path),
        reason: reason.to_string(),
    }
}

fn certificates(
    (flag, path): (&'static str, &Path),
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid((flag, path), &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            flag,
            path: shown(path),
        });
    }
    Ok(certs)
}

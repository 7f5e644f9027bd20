//! TLS on the gRPC port: a certificate and key from PEM files, reloaded when the files change
//! (as cert-manager rotates them), and optionally mutual TLS, where every client must present a
//! certificate that chains to a CA bundle.
//!
//! Handshakes run off the accept loop, each bounded by [`HANDSHAKE_TIMEOUT`], so a slow or
//! silent client cannot hold up others. Each connection takes the configuration current when it
//! was accepted; connections already open keep theirs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// The longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle for client certificates; when set, every client must present one (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS files cannot be used. Names files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key")]
    NoKey { path: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The current TLS configuration, rebuilt when the files change.
pub struct ReloadingTls {
    files: TlsFiles,
    current: RwLock<Loaded>,
    /// How many changed file sets were loaded and refused so far, announced to watchers.
    reloads: watch::Sender<Reloads>,
}

/// Counts of [`ReloadingTls::reload_if_changed`] outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloads {
    /// Changed files that made a valid configuration, now used for new connections.
    pub loaded: u64,
    /// Changed files refused (unreadable, invalid, a key not matching the certificate); the
    /// configuration before them stays.
    pub refused: u64,
}

struct Loaded {
    /// The bytes the configuration was built from, to notice changes.
    contents: Vec<Vec<u8>>,
    acceptor: TlsAcceptor,
}

impl ReloadingTls {
    /// Loads the files; an error here stops the server from starting.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let contents = read_all(&files)?;
        let acceptor = build(&files, &contents)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Loaded { contents, acceptor }),
            reloads: watch::Sender::new(Reloads::default()),
        }))
    }

    /// The reload counts now and every change from here on.
    pub fn watch_reloads(&self) -> watch::Receiver<Reloads> {
        self.reloads.subscribe()
    }

    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .acceptor
            .clone()
    }

    /// Reads the files again and, if they changed and make a valid configuration, uses it
    /// for new connections. A broken or half-written update is logged and the previous
    /// configuration kept; the next check tries again. Returns whether a new one was loaded.
    pub fn reload_if_changed(&self) -> bool {
        let contents = match read_all(&self.files) {
            Ok(contents) => contents,
            Err(err) => {
                tracing::error!(error = %err, "TLS files unreadable; keeping the loaded certificate");
                self.reloads.send_modify(|r| r.refused += 1);
                return false;
            }
        };
        if self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contents
            == contents
        {
            return false;
        }
        match build(&self.files, &contents) {
            Ok(acceptor) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Loaded { contents, acceptor };
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                self.reloads.send_modify(|r| r.loaded += 1);
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "new TLS files are invalid; keeping the loaded certificate");
                self.reloads.send_modify(|r| r.refused += 1);
                false
            }
        }
    }

    /// Checks the files every `interval` until the returned future is dropped.
    pub fn watch(
        self: &Arc<Self>,
        interval: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let tls = self.clone();
        crate::reload::every(interval, move || {
            tls.reload_if_changed();
        })
    }

    /// Accepts connections on `listener` and yields those whose handshake succeeded. The
    /// accept task stops when the returned stream is dropped.
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, io::Error>> + Send + 'static {
        let (ready_tx, mut ready_rx) = mpsc::channel::<TlsStream<TcpStream>>(64);
        let tls = self.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small request/reply frames: see `run` on TCP_NODELAY.
                let _ = tcp.set_nodelay(true);
                let acceptor = tls.acceptor();
                let ready_tx = ready_tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = ready_tx.send(stream).await;
                        }
                        Ok(Err(err)) => {
                            tracing::info!(%peer, error = %err, "TLS handshake refused");
                        }
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        let guard = AbortOnDrop(accept_loop);
        futures::stream::poll_fn(move |cx| {
            let _keep = &guard;
            ready_rx.poll_recv(cx).map(|ready| ready.map(Ok))
        })
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn paths(files: &TlsFiles) -> Vec<&Path> {
    let mut paths = vec![files.cert.as_path(), files.key.as_path()];
    paths.extend(files.client_ca.as_deref());
    paths
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn read_all(files: &TlsFiles) -> Result<Vec<Vec<u8>>, TlsError> {
    paths(files)
        .into_iter()
        .map(|path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: shown(path),
                source,
            })
        })
        .collect()
}

/// Builds the acceptor from the files' contents (cert, key, then the CA bundle if any).
fn build(files: &TlsFiles, contents: &[Vec<u8>]) -> Result<TlsAcceptor, TlsError> {
    let invalid = |path: &Path, reason: &dyn std::fmt::Display| TlsError::Invalid {
        path: shown(path),
        reason: reason.to_string(),
    };
    let chain = certificates(&files.cert, &contents[0])?;
    // Only the key's kind is ever reported, never its parse error (which could quote it).
    let key = PrivateKeyDer::from_pem_slice(&contents[1]).map_err(|_| TlsError::NoKey {
        path: shown(&files.key),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&files.cert, &e))?;
    let builder = match (&files.client_ca, contents.get(2)) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(path, pem)? {
                roots.add(ca).map_err(|e| invalid(path, &e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(path, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid(&files.key, &format!("does not match the certificate: {e}")))?;
    // gRPC is HTTP/2 only; clients (grpc-go among them) insist on ALPN saying so.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: shown(path),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: shown(path) });
    }
    Ok(certs)
}

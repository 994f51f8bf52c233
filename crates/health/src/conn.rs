//! Talking to one backend: a TCP connection tuned to notice silence, TLS
//! verified against the cluster CA, and HTTP/1.1 requests over it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::config::{HealthConfig, Mode};
use crate::error::{Error, Result};
use crate::reason::{Phase, Reason};
use crate::silence;

/// Largest readiness body read (`/readyz?verbose` is a few KiB).
const BODY_LIMIT: usize = 64 * 1024;

/// The validated configuration plus what is derived from it once: the TLS
/// client configuration and the verification name.
pub(crate) struct Prober {
    pub(crate) config: HealthConfig,
    tls: Option<TlsConnector>,
    server_name: ServerName<'static>,
    ca_label: String,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("config", &self.config)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Prober {
    pub(crate) fn new(config: HealthConfig) -> Result<Prober> {
        config.validate()?;
        let server_name = ServerName::try_from(config.tls.server_name.clone())
            .map_err(|_| Error::InvalidServerName(config.tls.server_name.clone()))?;
        let ca_label = if config.tls.insecure_skip_verify {
            "(verification disabled)".to_string()
        } else {
            config.tls.ca_path().display().to_string()
        };
        let tls = match config.mode {
            Mode::Https => Some(TlsConnector::from(Arc::new(client_config(&config)?))),
            Mode::Http | Mode::Tcp => None,
        };
        Ok(Prober {
            config,
            tls,
            server_name,
            ca_label,
        })
    }

    fn name(&self) -> &str {
        &self.config.tls.server_name
    }

    /// Opens the persistent connection: TCP (keepalive and user timeout
    /// set; the handshake bounded by `connect_timeout`), then TLS in `https`
    /// mode, then the HTTP client in `http(s)`.
    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Conn, Reason> {
        let (tcp, table) = self.tcp_connect(addr, connect_timeout).await?;
        let sockets = match (table, tcp.local_addr()) {
            (Some(file), Ok(local)) => Some(silence::SocketTable::new(file, local, addr)),
            _ => None,
        };
        match (self.config.mode, &self.tls) {
            (Mode::Tcp, _) => Ok(Conn::Tcp(tcp)),
            (Mode::Http, _) | (Mode::Https, None) => {
                self.http1(tcp, addr.to_string(), sockets).await
            }
            (Mode::Https, Some(connector)) => {
                let handshake = connector.connect(self.server_name.clone(), tcp);
                let tls = match tokio::time::timeout(self.config.timeout, handshake).await {
                    Err(_) => return Err(Reason::Timeout(Phase::TlsHandshake)),
                    Ok(Err(e)) => {
                        return Err(Reason::from_io(
                            &e,
                            Some(Phase::TlsHandshake),
                            &self.ca_label,
                            self.name(),
                        ));
                    }
                    Ok(Ok(tls)) => tls,
                };
                let heartbeat = self.config.heartbeat;
                if heartbeat.enabled() && tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    // From here on the backend's kernel has `ack_timeout` to
                    // acknowledge what we send: PINGs and requests alike.
                    // Set only now, because it would also cut the TCP and
                    // TLS handshakes short, whose bounds are their own.
                    SockRef::from(tls.get_ref().0)
                        .set_tcp_user_timeout(Some(heartbeat.ack_timeout))
                        .map_err(|e| Reason::Io(e.to_string()))?;
                    // The user timeout finds a silent host under a request
                    // sooner than the socket table would.
                    drop(sockets);
                    self.http2(tls).await
                } else {
                    self.http1(tls, self.name().to_string(), sockets).await
                }
            }
        }
    }

    /// Also opens the TCP table of the socket's network namespace when
    /// `inspect_socket` is on: here, on the thread that creates the socket
    /// and before any `.await` (see [`crate::silence`]).
    async fn tcp_connect(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<(TcpStream, Option<std::fs::File>), Reason> {
        let io = |e: std::io::Error| Reason::Io(e.to_string());
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io)?;
        let table = if self.config.keepalive.inspect_socket {
            silence::open_table(addr.is_ipv6())
        } else {
            None
        };
        let ka = &self.config.keepalive;
        {
            let s = SockRef::from(&socket);
            s.set_tcp_keepalive(
                &TcpKeepalive::new()
                    .with_time(ka.idle)
                    .with_interval(ka.interval)
                    .with_retries(ka.count),
            )
            .map_err(io)?;
            if !ka.user_timeout.is_zero() {
                s.set_tcp_user_timeout(Some(ka.user_timeout)).map_err(io)?;
            }
        }
        socket.set_nodelay(true).map_err(io)?;
        match tokio::time::timeout(connect_timeout, socket.connect(addr)).await {
            Err(_) => Err(Reason::Timeout(Phase::Connect)),
            Ok(Err(e)) => Err(Reason::from_io(
                &e,
                Some(Phase::Connect),
                &self.ca_label,
                self.name(),
            )),
            Ok(Ok(stream)) => Ok((stream, table)),
        }
    }

    async fn http1<S>(
        &self,
        io: S,
        host: String,
        sockets: Option<silence::SocketTable>,
    ) -> Result<Conn, Reason>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| Reason::from_hyper(&e, &self.ca_label, self.name()))?;
        Ok(Conn::Http(HttpConn {
            sender: Sender::H1(sender),
            conn: Box::pin(conn),
            // HTTP/1.1 carries the server name in `Host`.
            target: host,
            sockets,
            ended: None,
            ca_label: self.ca_label.clone(),
            name: self.name().to_string(),
        }))
    }

    /// HTTP/2 with the heartbeat ([`crate::HeartbeatConfig`]): a PING
    /// whenever nothing was read for `interval`, idle or not.
    async fn http2<S>(&self, io: S) -> Result<Conn, Reason>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.config.heartbeat.interval)
            // The PING's answer is not awaited: the kernel's acknowledgement
            // (the user timeout) judges liveness, and a stalled apiserver is
            // judged by its readiness answers. hyper sends the next PING
            // only after this one's answer, so a stall pauses the heartbeat;
            // keepalive covers the host meanwhile.
            .keep_alive_timeout(crate::config::MAX_DURATION)
            .keep_alive_while_idle(true)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| Reason::from_hyper(&e, &self.ca_label, self.name()))?;
        Ok(Conn::Http(HttpConn {
            sender: Sender::H2(sender),
            conn: Box::pin(conn),
            // HTTP/2 needs an absolute URI (`:scheme`, `:authority`).
            target: format!("https://{}", self.name()),
            sockets: None,
            ended: None,
            ca_label: self.ca_label.clone(),
            name: self.name().to_string(),
        }))
    }

    /// Sends one readiness request over `conn`.
    pub(crate) async fn request(&self, conn: &mut Conn) -> Requested {
        match conn {
            Conn::Tcp(_) => Requested::Status(0, Duration::ZERO),
            Conn::Http(h) => h.request(&self.config.path, self.config.timeout).await,
        }
    }
}

/// What one readiness request came to.
#[derive(Debug)]
pub(crate) enum Requested {
    /// The status and how long the exchange took.
    Status(u16, Duration),
    /// No full answer within the timeout; the connection must be dropped.
    Timeout,
    /// The connection ended under the request.
    Lost(Reason),
}

type ConnFuture = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// The persistent connection to one backend.
pub(crate) enum Conn {
    Tcp(TcpStream),
    Http(HttpConn),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Conn::Http(h) => f
                .debug_struct("Http")
                .field("target", &h.target)
                .field("http2", &matches!(h.sender, Sender::H2(_)))
                .finish(),
        }
    }
}

impl Conn {
    /// Whether this connection carries the heartbeat (HTTP/2 PINGs under the
    /// short user timeout).
    pub(crate) fn heartbeat(&self) -> bool {
        matches!(
            self,
            Conn::Http(HttpConn {
                sender: Sender::H2(_),
                ..
            })
        )
    }

    /// Before a readiness request: while the kernel has a keepalive probe
    /// outstanding on this connection, waits (up to `limit`) for it to be
    /// answered; returns why the connection ended if it ended meanwhile.
    /// See [`crate::silence`].
    pub(crate) async fn keepalive_settled(&mut self, limit: Duration) -> Option<Reason> {
        let Conn::Http(HttpConn {
            sockets: Some(table),
            ..
        }) = self
        else {
            return None;
        };
        let table = table.clone();
        let deadline = Instant::now().checked_add(limit);
        while deadline.is_none_or(|d| Instant::now() < d)
            && table
                .read()
                .await
                .is_some_and(|r| r.keepalive_unanswered > 0)
        {
            tokio::select! {
                reason = self.closed() => return Some(reason),
                () = tokio::time::sleep(silence::POLL) => {}
            }
        }
        None
    }

    /// Resolves when the connection ends (FIN, reset, kernel timeout), with
    /// why. Cancel-safe: dropping the future loses nothing.
    pub(crate) async fn closed(&mut self) -> Reason {
        match self {
            Conn::Tcp(stream) => {
                let mut buf = [0u8; 512];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => return Reason::Closed,
                        Ok(_) => continue,
                        Err(e) => return Reason::from_io(&e, None, "", ""),
                    }
                }
            }
            Conn::Http(h) => h.closed().await,
        }
    }
}

/// One request at a time, over either protocol.
enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn send(
        &mut self,
        req: http::Request<Empty<Bytes>>,
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }

    /// The request for `path`: origin form and `Host` on HTTP/1.1, an
    /// absolute URI on HTTP/2 (`target` is the host, or the scheme and
    /// authority).
    fn request(&self, target: &str, path: &str) -> http::Result<http::Request<Empty<Bytes>>> {
        let builder = match self {
            Sender::H1(_) => http::Request::get(path).header(http::header::HOST, target),
            Sender::H2(_) => http::Request::get(format!("{target}{path}")),
        };
        builder
            .header(http::header::USER_AGENT, "bcs-apiserver-proxy-health")
            .body(Empty::<Bytes>::new())
    }
}

pub(crate) struct HttpConn {
    sender: Sender,
    /// hyper's connection task. Polling it drives requests and, while idle,
    /// reads the socket so that a FIN or reset is seen at once.
    conn: ConnFuture,
    /// `Host` (HTTP/1.1) or `https://authority` (HTTP/2).
    target: String,
    /// The TCP socket's line in procfs.
    sockets: Option<silence::SocketTable>,
    /// Why `conn` finished, once it has: it is not polled again.
    ended: Option<Reason>,
    ca_label: String,
    name: String,
}

impl HttpConn {
    async fn closed(&mut self) -> Reason {
        if let Some(r) = &self.ended {
            return r.clone();
        }
        let r = match (&mut self.conn).await {
            Ok(()) => Reason::Closed,
            Err(e) => Reason::from_hyper(&e, &self.ca_label, &self.name),
        };
        self.ended = Some(r.clone());
        r
    }

    async fn request(&mut self, path: &str, timeout: Duration) -> Requested {
        let req = match self.sender.request(&self.target, path) {
            Ok(r) => r,
            Err(e) => return Requested::Lost(Reason::Protocol(e.to_string())),
        };
        if let Some(r) = &self.ended {
            return Requested::Lost(r.clone());
        }
        let HttpConn {
            sender,
            conn,
            ca_label,
            name,
            sockets,
            ended,
            ..
        } = self;
        let sockets = sockets.clone();
        let started = Instant::now();
        let exchange = async {
            let resp = sender.send(req).await?;
            let status = resp.status().as_u16();
            // Read the whole body so that the connection can carry the next
            // request.
            let body = Limited::new(resp.into_body(), BODY_LIMIT).collect().await;
            Ok::<_, hyper::Error>((status, body.is_ok()))
        };
        let exchange = tokio::time::timeout(timeout, exchange);
        tokio::pin!(exchange);
        let outcome = tokio::select! {
            r = &mut exchange => r,
            r = conn.as_mut() => {
                let clean = r.is_ok();
                let reason = match r {
                    Ok(()) => Reason::Closed,
                    Err(e) => Reason::from_hyper(&e, ca_label, name),
                };
                *ended = Some(reason.clone());
                // hyper may end the connection in the same poll that
                // delivers the answer (`Connection: close`, or a reset right
                // behind the answer); the answer then waits in the exchange.
                // After a clean end wait for it (no longer than the
                // timeout); after an error take it only if it is there.
                let delivered = if clean {
                    Some(exchange.await)
                } else {
                    tokio::select! {
                        biased;
                        r = &mut exchange => Some(r),
                        () = std::future::ready(()) => None,
                    }
                };
                match delivered {
                    Some(answer @ Ok(Ok((_, true)))) => answer,
                    // A socket error while a request waits (the kernel's
                    // user timeout under a black hole) goes to the request;
                    // hyper then ends the connection cleanly or with an
                    // error of its own shutdown (EPIPE). The cause is the
                    // request's: read as a close, it would cost a reconnect.
                    Some(Ok(Err(e))) => {
                        let cause = Reason::from_hyper_io(&e, ca_label, name).unwrap_or(reason);
                        *ended = Some(cause.clone());
                        return Requested::Lost(cause);
                    }
                    _ => return Requested::Lost(reason),
                }
            }
            () = silent(sockets) => return Requested::Lost(Reason::Unacknowledged),
        };
        match outcome {
            Err(_) => Requested::Timeout,
            Ok(Err(e)) => Requested::Lost(Reason::from_hyper(&e, ca_label, name)),
            Ok(Ok((status, true))) => Requested::Status(status, started.elapsed()),
            // An oversized or broken body leaves the connection unusable.
            Ok(Ok((status, false))) => Requested::Lost(Reason::Protocol(format!(
                "readiness answered {status} with a body that could not be read \
                 (larger than {BODY_LIMIT} bytes or cut short)"
            ))),
        }
    }
}

/// Resolves if the kernel reports the request unacknowledged through
/// repeated retransmissions (see [`crate::silence`]); never otherwise.
async fn silent(sockets: Option<silence::SocketTable>) {
    let Some(table) = sockets else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(silence::POLL).await;
        match table.read().await {
            Some(r) if r.silent() => return,
            Some(_) => {}
            // No procfs, or the socket is gone: leave it to the timeouts.
            None => return std::future::pending().await,
        }
    }
}

fn client_config(config: &HealthConfig) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?;
    let tls = &config.tls;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider.clone())))
    } else {
        let path = tls.ca_path();
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|source| Error::CaFile {
                path: path.clone(),
                source,
            })?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::CaInvalid {
                path,
                detail: "no PEM CERTIFICATE block parses as an X.509 certificate".to_string(),
            });
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::CaInvalid {
                path,
                detail: e.to_string(),
            })?;
        builder.with_webpki_verifier(verifier)
    };
    let mut client = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some(cc) => {
            let chain = CertificateDer::pem_file_iter(&cc.cert_file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|source| Error::ClientCertFile {
                    path: cc.cert_file.clone(),
                    source,
                })?;
            let key = PrivateKeyDer::from_pem_file(&cc.key_file).map_err(|source| {
                Error::ClientCertFile {
                    path: cc.key_file.clone(),
                    source,
                }
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| Error::ClientCert {
                    cert: cc.cert_file.clone(),
                    key: cc.key_file.clone(),
                    source,
                })?
        }
    };
    // HTTP/2 for the heartbeat's PING frames; HTTP/1.1 without it (one
    // request at a time is all a probe needs), or where the server has no
    // HTTP/2.
    client.alpn_protocols = if config.heartbeat.enabled() {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(client)
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake
/// signatures are still checked so that the session itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! A real HTTP receiver that records every request and answers with a
//! programmable status (or hangs), for all paths or per path.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it was answered with (0: left hanging).
    pub status: u16,
    /// The client certificate of its connection (DER), over https.
    pub client_cert: Option<Vec<u8>>,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

/// Answers: a path's scripted statuses, then the path's status, then the
/// receiver's scripted statuses, then its default status. Status 0 means:
/// hang without answering.
#[derive(Default)]
struct Script {
    next: VecDeque<u16>,
    retry_after: Option<String>,
    paths: HashMap<String, PathScript>,
    /// (substring, status): a request whose body holds the substring gets
    /// that status, before anything else.
    bodies: Vec<(String, u16)>,
}

/// One path's own answers (`Receiver::then_at`, `Receiver::set_path_status`).
#[derive(Default)]
struct PathScript {
    next: VecDeque<u16>,
    status: Option<u16>,
    delay: Duration,
    headers: Vec<(String, String)>,
    /// Per cent of requests answered 500 at random, before anything else.
    flaky: u8,
}

impl Script {
    /// The answer to the next request at `path` with `body`, given the
    /// default status.
    fn answer(&mut self, path: &str, body: &[u8], default: u16) -> u16 {
        let text = String::from_utf8_lossy(body);
        // The latest rule wins, so a test can change its mind.
        let rule = self
            .bodies
            .iter()
            .rev()
            .find(|(s, _)| text.contains(s.as_str()));
        if let Some((_, status)) = rule {
            return *status;
        }
        let flaky = self.paths.get(path).map_or(0, |p| p.flaky);
        if flaky > 0 && rand::random_range(0..100u8) < flaky {
            return 500;
        }
        let own = self.paths.get_mut(path);
        own.and_then(|p| p.next.pop_front().or(p.status))
            .or_else(|| self.next.pop_front())
            .unwrap_or(default)
    }

    /// The extra response headers of `path`.
    fn headers(&self, path: &str) -> Vec<(String, String)> {
        self.paths
            .get(path)
            .map_or_else(Vec::new, |p| p.headers.clone())
    }

    /// How long `path` takes to answer.
    fn delay(&self, path: &str) -> Duration {
        self.paths.get(path).map_or(Duration::ZERO, |p| p.delay)
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    script: Arc<Mutex<Script>>,
    refused: Arc<AtomicU16>,
    https: bool,
}

/// Serves one connection: records each request and answers it as scripted.
async fn serve<I>(
    io: I,
    client_cert: Option<Vec<u8>>,
    rec: Arc<Mutex<Vec<Received>>>,
    st: Arc<AtomicU16>,
    sc: Arc<Mutex<Script>>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let (rec, st, sc) = (rec.clone(), st.clone(), sc.clone());
        let client_cert = client_cert.clone();
        async move {
            let path = req.uri().path().to_string();
            let headers = req.headers().clone();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let (code, retry_after, delay, extra) = {
                let mut script = sc.lock().unwrap();
                let code = script.answer(&path, &body, st.load(Ordering::SeqCst));
                let extra = script.headers(&path);
                (code, script.retry_after.clone(), script.delay(&path), extra)
            };
            rec.lock().unwrap().push(Received {
                at: Instant::now(),
                path: path.clone(),
                headers,
                body,
                status: code,
                client_cert,
            });
            tokio::time::sleep(delay).await;
            if code == 0 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            for (name, value) in extra {
                r.headers_mut().insert(
                    hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            if let (Some(after), 429 | 503) = (retry_after, code) {
                r.headers_mut()
                    .insert("retry-after", after.parse().unwrap());
            }
            Ok::<_, Infallible>(r)
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

impl Receiver {
    pub async fn start(status: u16) -> Receiver {
        Receiver::listen(status, None).await
    }

    /// A receiver speaking https with `tls` (which may ask for client
    /// certificates); a connection whose handshake fails is counted in
    /// [`Receiver::refused_handshakes`] and records nothing.
    pub async fn start_tls(status: u16, tls: Arc<rustls::ServerConfig>) -> Receiver {
        Receiver::listen(status, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn listen(status: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(status));
        let script = Arc::new(Mutex::new(Script::default()));
        let refused = Arc::new(AtomicU16::new(0));
        let https = tls.is_some();
        let (rec, st, sc, re) = (
            received.clone(),
            status.clone(),
            script.clone(),
            refused.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (rec, st, sc, re, tls) =
                    (rec.clone(), st.clone(), sc.clone(), re.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, None, rec, st, sc).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                let cert = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| c.to_vec());
                                serve(stream, cert, rec, st, sc).await
                            }
                            Err(_) => {
                                re.fetch_add(1, Ordering::SeqCst);
                            }
                        },
                    }
                });
            }
        });
        Receiver {
            addr,
            received,
            status,
            script,
            refused,
            https,
        }
    }

    /// Connections whose TLS handshake failed (no or an unknown client certificate).
    pub fn refused_handshakes(&self) -> u16 {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The next responses, before falling back to the default status.
    pub fn then(&self, statuses: &[u16]) {
        self.script.lock().unwrap().next.extend(statuses);
    }

    /// The status `path` answers with from now on (0: hang), instead of the
    /// receiver's default and its `then` script.
    pub fn set_path_status(&self, path: &str, status: u16) {
        let mut script = self.script.lock().unwrap();
        script.paths.entry(path.to_string()).or_default().status = Some(status);
    }

    /// Adds response header `name: value` to every answer at `path`.
    pub fn set_path_header(&self, path: &str, name: &str, value: &str) {
        let mut script = self.script.lock().unwrap();
        let own = script.paths.entry(path.to_string()).or_default();
        own.headers.push((name.to_string(), value.to_string()));
    }

    /// `path` answers only after `delay` (a slow receiver).
    pub fn set_path_delay(&self, path: &str, delay: Duration) {
        let mut script = self.script.lock().unwrap();
        script.paths.entry(path.to_string()).or_default().delay = delay;
    }

    /// The next responses at `path`, before its own status (`set_path_status`)
    /// or else the receiver's answers.
    pub fn then_at(&self, path: &str, statuses: &[u16]) {
        let mut script = self.script.lock().unwrap();
        let own = script.paths.entry(path.to_string()).or_default();
        own.next.extend(statuses);
    }

    /// `path` answers 500 to `percent` per cent of requests, at random.
    pub fn set_path_flaky(&self, path: &str, percent: u8) {
        let mut script = self.script.lock().unwrap();
        script.paths.entry(path.to_string()).or_default().flaky = percent;
    }

    /// Any request whose body contains `needle` gets `status` (0: hang);
    /// a later rule for the same body wins.
    pub fn set_body_status(&self, needle: &str, status: u16) {
        let mut script = self.script.lock().unwrap();
        script.bodies.push((needle.to_string(), status));
    }

    /// `Retry-After` sent with 429 and 503 answers.
    pub fn retry_after(&self, value: &str) {
        self.script.lock().unwrap().retry_after = Some(value.to_string());
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until `path` got at least `n` requests; returns them.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        super::eventually(
            Duration::from_secs(15),
            &format!("{n} request(s) at {path}"),
            || async {
                let got = self.at(path);
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

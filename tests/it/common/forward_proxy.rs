//! A forward HTTP proxy on loopback that records what goes through it:
//! `CONNECT host:port` tunnels (https) and absolute-form requests (http),
//! each with its `Proxy-Authorization`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One request the proxy got.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target as sent: `host:port` for CONNECT, the absolute
    /// URL otherwise.
    pub target: String,
    pub proxy_authorization: String,
}

pub struct ForwardProxy {
    pub addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Body = BoxBody<Bytes, hyper::Error>;

impl ForwardProxy {
    pub async fn start() -> ForwardProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, client) = (log.clone(), client.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, log.clone(), client.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        ForwardProxy { addr, seen }
    }

    /// `http://[credentials@]addr`.
    pub fn url(&self, credentials: Option<&str>) -> String {
        match credentials {
            Some(c) => format!("http://{c}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
    client: Client<HttpConnector, Incoming>,
) -> Result<Response<Body>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    log.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        target: req.uri().to_string(),
        proxy_authorization: header("proxy-authorization"),
    });
    let fail = |status: u16| {
        let mut r = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        Ok(r)
    };
    if req.method() == Method::CONNECT {
        let Some(authority) = req.uri().authority().map(|a| a.to_string()) else {
            return fail(400);
        };
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            if let Ok(mut server) = tokio::net::TcpStream::connect(authority).await {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
        return fail(200);
    }
    if req.uri().scheme().is_none() {
        return fail(400);
    }
    let mut req = req;
    req.headers_mut().remove("proxy-authorization");
    match client.request(req).await {
        Ok(response) => Ok(response.map(|b| b.boxed())),
        Err(_) => fail(502),
    }
}

//! The HTTP client under deliveries and token requests: a keep-alive pool
//! of hyper over the connector that refuses non-public targets (or goes
//! through the proxy), with TLS.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::PROXY_AUTHORIZATION;
use hyper::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::proxy::Connector;

/// `User-Agent` of every delivery.
pub(super) const USER_AGENT_VALUE: &str = concat!("webhook-fanout/", env!("CARGO_PKG_VERSION"));

/// A pool of connections to receivers (or token endpoints); clones share it.
#[derive(Clone)]
pub(super) struct Pool {
    http: Client<HttpsConnector<Connector>, Full<Bytes>>,
    connector: Connector,
}

impl Pool {
    /// A keep-alive pool over `connector` with TLS `config` (http/1.1).
    pub(super) fn new(connector: Connector, config: rustls::ClientConfig) -> Pool {
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector.clone());
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .http1_title_case_headers(true)
            .build(tls);
        Pool { http, connector }
    }

    /// Another pool over the same connector, with TLS `config`.
    pub(super) fn with_tls(&self, config: rustls::ClientConfig) -> Pool {
        Pool::new(self.connector.clone(), config)
    }

    /// Sends `request`, with the proxy's credentials when it goes through
    /// the proxy in absolute form.
    pub(super) async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        if let Some(credentials) = self.connector.proxy_authorization(request.uri()) {
            request
                .headers_mut()
                .insert(PROXY_AUTHORIZATION, credentials);
        }
        self.http.request(request).await
    }
}

/// `e` and its sources, joined by colons.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

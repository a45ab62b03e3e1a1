//! The connector under every delivery and token request: straight to the
//! target through the resolver that refuses non-public addresses, or,
//! with `WF_HTTP_PROXY`, through that HTTP proxy: a `CONNECT` tunnel for
//! https (TLS, a client certificate included, runs end to end inside it)
//! and absolute-form requests for http. Hosts that `WF_NO_PROXY` names go
//! straight. hyper-util's `Matcher` reads the proxy URL (and its
//! credentials) and the no-proxy list the way curl does, and its `Tunnel`
//! speaks `CONNECT`.
//!
//! Through a proxy, the proxy resolves the target's name: the service can
//! refuse literal non-public addresses in URLs (and does, when they are
//! saved), but not a public name that resolves to a private address. The
//! proxy must enforce that itself (see the reference's "Egress proxy").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper::header::HeaderValue;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::target::PublicResolver;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `WF_HTTP_PROXY` and `WF_NO_PROXY`, checked when the settings were read.
#[derive(Clone)]
pub(crate) struct ProxySettings {
    /// `http://[user:password@]host:port`.
    pub url: String,
    /// Comma-separated hosts, domains (with their subdomains), IP
    /// addresses or networks that go straight; `*` for all.
    pub no_proxy: Option<String>,
}

/// Straight, or through the proxy.
#[derive(Clone)]
pub(crate) struct Connector {
    direct: HttpConnector<PublicResolver>,
    proxy: Option<Arc<Proxy>>,
}

struct Proxy {
    matcher: Matcher,
    /// To the proxy itself (its address is the operator's: not checked).
    to_proxy: HttpConnector,
}

impl Connector {
    /// `direct` for targets, through `proxy` if set.
    pub(crate) fn new(
        direct: HttpConnector<PublicResolver>,
        proxy: Option<&ProxySettings>,
        connect_timeout: Duration,
    ) -> Connector {
        let proxy = proxy.map(|p| {
            let mut to_proxy = HttpConnector::new();
            to_proxy.set_nodelay(true);
            to_proxy.set_connect_timeout(Some(connect_timeout));
            let matcher = Matcher::builder()
                .all(p.url.clone())
                .no(p.no_proxy.clone().unwrap_or_default())
                .build();
            Arc::new(Proxy { matcher, to_proxy })
        });
        Connector { direct, proxy }
    }

    /// The `Proxy-Authorization` an http request to `uri` carries: the
    /// proxy's credentials when it goes through the proxy in absolute form.
    pub(super) fn proxy_authorization(&self, uri: &Uri) -> Option<HeaderValue> {
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let proxy = self.proxy.as_ref()?;
        proxy.matcher.intercept(uri)?.basic_auth().cloned()
    }
}

/// A connection, marked as being to a proxy for absolute-form requests.
pub(crate) struct Conn {
    io: TokioIo<TcpStream>,
    absolute_form: bool,
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let intercept = self.proxy.as_ref().and_then(|p| {
            let i = p.matcher.intercept(&dst)?;
            Some((p.to_proxy.clone(), i))
        });
        let mut direct = self.direct.clone();
        Box::pin(async move {
            let Some((to_proxy, intercept)) = intercept else {
                let io = direct.call(dst).await?;
                return Ok(Conn {
                    io,
                    absolute_form: false,
                });
            };
            if dst.scheme_str() == Some("https") {
                let mut tunnel = Tunnel::new(intercept.uri().clone(), to_proxy);
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let io = tunnel
                    .call(dst)
                    .await
                    .map_err(|e| format!("proxy CONNECT failed: {e}"))?;
                return Ok(Conn {
                    io,
                    absolute_form: false,
                });
            }
            let io = to_proxy.clone().call(intercept.uri().clone()).await?;
            Ok(Conn {
                io,
                absolute_form: true,
            })
        })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.absolute_form)
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

//! The HTTP server: accepts connections until shutdown, then lets in-flight
//! requests finish (bounded) before returning.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::context::AdminState;
use super::router::route;

/// Serves the admin API on `listener` until `token` is cancelled.
pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>, token: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %crate::logging::Chain(&e), "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(state, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            // Slow-loris guard: a client must send its headers promptly.
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after 5 s; closing");
    }
}

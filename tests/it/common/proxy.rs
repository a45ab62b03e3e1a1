//! A TCP proxy a test can cut (live connections are dropped and new ones
//! refused until restored) or freeze (connections stay open but nothing
//! passes: a server that stopped answering). It puts one service instance's
//! RabbitMQ or Redis "down" without touching the shared servers other tests
//! use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    frozen: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let upstream = upstream.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let (frozen, _) = watch::channel(false);
        let (d, c, f) = (down.clone(), cuts.clone(), frozen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = c.subscribe();
                let mut freeze = f.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                        _ = cut.changed() => return,
                        _ = freeze.wait_for(|f| *f) => {}
                    }
                    // Frozen: both sockets stay open and silent until cut.
                    let _ = cut.changed().await;
                    drop((client, server));
                });
            }
        });
        Proxy {
            addr,
            down,
            cuts,
            frozen,
        }
    }

    /// Live connections stay open but nothing passes any more (until `cut`).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Drops every live connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub fn redis_url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }
}

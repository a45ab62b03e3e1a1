//! Where Redis is: one URL, or the primary that a set of Sentinels names
//! (`WF_REDIS_SENTINELS`, `WF_REDIS_SENTINEL_MASTER`). With Sentinel every
//! new connection asks the Sentinels for the current primary, so after a
//! failover the connections to the lost primary fail, are dropped, and the
//! next ones go to the promoted replica; the change feed resubscribes the
//! same way.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use deadpool_redis::redis::sentinel::{
    SentinelClient, SentinelNodeConnectionInfo, SentinelServerType,
};
use deadpool_redis::redis::{self, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use deadpool_redis::{PoolConfig, Runtime, Timeouts};

use crate::config::Sentinel;

/// A pool of connections to Redis.
#[derive(Clone)]
pub(crate) enum RedisPool {
    /// To one URL.
    Direct {
        pool: deadpool_redis::Pool,
        url: String,
    },
    /// To the primary the Sentinels name.
    Sentinel {
        pool: deadpool_redis::sentinel::Pool,
        sentinel: Sentinel,
        node: SentinelNodeConnectionInfo,
    },
}

/// A connection taken from a [`RedisPool`] (back to it when dropped).
pub(crate) enum Pooled {
    Direct(deadpool_redis::Connection),
    Sentinel(deadpool_redis::sentinel::Connection),
}

/// Pool size and how long a caller waits for a connection: calls fail fast
/// (2 s) while Redis is down.
fn pool_config() -> PoolConfig {
    let timeout = Some(Duration::from_secs(2));
    PoolConfig {
        max_size: 32,
        timeouts: Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        },
        ..PoolConfig::default()
    }
}

/// Why a pool could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PoolSetupError {
    /// The URL's pool.
    #[error(transparent)]
    Direct(#[from] deadpool_redis::CreatePoolError),
    /// The Sentinel pool.
    #[error(transparent)]
    Sentinel(deadpool_redis::sentinel::CreatePoolError),
    /// `WF_REDIS_URL`'s database, user or password could not be read.
    #[error(transparent)]
    Url(#[from] redis::RedisError),
}

/// The Sentinels' addresses as URLs.
fn urls(sentinel: &Sentinel) -> Vec<String> {
    sentinel
        .nodes
        .iter()
        .map(|n| format!("redis://{n}"))
        .collect()
}

impl RedisPool {
    /// Connects lazily to `url`.
    pub(crate) fn direct(url: &str) -> Result<RedisPool, PoolSetupError> {
        let mut cfg = deadpool_redis::Config::from_url(url);
        cfg.pool = Some(pool_config());
        Ok(RedisPool::Direct {
            pool: cfg.create_pool(Some(Runtime::Tokio1))?,
            url: url.to_string(),
        })
    }

    /// Connects lazily to the primary `sentinel` names, with the database,
    /// user and password of `url`.
    pub(crate) fn sentinel(sentinel: &Sentinel, url: &str) -> Result<RedisPool, PoolSetupError> {
        let info = url.into_connection_info()?;
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(info.redis_settings().clone());
        let mut cfg = deadpool_redis::sentinel::Config::from_urls(
            urls(sentinel),
            sentinel.master.clone(),
            deadpool_redis::sentinel::SentinelServerType::Master,
        );
        cfg.node_connection_info = Some(node.clone().into());
        cfg.pool = Some(pool_config());
        Ok(RedisPool::Sentinel {
            pool: cfg
                .create_pool(Some(Runtime::Tokio1))
                .map_err(PoolSetupError::Sentinel)?,
            sentinel: sentinel.clone(),
            node,
        })
    }

    /// A connection from the pool.
    pub(crate) async fn get(&self) -> Result<Pooled, deadpool_redis::PoolError> {
        Ok(match self {
            RedisPool::Direct { pool, .. } => Pooled::Direct(pool.get().await?),
            RedisPool::Sentinel { pool, .. } => Pooled::Sentinel(pool.get().await?),
        })
    }

    /// A pub/sub connection to the current primary.
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<PubSub> {
        let client = match self {
            RedisPool::Direct { url, .. } => redis::Client::open(url.as_str())?,
            RedisPool::Sentinel { sentinel, node, .. } => {
                let mut client = SentinelClient::build(
                    urls(sentinel),
                    sentinel.master.clone(),
                    Some(node.clone()),
                    SentinelServerType::Master,
                )?;
                client.async_get_client().await?
            }
        };
        client.get_async_pubsub().await
    }
}

impl Pooled {
    /// Takes the connection out of its pool for good.
    pub(crate) fn take(this: Pooled) -> MultiplexedConnection {
        match this {
            Pooled::Direct(c) => deadpool_redis::Connection::take(c),
            Pooled::Sentinel(c) => deadpool_redis::sentinel::Connection::take(c),
        }
    }
}

impl Deref for Pooled {
    type Target = MultiplexedConnection;

    fn deref(&self) -> &MultiplexedConnection {
        match self {
            Pooled::Direct(c) => c,
            Pooled::Sentinel(c) => c,
        }
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        match self {
            Pooled::Direct(c) => c,
            Pooled::Sentinel(c) => c,
        }
    }
}

impl ConnectionLike for Pooled {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.deref_mut().req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.deref_mut().req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.deref().get_db()
    }
}

//! Where a broker's Redis is: one server (`redis://`, `rediss://`) or a Redis Cluster
//! (`redis+cluster://`, `rediss+cluster://`, nodes separated by `;`), and the connection each gives.
//!
//! On a cluster every key of a queue shares the queue's hash tag, so each command and script of a
//! queue goes to the master owning its slot; the cluster client follows `MOVED` redirections and
//! rediscovers the masters when one fails over.

use std::sync::Arc;
use std::time::Duration;

use celeriac_core::{BoxError, BrokerError, RedactedUrl};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value};

/// A connection to a broker's Redis: commands to one server, or routed across a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, reconnecting on its own.
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the master of its keys' slot.
    Cluster(ClusterConnection),
    /// The master Redis Sentinel names, asked again when it fails.
    Sentinel(Arc<crate::sentinel::Watched>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(watched) => Box::pin(async move {
                let mut conn = watched.current().await?;
                let answer = conn.req_packed_command(cmd).await;
                if let Err(error) = &answer {
                    watched.suspect(error).await;
                }
                answer
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(watched) => Box::pin(async move {
                let mut conn = watched.current().await?;
                let answer = conn.req_packed_commands(pipeline, offset, count).await;
                if let Err(error) = &answer {
                    watched.suspect(error).await;
                }
                answer
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(watched) => watched.db(),
        }
    }
}

/// The client of a broker's Redis.
pub(crate) enum Server {
    /// One server.
    Single(redis::Client),
    /// A Redis Cluster, reached through any of its `seeds`.
    Cluster {
        client: Box<ClusterClient>,
        /// The nodes the URL names, where the consumers' own readers start.
        seeds: Vec<ConnectionInfo>,
    },
    /// The master a group of Redis Sentinels names.
    Sentinel(Arc<crate::sentinel::Watched>),
}

/// A node of a `redis+<kind>://` URL (`kind`: cluster, sentinel) as the redis crate reads it: its
/// plain scheme (`redis`, or `rediss` from `rediss+<kind>`) and what follows `://`.
pub(crate) fn plain_scheme<'a>(
    node: &'a str,
    kind: &str,
) -> Result<(&'static str, &'a str), String> {
    let (scheme, rest) = node.split_once("://").unwrap_or(("", ""));
    match scheme
        .strip_suffix(kind)
        .and_then(|base| base.strip_suffix('+'))
    {
        Some("redis") => Ok(("redis", rest)),
        Some("rediss") => Ok(("rediss", rest)),
        _ => Err(format!(
            "every node of a {kind} URL is redis+{kind}:// or rediss+{kind}://, not `{scheme}`"
        )),
    }
}

impl Server {
    /// The client for `url`, trusting the roots in `tls_roots_pem` (PEM) besides the system's.
    pub(crate) fn open(
        url: &RedactedUrl,
        tls_roots_pem: Option<&str>,
    ) -> Result<Self, BrokerError> {
        let invalid = |reason: String| {
            BrokerError::Invalid(format!(
                "invalid redis URL {}: {}",
                url.redacted(),
                url.scrub(&reason)
            ))
        };
        let nodes = url.nodes();
        let schemes: Vec<&str> = nodes
            .iter()
            .map(|node| {
                node.secret()
                    .split_once("://")
                    .map_or("", |(scheme, _)| scheme)
            })
            .collect();
        if schemes.iter().any(|scheme| scheme.ends_with("+sentinel")) {
            if tls_roots_pem.is_some() {
                return Err(invalid(
                    "tls_root_certificates is not supported behind Sentinel: add the CA to the \
                     system's roots"
                        .to_owned(),
                ));
            }
            return crate::sentinel::Watched::open(url, &nodes)
                .map(|watched| Self::Sentinel(Arc::new(watched)))
                .map_err(invalid);
        }
        if !schemes.iter().any(|scheme| scheme.ends_with("+cluster")) {
            if nodes.len() > 1 {
                return Err(invalid(
                    "several nodes need a cluster URL (redis+cluster://host:port;redis+cluster://…)"
                        .to_owned(),
                ));
            }
            return crate::client_for(url, tls_roots_pem).map(Self::Single);
        }
        let mut seeds = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let (plain, rest) = plain_scheme(node.secret(), "cluster").map_err(invalid)?;
            let info = format!("{plain}://{rest}")
                .into_connection_info()
                .map_err(|error| invalid(error.to_string()))?;
            if info.redis_settings().db() != 0 {
                return Err(invalid("a Redis Cluster has database 0 only".to_owned()));
            }
            seeds.push(info);
        }
        if tls_roots_pem.is_some() {
            // The cluster client takes extra roots only when built on rustls; ours is native-tls.
            return Err(invalid(
                "tls_root_certificates is not supported on a Redis Cluster: add the CA to the \
                 system's roots"
                    .to_owned(),
            ));
        }
        let client = ClusterClient::builder(seeds.clone())
            .build()
            .map_err(|error| invalid(error.to_string()))?;
        Ok(Self::Cluster {
            client: Box::new(client),
            seeds,
        })
    }

    /// A new connection, every response bounded by `response_timeout`. Errors name `url` redacted,
    /// whatever the client's own message quotes.
    pub(crate) async fn connect(
        &self,
        url: &RedactedUrl,
        response_timeout: Duration,
    ) -> Result<Conn, BoxError> {
        match self {
            Self::Single(client) => crate::manager(client, url, response_timeout)
                .await
                .map(Conn::Single),
            Self::Cluster { client, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(response_timeout)
                    .set_response_timeout(response_timeout);
                let connect = client.get_async_connection_with_config(config);
                match tokio::time::timeout(response_timeout, connect).await {
                    Ok(Ok(conn)) => Ok(Conn::Cluster(conn)),
                    Ok(Err(error)) => Err(url.scrub(&error.to_string()).into()),
                    Err(_) => Err(format!("no answer within {response_timeout:?}").into()),
                }
            }
            Self::Sentinel(watched) => {
                watched.set_timeout(response_timeout);
                watched
                    .current()
                    .await
                    .map_err(|error| url.scrub(&error.to_string()))?;
                Ok(Conn::Sentinel(watched.clone()))
            }
        }
    }

    /// A new connection, or [`BrokerError::Connect`] naming `url` redacted.
    pub(crate) async fn connect_or_error(
        &self,
        url: &RedactedUrl,
        response_timeout: Duration,
    ) -> Result<Conn, BrokerError> {
        self.connect(url, response_timeout)
            .await
            .map_err(|source| BrokerError::Connect {
                url: url.redacted().to_owned(),
                source,
            })
    }

    /// A server for pub/sub and a connection to it: this one, or the first seed of a cluster that
    /// answers (Redis Cluster forwards every `PUBLISH` to all its nodes, so any node serves).
    pub(crate) async fn pubsub_node(
        &self,
        url: &RedactedUrl,
        response_timeout: Duration,
    ) -> Result<(redis::Client, ConnectionManager), BoxError> {
        let clients = match self {
            Self::Single(client) => vec![client.clone()],
            Self::Sentinel(watched) => vec![watched.master().await?],
            Self::Cluster { seeds, .. } => seeds
                .iter()
                .filter_map(|seed| redis::Client::open(seed.clone()).ok())
                .collect(),
        };
        let mut last: BoxError = "no node to connect to".into();
        for client in clients {
            match crate::manager(&client, url, response_timeout).await {
                Ok(conn) => return Ok((client, conn)),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::{Server, plain_scheme};
    use celeriac_core::RedactedUrl;

    #[test]
    fn a_node_of_either_kind_reads_as_plain_redis() {
        assert_eq!(
            plain_scheme("redis+cluster://a:1", "cluster"),
            Ok(("redis", "a:1"))
        );
        assert_eq!(
            plain_scheme("rediss+sentinel://:pw@s:26379/mymaster", "sentinel"),
            Ok(("rediss", ":pw@s:26379/mymaster"))
        );
        for wrong in [
            "redis+sentinel://a:1",
            "redis://a:1",
            "redis+x+cluster://a",
            "a:1",
        ] {
            let error = plain_scheme(wrong, "cluster").unwrap_err();
            assert!(error.contains("redis+cluster://"), "{wrong}: {error}");
        }
    }

    fn open(url: &str) -> Result<Server, String> {
        Server::open(&RedactedUrl::new(url), None).map_err(|error| error.to_string())
    }

    #[test]
    fn a_cluster_url_lists_its_nodes() {
        let server =
            open("redis+cluster://:pw@127.0.0.1:7000;redis+cluster://:pw@127.0.0.1:7001").unwrap();
        let Server::Cluster { seeds, .. } = server else {
            panic!("not a cluster");
        };
        assert_eq!(seeds.len(), 2);
    }

    #[test]
    fn a_plain_url_is_one_server() {
        assert!(!open("redis://127.0.0.1:6379/0").unwrap().is_cluster());
    }

    #[test]
    fn bad_cluster_urls_are_refused_without_the_password() {
        for (url, why) in [
            ("redis://:hunter2@a:1;redis://:hunter2@b:2", "several nodes"),
            ("redis+cluster://:hunter2@a:1;amqp://b:2", "not `amqp`"),
            ("redis+cluster://:hunter2@a:1/3", "database 0 only"),
        ] {
            let error = open(url).err().unwrap();
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}

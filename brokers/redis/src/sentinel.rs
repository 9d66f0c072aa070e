//! Redis behind Sentinel (`redis+sentinel://sentinel:26379/<master name>;redis+sentinel://…`): the
//! sentinels name the master; every command goes to it; when a command fails as a dead or demoted
//! master fails (no connection, `READONLY`, `MASTERDOWN`), the sentinels are asked again, at most
//! once per [`ASK_AGAIN_AFTER`], and the next command goes to the master they name then.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use celeriac_core::{BoxError, RedactedUrl};
use redis::aio::ConnectionManager;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, RedisResult,
};

/// The least time between two questions to the sentinels.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(500);

/// The master the sentinels name, and a connection to it.
struct Master {
    client: redis::Client,
    conn: ConnectionManager,
}

/// A master watched through its sentinels.
pub(crate) struct Watched {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    master: tokio::sync::RwLock<Option<Master>>,
    asked_at: Mutex<Option<Instant>>,
    url: RedactedUrl,
    db: i64,
    timeout: Mutex<Duration>,
}

impl Watched {
    /// The sentinels of `nodes` (each `redis+sentinel://` or `rediss+sentinel://`), watching the
    /// master named by the first node's path; its credentials and database are the master's.
    pub(crate) fn open(url: &RedactedUrl, nodes: &[RedactedUrl]) -> Result<Self, String> {
        let mut sentinels = Vec::with_capacity(nodes.len());
        let mut tls = false;
        for node in nodes {
            let (plain, rest) = crate::server::plain_scheme(node.secret(), "sentinel")?;
            tls |= plain == "rediss";
            let host_port = rest.split(['/', '?']).next().unwrap_or_default();
            let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, at)| at);
            let info = format!("{plain}://{host_port}")
                .into_connection_info()
                .map_err(|error| error.to_string())?;
            sentinels.push(info.addr().clone());
        }
        let first = ::url::Url::parse(nodes.first().map_or("", |node| node.secret()))
            .map_err(|error| error.to_string())?;
        let mut path = first.path().trim_start_matches('/').split('/');
        let name = path.next().filter(|name| !name.is_empty()).ok_or(
            "a sentinel URL names its master: redis+sentinel://host:26379/<master name>[/<db>]",
        )?;
        let db: i64 = match path.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse()
                .map_err(|_| format!("the database `{db}` is not a number"))?,
        };
        let mut builder = SentinelClientBuilder::new(sentinels, name, SentinelServerType::Master)
            .map_err(|error| error.to_string())?
            .set_client_to_redis_db(db);
        if let Some(password) = first.password() {
            let password = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
            builder = builder.set_client_to_redis_password(password);
        }
        if !first.username().is_empty() {
            builder = builder.set_client_to_redis_username(first.username());
        }
        if tls {
            builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
        }
        let sentinels = builder.build().map_err(|error| error.to_string())?;
        Ok(Self {
            sentinels: tokio::sync::Mutex::new(sentinels),
            master: tokio::sync::RwLock::new(None),
            asked_at: Mutex::new(None),
            url: url.clone(),
            db,
            timeout: Mutex::new(Duration::from_secs(5)),
        })
    }

    pub(crate) fn set_timeout(&self, timeout: Duration) {
        *lock(&self.timeout) = timeout;
    }

    fn timeout(&self) -> Duration {
        *lock(&self.timeout)
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    /// A connection to the master, asking the sentinels first if none is known.
    pub(crate) async fn current(&self) -> RedisResult<ConnectionManager> {
        if let Some(master) = &*self.master.read().await {
            return Ok(master.conn.clone());
        }
        self.ask().await
    }

    /// The master's client (for pub/sub).
    pub(crate) async fn master(&self) -> Result<redis::Client, BoxError> {
        self.current()
            .await
            .map_err(|error| self.url.scrub(&error.to_string()))?;
        match &*self.master.read().await {
            Some(master) => Ok(master.client.clone()),
            None => Err("the sentinels name no master".into()),
        }
    }

    /// Where the master is, for a consumer's own reader.
    pub(crate) async fn master_info(&self) -> RedisResult<ConnectionInfo> {
        self.current().await?;
        match &*self.master.read().await {
            Some(master) => Ok(master.client.get_connection_info().clone()),
            None => Err(no_master("the sentinels name no master".to_owned())),
        }
    }

    /// After `error` on the master: asks the sentinels again if it looks like the master died or
    /// was demoted (the answer is for the next command; this one stays failed).
    pub(crate) async fn suspect(&self, error: &RedisError) {
        let demoted = matches!(error.code(), Some("READONLY" | "MASTERDOWN"));
        if error.code().is_some() && !demoted {
            return;
        }
        self.ask_again().await;
    }

    /// Asks the sentinels again unless that was done very recently.
    pub(crate) async fn ask_again(&self) {
        let recent = lock(&self.asked_at).is_some_and(|at| at.elapsed() < ASK_AGAIN_AFTER);
        if recent {
            return;
        }
        if let Err(error) = self.ask().await {
            tracing::debug!(error = %self.url.scrub(&error.to_string()), "the sentinels name no reachable master yet");
        }
    }

    async fn ask(&self) -> RedisResult<ConnectionManager> {
        let timeout = self.timeout();
        *lock(&self.asked_at) = Some(Instant::now());
        let client = {
            let mut sentinels = self.sentinels.lock().await;
            tokio::time::timeout(timeout, sentinels.async_get_client())
                .await
                .map_err(|_| no_master(format!("no sentinel answered within {timeout:?}")))??
        };
        let conn = crate::manager(&client, &self.url, timeout)
            .await
            .map_err(|error| no_master(error.to_string()))?;
        let mut master = self.master.write().await;
        let moved = master.as_ref().is_none_or(|known| {
            address(known.client.get_connection_info()) != address(client.get_connection_info())
        });
        if moved {
            tracing::info!(master = %address(client.get_connection_info()), "the sentinels name a master");
        }
        *master = Some(Master {
            client,
            conn: conn.clone(),
        });
        Ok(conn)
    }
}

fn no_master(detail: String) -> RedisError {
    RedisError::from((ErrorKind::Io, "no reachable master", detail))
}

/// `host:port` of a server, for logs (no credentials).
fn address(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        _ => "a local socket".to_owned(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use celeriac_core::RedactedUrl;

    use crate::server::Server;

    fn open(url: &str) -> Result<Server, String> {
        Server::open(&RedactedUrl::new(url), None).map_err(|error| error.to_string())
    }

    #[test]
    fn a_sentinel_url_names_its_master_and_database() {
        let server = open(
            "redis+sentinel://:pw@127.0.0.1:26379/mymaster/2;redis+sentinel://127.0.0.1:26380",
        )
        .unwrap();
        let Server::Sentinel(watched) = server else {
            panic!("not a sentinel server");
        };
        assert_eq!(watched.db(), 2);
    }

    #[test]
    fn bad_sentinel_urls_are_refused_without_the_password() {
        for (url, why) in [
            ("redis+sentinel://:hunter2@a:26379", "names its master"),
            ("redis+sentinel://:hunter2@a:26379/m/x", "not a number"),
            (
                "redis+sentinel://:hunter2@a:26379/m;redis://b:1",
                "not `redis`",
            ),
        ] {
            let error = open(url).err().unwrap();
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}

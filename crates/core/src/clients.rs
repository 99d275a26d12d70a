//! MongoDB clients created on first use and re-tried until they can be: the
//! app must start while offline, and an `mongodb+srv://` Atlas URI cannot
//! even be parsed without DNS.

use crate::redact::redact_uri;
use mongodb::options::{ClientOptions, Compressor};
use mongodb::Client;
use std::time::Duration;
use tokio::sync::OnceCell;

pub struct LazyClient {
    uri: String,
    label: &'static str,
    timeout: Duration,
    /// Offer wire compression when the URI names no `compressors=`.
    compress: bool,
    /// Connections the pool may hold when the URI names no `maxPoolSize=`.
    pool: Option<u32>,
    cell: OnceCell<Client>,
}

/// What the Atlas client offers when its URI names no `compressors=`, in
/// order of preference. The server answers with the ones it accepts (none
/// at all is fine: messages then go uncompressed).
pub fn default_compressors() -> Vec<Compressor> {
    vec![
        Compressor::Zstd { level: None },
        Compressor::Snappy,
        Compressor::Zlib { level: None },
    ]
}

impl LazyClient {
    pub fn new(uri: &str, label: &'static str, timeout: Duration) -> Self {
        Self {
            uri: uri.to_owned(),
            label,
            timeout,
            compress: false,
            pool: None,
            cell: OnceCell::new(),
        }
    }

    /// Offers `default_compressors` unless the URI names its own list. For
    /// the link to Atlas: the local server is on loopback, where compressing
    /// costs CPU and saves nothing.
    pub fn compressed(mut self) -> Self {
        self.compress = true;
        self
    }

    /// Room for `n` commands at once unless the URI names its own
    /// `maxPoolSize`: the driver's default of 10 would queue the lanes'
    /// batches behind each other, and over a link tens of ms long the
    /// batches in flight, not the bandwidth, set the drain's speed.
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool = Some(n.max(1));
        self
    }

    /// The client, creating it if needed. Errors are redacted.
    pub async fn get(&self) -> Result<&Client, String> {
        self.cell
            .get_or_try_init(|| async {
                let opts = self.options().await?;
                Client::with_options(opts).map_err(|e| format!("{} client: {e}", self.label))
            })
            .await
    }

    /// The driver options this client is made with (no network for a
    /// `mongodb://` URI; a `mongodb+srv://` one needs DNS).
    async fn options(&self) -> Result<ClientOptions, String> {
        let mut opts = ClientOptions::parse(&self.uri).await.map_err(|e| {
            format!(
                "{} URI {} is not usable: {e}",
                self.label,
                redact_uri(&self.uri)
            )
        })?;
        opts.server_selection_timeout = Some(self.timeout);
        opts.connect_timeout = Some(self.timeout);
        opts.app_name.get_or_insert_with(|| "dualsync".into());
        if self.compress && opts.compressors.is_none() {
            opts.compressors = Some(default_compressors());
        }
        if let (Some(n), None) = (self.pool, opts.max_pool_size) {
            opts.max_pool_size = Some(n);
            // Opened all at once: a connection to Atlas costs several round trips
            // (TCP, TLS, hello, SCRAM), and the driver's 2 at a time would take
            // seconds at 150 ms to reach the pool a backlog needs.
            opts.max_connecting.get_or_insert(n);
        }
        Ok(opts)
    }

    /// The client if it was already created.
    pub fn ready(&self) -> Option<&Client> {
        self.cell.get()
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }
}

/// Database name in a MongoDB URI path (`mongodb://h/db?x` → `db`).
pub fn db_from_uri(uri: &str) -> Option<String> {
    let rest = &uri[uri.find("://")? + 3..];
    let path = &rest[rest.find('/')? + 1..];
    let db = path.split('?').next().unwrap_or("");
    (!db.is_empty()).then(|| db.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &Option<Vec<Compressor>>) -> Vec<String> {
        c.iter().flatten().map(|c| format!("{c:?}")).collect()
    }

    #[tokio::test]
    async fn the_atlas_client_offers_compression_unless_the_uri_says_otherwise() {
        let t = Duration::from_secs(1);
        let plain = LazyClient::new("mongodb://127.0.0.1:1/db", "Atlas", t).compressed();
        let offered = plain.options().await.expect("options").compressors;
        assert_eq!(names(&offered), names(&Some(default_compressors())));
        assert_eq!(
            names(&offered).len(),
            3,
            "zstd, snappy and zlib are built in"
        );
        // The URI's own list wins (the user's choice, e.g. one their server takes).
        let own = LazyClient::new("mongodb://127.0.0.1:1/db?compressors=zlib", "Atlas", t)
            .compressed()
            .options()
            .await
            .expect("options")
            .compressors;
        assert_eq!(
            names(&own),
            vec![format!("{:?}", Compressor::Zlib { level: None })]
        );
        // The local client offers nothing: loopback gains nothing from it.
        let local = LazyClient::new("mongodb://127.0.0.1:1/db", "local", t);
        assert!(local
            .options()
            .await
            .expect("options")
            .compressors
            .is_none());
    }

    #[tokio::test]
    async fn the_pool_holds_the_batches_in_flight_unless_the_uri_says_otherwise() {
        let t = Duration::from_secs(1);
        let sized = LazyClient::new("mongodb://127.0.0.1:1/db", "Atlas", t).pool_size(20);
        let opts = sized.options().await.expect("options");
        assert_eq!(opts.max_pool_size, Some(20));
        assert_eq!(opts.max_connecting, Some(20), "opened in parallel");
        let own =
            LazyClient::new("mongodb://127.0.0.1:1/db?maxPoolSize=3", "Atlas", t).pool_size(20);
        assert_eq!(own.options().await.expect("options").max_pool_size, Some(3));
        let plain = LazyClient::new("mongodb://127.0.0.1:1/db", "local", t);
        assert_eq!(plain.options().await.expect("options").max_pool_size, None);
    }

    #[test]
    fn finds_the_database_in_a_uri() {
        assert_eq!(
            db_from_uri("mongodb://localhost:27017/bomba").as_deref(),
            Some("bomba")
        );
        assert_eq!(
            db_from_uri("mongodb+srv://u:p@c.x.net/bomba?w=majority").as_deref(),
            Some("bomba")
        );
        assert_eq!(db_from_uri("mongodb://localhost:27017/?w=1"), None);
        assert_eq!(db_from_uri("mongodb://localhost:27017"), None);
    }
}

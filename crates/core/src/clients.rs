//! MongoDB clients created on first use and re-tried until they can be: the
//! app must start while offline, and an `mongodb+srv://` Atlas URI cannot
//! even be parsed without DNS.

use crate::redact::redact_uri;
use mongodb::options::ClientOptions;
use mongodb::Client;
use std::time::Duration;
use tokio::sync::OnceCell;

pub struct LazyClient {
    uri: String,
    label: &'static str,
    timeout: Duration,
    cell: OnceCell<Client>,
}

impl LazyClient {
    pub fn new(uri: &str, label: &'static str, timeout: Duration) -> Self {
        Self {
            uri: uri.to_owned(),
            label,
            timeout,
            cell: OnceCell::new(),
        }
    }

    /// The client, creating it if needed. Errors are redacted.
    pub async fn get(&self) -> Result<&Client, String> {
        self.cell
            .get_or_try_init(|| async {
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
                Client::with_options(opts).map_err(|e| format!("{} client: {e}", self.label))
            })
            .await
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

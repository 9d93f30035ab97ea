//! The management store: one code path over SQLite (default) and PostgreSQL (clusters), through
//! sqlx's `Any` driver. SQL here is written in the dialect both understand (`$n` placeholders,
//! `ON CONFLICT`, `RETURNING`); times are milliseconds since the Unix epoch.

mod audit;
mod error;
mod events;
mod partitions;
mod proxies;
mod rollups;
mod services;
mod settings;
mod sql;
mod stats;
mod users;

use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

pub use audit::{AuditEntry, AuditFilter};
pub use error::StoreError;
pub use events::{Event, EventCursor, EventFilter, EventPage, NewEvent};
pub use partitions::{partition_name, Partition, DEFAULT_PARTITION};
pub use proxies::{Proxy, ProxyIdentity};
pub use rollups::{bucket, ALL_SERVICES, DENIED, OBSERVED};
pub use services::{Service, ServicesChange};
pub use settings::{ADMIN_TOKEN_HASH, KEY_SALT};
pub use stats::{CountRow, ObservedRow, SourceRow, TopFilter};
pub use users::{ApiToken, Role, Session, User};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Event batches go through one connection on SQLite: SQLite writes one at a time anyway,
    /// and one connection keeps its page cache of the event indexes warm.
    event_writer: AnyPool,
    backend: Backend,
    /// PostgreSQL: event batches go in with COPY, which the `Any` driver cannot do.
    pg: Option<sqlx::PgPool>,
    partitions: std::sync::Arc<partitions::Partitions>,
}

/// The URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl Store {
    /// Connects, refuses a schema newer than this binary, and runs pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let backend = Backend::of_url(url).ok_or_else(|| StoreError::UnsupportedUrl {
            url: redact_url(url),
        })?;
        let options = |max| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // Writers wait for each other instead of failing; WAL makes fsync
                            // per commit unnecessary for durability across process crashes.
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            // Event indexes outgrow SQLite's default 2 MiB page cache quickly;
                            // a larger cache and memory-mapped reads keep ingestion fast.
                            conn.execute("PRAGMA cache_size = -65536").await?;
                            conn.execute("PRAGMA mmap_size = 1073741824").await?;
                            // Multi-row INSERTs journal each statement; keep that journal in
                            // memory, and checkpoint the WAL in larger, rarer steps.
                            conn.execute("PRAGMA temp_store = MEMORY").await?;
                            conn.execute("PRAGMA wal_autocheckpoint = 16384").await?;
                        }
                        Ok(())
                    })
                })
        };
        let open_error = |source| StoreError::Open {
            url: redact_url(url),
            source,
        };
        let (pool, event_writer, pg) = match backend {
            Backend::Sqlite => {
                let pool = options(4).connect(url).await.map_err(open_error)?;
                pool.execute("PRAGMA journal_mode = WAL").await?;
                let writer = options(1).connect(url).await.map_err(open_error)?;
                (pool, writer, None)
            }
            Backend::Postgres => {
                let pool = options(16).connect(url).await.map_err(open_error)?;
                let pg = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(open_error)?;
                (pool.clone(), pool, Some(pg))
            }
        };
        let store = Store {
            pool,
            event_writer,
            backend,
            pg,
            partitions: Default::default(),
        };
        store.migrate().await?;
        if backend == Backend::Postgres {
            store.partitions_ahead().await?;
        }
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn event_writer(&self) -> &AnyPool {
        &self.event_writer
    }

    /// The newest migration this binary knows.
    pub fn known_schema_version(&self) -> i64 {
        self.backend
            .migrator()
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0)
    }

    /// The newest migration applied to the database, if it was ever migrated.
    pub async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        // The table does not exist before the first migration; that is not an error here.
        let row: Result<AnyRow, _> = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await;
        match row {
            Ok(row) => Ok(row.try_get::<Option<i64>, _>("v")?),
            Err(_) => Ok(None),
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let known = self.known_schema_version();
        if let Some(found) = self.schema_version().await? {
            if found > known {
                return Err(StoreError::SchemaTooNew { found, known });
            }
        }
        self.backend.migrator().run(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(pg) = &self.pg {
            pg.close().await;
        }
        self.event_writer.close().await;
        self.pool.close().await;
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

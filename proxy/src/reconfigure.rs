//! The one way the running configuration changes, whatever asked for it (start, the file
//! watcher, management's stream): load → compile → apply → report. A change that does not load
//! or compile, or cannot be served, leaves everything as it was.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nb_api::ServicesUpdate;

use crate::config::{compile, load_file, ConfigError};
use crate::geo::{GeoDb, GeoError};
use crate::managed::cache;
use crate::server::Server;

/// A new configuration, not yet loaded.
#[derive(Debug)]
pub enum Change {
    /// Standalone mode's services file, at start or after it changed.
    ServicesFile(PathBuf),
    /// Services from management's stream; once applied they are kept in `cache`.
    Management {
        update: ServicesUpdate,
        cache: PathBuf,
    },
    /// The services management sent last time, kept on disk: at start, until it answers.
    CachedServices(PathBuf),
    /// The GeoIP database, at start or after its file changed.
    GeoDb(PathBuf),
    /// A certificate, key or CA file of the running services changed: the same services,
    /// compiled again (in both modes, without a service edit).
    Certificates,
}

/// What a change made of the running configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub services: usize,
    /// Management's revision, for changes that came from it.
    pub revision: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Geo(#[from] GeoError),
    #[error("no cached services yet")]
    NothingCached,
    #[error("{0}")]
    Cache(String),
}

impl Server {
    /// Applies `change` and logs what happened. The first services and the first GeoIP
    /// database are "loaded"; a failure then is the caller's to report, since the proxy cannot
    /// start on it.
    pub async fn reconfigure(&self, change: Change) -> Result<Applied, ReconfigureError> {
        let first = match &change {
            Change::GeoDb(_) => self.state().geo.load().is_none(),
            Change::Certificates => false,
            _ => !self.services_loaded.load(Ordering::Relaxed),
        };
        let result = self.load_and_apply(&change).await;
        if result.is_ok() && !matches!(change, Change::GeoDb(_)) {
            self.services_loaded.store(true, Ordering::Relaxed);
        }
        report(&change, first, &result);
        result
    }

    async fn load_and_apply(&self, change: &Change) -> Result<Applied, ReconfigureError> {
        let (routes, revision) = match change {
            Change::GeoDb(path) => {
                let db = GeoDb::open(path)?;
                tracing::debug!(kind = db.database_type(), "GeoIP database opened");
                self.state().geo.store(Some(Arc::new(db)));
                self.state().policy.changed();
                let services = self.state().routes.load().services.len();
                return Ok(Applied {
                    services,
                    revision: None,
                });
            }
            Change::ServicesFile(path) => (load_file(path, self.compile_options())?, None),
            Change::Certificates => {
                let running = self.state().routes.load();
                let specs = running.services.iter().map(|s| s.spec().clone()).collect();
                (
                    compile(
                        "the changed certificate files",
                        specs,
                        self.compile_options(),
                    )?,
                    None,
                )
            }
            Change::Management { update, .. } => {
                let name = management_source(update.revision);
                let routes = compile(&name, update.services.clone(), self.compile_options())?;
                (routes, Some(update.revision))
            }
            Change::CachedServices(path) => {
                let update = cache::load(path)
                    .map_err(ReconfigureError::Cache)?
                    .ok_or(ReconfigureError::NothingCached)?;
                let name = management_source(update.revision);
                (
                    compile(&name, update.services, self.compile_options())?,
                    Some(update.revision),
                )
            }
        };
        let services = routes.services.len();
        self.apply(routes, &source_name(change)).await?;
        if let Change::Management { update, cache } = change {
            if let Err(e) = cache::save(cache, update) {
                tracing::warn!("cannot keep the services for a restart: {e}");
            }
        }
        Ok(Applied { services, revision })
    }
}

pub(crate) fn management_source(revision: i64) -> String {
    format!("services from management (revision {revision})")
}

fn source_name(change: &Change) -> String {
    match change {
        Change::ServicesFile(p) | Change::GeoDb(p) => p.display().to_string(),
        Change::Management { update, .. } => management_source(update.revision),
        Change::CachedServices(p) => format!("the services cache {}", p.display()),
        Change::Certificates => "the changed certificate files".into(),
    }
}

/// One log line per change, in the words the operator's tools look for.
fn report(change: &Change, first: bool, result: &Result<Applied, ReconfigureError>) {
    match (change, result) {
        (Change::ServicesFile(path), Ok(a)) => {
            let what = if first {
                "configuration loaded"
            } else {
                "configuration reloaded"
            };
            tracing::info!(file = %path.display(), services = a.services, "{what}");
        }
        (Change::ServicesFile(_), Err(e)) if !first => {
            tracing::error!("configuration rejected, keeping the running one: {e}");
        }
        (Change::Management { .. }, Ok(a)) => tracing::info!(
            revision = a.revision,
            services = a.services,
            "services from management applied"
        ),
        (Change::Management { .. }, Err(e)) => {
            tracing::error!("services from management rejected, keeping the running ones: {e}");
        }
        (Change::CachedServices(path), Ok(a)) => tracing::info!(
            cache = %path.display(),
            revision = a.revision,
            services = a.services,
            "serving the cached services until management answers"
        ),
        (Change::CachedServices(path), Err(ReconfigureError::NothingCached)) => tracing::info!(
            cache = %path.display(),
            "no cached services yet: serving none until management answers"
        ),
        (Change::CachedServices(_), Err(e)) => {
            tracing::error!("ignoring the services cache: {e}");
        }
        (Change::Certificates, Ok(a)) => {
            tracing::info!(services = a.services, "certificates reloaded");
        }
        (Change::Certificates, Err(e)) => {
            tracing::error!("changed certificate files rejected, keeping the loaded ones: {e}");
        }
        (Change::GeoDb(path), Ok(_)) => {
            let what = if first {
                "GeoIP database loaded"
            } else {
                "GeoIP database reloaded"
            };
            tracing::info!(path = %path.display(), "{what}");
        }
        (Change::GeoDb(_), Err(e)) if !first => {
            tracing::error!("GeoIP database rejected, keeping the loaded one: {e}");
        }
        // The first load failed: the proxy does not start, and says why.
        (Change::ServicesFile(_) | Change::GeoDb(_), Err(_)) => {}
    }
}

//! Owns the listeners and applies new routes atomically: every new TCP listener is bound before
//! the swap, so a config that cannot be served is rejected whole and the running one stays.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, Problem, Routes};
use crate::state::ProxyState;

#[derive(Debug, Clone, Default)]
pub struct Listeners {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub struct Server {
    state: Arc<ProxyState>,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    tcp: Mutex<HashMap<SocketAddr, JoinHandle<()>>>,
    _shared_listeners: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the shared listeners and the initial services' TCP listeners, then serves.
    pub async fn start(state: Arc<ProxyState>, listeners: Listeners) -> Result<Self, StartError> {
        let mut tasks = Vec::new();
        let mut http_addr = None;
        let mut https_addr = None;
        if let Some(addr) = listeners.http {
            let l = bind(addr, "HTTP listener").await?;
            http_addr = l.local_addr().ok();
            tasks.push(tokio::spawn(crate::http::run_listener(
                state.clone(),
                l,
                None,
            )));
        }
        if let Some(addr) = listeners.https {
            let l = bind(addr, "HTTPS listener").await?;
            https_addr = l.local_addr().ok();
            let acceptor = TlsAcceptor::from(crate::tls::sni_config(state.clone()));
            tasks.push(tokio::spawn(crate::http::run_listener(
                state.clone(),
                l,
                Some(acceptor),
            )));
        }
        let server = Self {
            state,
            http_addr,
            https_addr,
            tcp: Mutex::new(HashMap::new()),
            _shared_listeners: tasks,
        };
        let routes = server.state.routes.load_full();
        server
            .sync_tcp_listeners(&routes, "initial configuration")
            .await?;
        Ok(server)
    }

    pub fn state(&self) -> &Arc<ProxyState> {
        &self.state
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// Makes `routes` the running configuration, or leaves everything as it was.
    pub async fn apply(&self, routes: Routes, source_name: &str) -> Result<(), ConfigError> {
        let routes = Arc::new(routes);
        self.sync_tcp_listeners(&routes, source_name).await?;
        Ok(())
    }

    async fn sync_tcp_listeners(
        &self,
        routes: &Arc<Routes>,
        source_name: &str,
    ) -> Result<(), ConfigError> {
        let running: Vec<SocketAddr> = self
            .tcp
            .lock()
            .expect("listener table")
            .keys()
            .copied()
            .collect();
        // Bind every new address first; on any failure the new listeners are dropped.
        let mut fresh = Vec::new();
        let mut problems = Vec::new();
        for (addr, service) in &routes.tcp {
            if running.contains(addr) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(l) => fresh.push((*addr, l)),
                Err(e) => problems.push(Problem {
                    service: Some(service.id.to_string()),
                    field: Some("listen"),
                    message: format!("cannot listen on {addr}: {e}"),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError {
                source_name: source_name.to_owned(),
                problems,
            });
        }
        self.state.routes.store(routes.clone());
        let mut table = self.tcp.lock().expect("listener table");
        for (addr, listener) in fresh {
            let task = tokio::spawn(crate::tcp::run_listener(self.state.clone(), listener, addr));
            table.insert(addr, task);
        }
        // Stop accepting where no service listens any more; open connections carry on.
        table.retain(|addr, task| {
            let keep = routes.tcp.contains_key(addr);
            if !keep {
                task.abort();
            }
            keep
        });
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self._shared_listeners {
            t.abort();
        }
        if let Ok(table) = self.tcp.lock() {
            for t in table.values() {
                t.abort();
            }
        }
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, what, source })
}

//! Owns the listeners and applies new routes atomically: every new TCP listener is bound before
//! the swap, so a config that cannot be served is rejected whole and the running one stays.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{CompileOptions, ConfigError, Problem, Routes};
use crate::crowdsec::BouncerRef;
use crate::state::ProxyState;
use crate::workers::Workers;

#[derive(Debug, Clone, Default)]
pub struct Listeners {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    /// Where clients reach the HTTPS listener, for redirects (default: its own port).
    pub https_public_port: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}{holder}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
        holder: nb_os::PortHolder,
    },
}

/// A TCP service's accept loops (one per worker) and its connection count, which outlives
/// reloads as long as the address stays in use.
struct TcpListenerTasks {
    tasks: Vec<AbortHandle>,
}

pub struct Server {
    state: Arc<ProxyState>,
    workers: Workers,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    tcp: Mutex<HashMap<SocketAddr, TcpListenerTasks>>,
    shared_listeners: Vec<AbortHandle>,
    /// Held while some service of the running configuration uses CrowdSec.
    bouncer: Mutex<Option<BouncerRef>>,
    compile: CompileOptions,
    /// Some services were applied: later ones are reloads.
    pub(crate) services_loaded: AtomicBool,
}

impl Server {
    /// Binds the shared listeners and serves them on `workers`; services come with
    /// [`Server::reconfigure`]. Called from within the control runtime.
    pub fn start(
        state: Arc<ProxyState>,
        listeners: Listeners,
        workers: Workers,
        compile: CompileOptions,
    ) -> Result<Self, StartError> {
        let mut tasks = Vec::new();
        let mut http_addr = None;
        let mut https_addr = None;
        let bind_err = |addr, what| {
            move |source| StartError::Bind {
                addr,
                what,
                holder: nb_os::PortHolder::find(addr, &source),
                source,
            }
        };
        // The HTTPS listener first: the plain one redirects to its port.
        if let Some(addr) = listeners.https {
            let l = workers
                .bind(addr)
                .map_err(bind_err(addr, "HTTPS listener"))?;
            https_addr = l.first().and_then(|l| l.local_addr().ok());
            let acceptor = TlsAcceptor::from(crate::tls::sni_config(state.clone()));
            let st = state.clone();
            let serving = workers.serve(l, move |l| {
                crate::http::run_listener(st.clone(), l, Some(acceptor.clone()), None)
            });
            tasks.extend(serving.map_err(bind_err(addr, "HTTPS listener"))?);
        }
        let https_port = listeners.https_public_port.or(https_addr.map(|a| a.port()));
        if let Some(addr) = listeners.http {
            let l = workers
                .bind(addr)
                .map_err(bind_err(addr, "HTTP listener"))?;
            http_addr = l.first().and_then(|l| l.local_addr().ok());
            let st = state.clone();
            let serving = workers.serve(l, move |l| {
                crate::http::run_listener(st.clone(), l, None, https_port)
            });
            tasks.extend(serving.map_err(bind_err(addr, "HTTP listener"))?);
        }
        Ok(Self {
            state,
            workers,
            http_addr,
            https_addr,
            tcp: Mutex::new(HashMap::new()),
            shared_listeners: tasks,
            bouncer: Mutex::new(None),
            compile,
            services_loaded: AtomicBool::new(false),
        })
    }

    pub(crate) fn compile_options(&self) -> &CompileOptions {
        &self.compile
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
    pub(crate) async fn apply(&self, routes: Routes, source_name: &str) -> Result<(), ConfigError> {
        let routes = Arc::new(routes);
        self.sync_tcp_listeners(&routes, source_name).await?;
        self.state.policy.changed();
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
        for (addr, on_listener) in &routes.tcp {
            if running.contains(addr) {
                continue;
            }
            match self.workers.bind(*addr) {
                Ok(l) => fresh.push((*addr, l)),
                Err(e) => problems.push(Problem {
                    service: Some(on_listener.first_id().to_owned()),
                    field: Some("listen"),
                    message: format!(
                        "cannot listen on {addr}: {e}{}",
                        nb_os::PortHolder::find(*addr, &e)
                    ),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError {
                source_name: source_name.to_owned(),
                problems,
            });
        }
        // The new reference before the old one goes: an edit never restarts the bouncer.
        let users = routes
            .services
            .iter()
            .map(|s| (&**s.id(), s.filter().crowdsec_mode()));
        let bouncer = self.state.crowdsec.reference_for(users);
        crate::restrict::warn_without_geo(
            routes.services.iter().map(|s| (&**s.id(), s.filter())),
            self.state.geo.load().is_some(),
        );
        crate::balance::carry_over(&self.state.routes.load(), routes);
        self.state.routes.store(routes.clone());
        self.state.acme.want(routes.acme.clone());
        crate::balance::start_checks(routes);
        drop(std::mem::replace(
            &mut *self.bouncer.lock().expect("bouncer reference"),
            bouncer,
        ));
        let mut table = self.tcp.lock().expect("listener table");
        for (addr, listener) in fresh {
            let st = self.state.clone();
            match self.workers.serve(listener, move |l| {
                crate::tcp::run_listener(st.clone(), l, addr)
            }) {
                Ok(tasks) => {
                    table.insert(addr, TcpListenerTasks { tasks });
                }
                Err(e) => tracing::error!(listen = %addr, error = %e, "cannot serve listener"),
            }
        }
        // Stop accepting where no service listens any more; open connections carry on.
        table.retain(|addr, listener| {
            let keep = routes.tcp.contains_key(addr);
            if !keep {
                listener.tasks.iter().for_each(AbortHandle::abort);
            }
            keep
        });
        Ok(())
    }
}

impl Server {
    /// Closes every listener (shutdown); open connections carry on.
    pub fn stop_accepting(&self) {
        self.shared_listeners.iter().for_each(AbortHandle::abort);
        if let Ok(mut table) = self.tcp.lock() {
            for listener in table.values() {
                listener.tasks.iter().for_each(AbortHandle::abort);
            }
            table.clear();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

//! Thread-per-core data plane: one single-threaded runtime per core, each accepting on the same
//! listening sockets. A connection, its upstream connection and their timers stay on one thread,
//! so the request path has no cross-thread wake-ups and no contended runtime locks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpSocket;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub struct Workers {
    handles: Vec<Handle>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let mut stopped = stopped.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nb-worker-{i}"))
                    .spawn(move || {
                        rt.block_on(async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        });
                    })?,
            );
        }
        Ok(Self {
            handles,
            stop,
            threads,
        })
    }

    /// One worker per available core.
    pub fn per_core() -> std::io::Result<Self> {
        Self::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Binds one listening socket per worker on `addr` with SO_REUSEPORT, so the kernel spreads
    /// new connections evenly across workers. Port 0 picks one port for all of them.
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<Vec<std::net::TcpListener>> {
        let mut socks = Vec::with_capacity(self.len());
        let mut addr = addr;
        for _ in 0..self.len() {
            let sock = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.set_reuseaddr(true)?;
            sock.set_reuseport(true)?;
            sock.bind(addr)?;
            let listener = sock.listen(1024)?.into_std()?;
            addr = listener.local_addr()?;
            socks.push(listener);
        }
        Ok(socks)
    }

    /// Runs `accept_loop` on every worker, each on its own socket from [`Workers::bind`],
    /// registered with that worker's reactor. Returns the tasks, to stop them later.
    pub fn serve<F, Fut>(
        &self,
        listeners: Vec<std::net::TcpListener>,
        accept_loop: F,
    ) -> std::io::Result<Vec<AbortHandle>>
    where
        F: Fn(tokio::net::TcpListener) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept_loop = Arc::new(accept_loop);
        let mut tasks = Vec::with_capacity(self.handles.len());
        for (handle, sock) in self.handles.iter().zip(listeners) {
            sock.set_nonblocking(true)?;
            let accept_loop = accept_loop.clone();
            let task = handle.spawn(async move {
                match tokio::net::TcpListener::from_std(sock) {
                    Ok(l) => accept_loop(l).await,
                    Err(e) => tracing::error!(error = %e, "worker cannot register a listener"),
                }
            });
            tasks.push(task.abort_handle());
        }
        Ok(tasks)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

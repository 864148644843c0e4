//! [`ShutdownSignal`]: what every task awaits (or polls) to learn that shutdown has begun.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use tokio::sync::watch;

/// Resolves once shutdown has begun; cheap to clone, one per task.
///
/// ```
/// # async fn accept_loop(listener: tokio::net::TcpListener, shutdown: kurir_lifecycle::ShutdownSignal) {
/// let stop = shutdown.wait();
/// tokio::pin!(stop);
/// loop {
///     tokio::select! {
///         () = &mut stop => break,
///         accepted = listener.accept() => { /* spawn a session */ let _ = accepted; }
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl ShutdownSignal {
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Self {
        Self { rx }
    }

    /// Whether shutdown has begun (non-blocking).
    pub fn is_shutting_down(&self) -> bool {
        *self.rx.borrow()
    }

    /// A future that resolves once shutdown has begun (at once if it already has).
    /// It owns its state, so it can be stored, pinned once and polled in a loop.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            // An error means every `Lifecycle` is gone: nobody is left to keep the
            // process running, which is as good as a shutdown.
            let _ = rx.wait_for(|down| *down).await;
        }
    }
}

impl IntoFuture for ShutdownSignal {
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

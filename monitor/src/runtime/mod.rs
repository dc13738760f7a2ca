//! Container runtimes: thin shells that turn engine APIs (Docker's Engine
//! API, containerd's gRPC API and its CRI labels) into
//! `Input::Container` events for the model.
//!
//! Each adapter runs as one tokio task: connect, take an inventory
//! (`ContainerEvent::Seen` for every container, then `Inventory`), follow the
//! engine's event stream, and on any error report it, back off and start
//! over (resync). An engine that is down, restarting or slow never stalls the
//! daemon: the adapter only ever `send`s into a bounded channel.
//!
//! Owns: talking to the engines. May import tokio, tracing, the engine
//! client crates and the model's input types; never the probes or procfs.

pub mod containerd;
pub mod docker;

use std::time::Duration;

use monitor_model::Input;

/// Where adapters send what they learn.
pub type Sink = tokio::sync::mpsc::Sender<Input>;

/// One runtime's connection, for logs, metrics and `mountleak check`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStatus {
    pub runtime: &'static str,
    pub connected: bool,
    /// Times the connection was lost and made again.
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// The API version negotiated (Docker) or the server version (containerd).
    pub version: Option<String>,
}

/// Reconnection delays: 100 ms doubling up to 30 s, reset after a connection
/// that lasted.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt; doubles each time.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts the adapter of every configured runtime (an empty socket path
/// turns one off); returns their status channels.
pub fn spawn(
    cfg: &crate::config::Config,
    sink: Sink,
) -> Vec<tokio::sync::watch::Receiver<RuntimeStatus>> {
    let mut out = Vec::new();
    let r = &cfg.runtimes;
    if !r.docker_socket.as_os_str().is_empty() {
        let (tx, rx) = tokio::sync::watch::channel(RuntimeStatus {
            runtime: "docker",
            ..RuntimeStatus::default()
        });
        let dcfg = docker::DockerConfig {
            socket: r.docker_socket.clone(),
        };
        tokio::spawn(docker::run(dcfg, sink.clone(), tx));
        out.push(rx);
    }
    if !r.containerd_socket.as_os_str().is_empty() {
        let (tx, rx) = tokio::sync::watch::channel(RuntimeStatus {
            runtime: "containerd",
            ..RuntimeStatus::default()
        });
        tokio::spawn(containerd::run(containerd_config(cfg), sink, tx));
        out.push(rx);
    }
    out
}

fn containerd_config(cfg: &crate::config::Config) -> containerd::ContainerdConfig {
    let r = &cfg.runtimes;
    containerd::ContainerdConfig {
        socket: r.containerd_socket.clone(),
        namespaces: r.containerd_namespaces.clone(),
        skip_namespaces: r.containerd_skip_namespaces.clone(),
        ..containerd::ContainerdConfig::default()
    }
}

/// Asks every configured runtime about a `mountleak check` target. Returns
/// the containers found and, for runtimes that could not be asked, why.
/// A socket that does not exist is an engine that is not installed here:
/// not worth a note.
pub async fn lookup(
    cfg: &crate::config::Config,
    target: &crate::check::Target,
) -> (Vec<monitor_model::ContainerInfo>, Vec<String>) {
    use crate::check::Target;
    let r = &cfg.runtimes;
    let mut found = Vec::new();
    let mut unreachable = Vec::new();
    let name = match target {
        Target::Container(s) => s.clone(),
        Target::Pod { namespace, name } => format!("{namespace}/{name}"),
        Target::Path(_) => return (found, unreachable),
    };
    if matches!(target, Target::Container(_)) && r.docker_socket.exists() {
        match docker::lookup(
            &docker::DockerConfig {
                socket: r.docker_socket.clone(),
            },
            &name,
        )
        .await
        {
            Ok(Some(info)) => found.push(info),
            Ok(None) => {}
            Err(e) => unreachable.push(format!("docker ({}): {e}", r.docker_socket.display())),
        }
    }
    if found.is_empty() && r.containerd_socket.exists() {
        match containerd::lookup(&containerd_config(cfg), &name).await {
            Ok(infos) => found.extend(infos),
            Err(e) => unreachable.push(format!(
                "containerd ({}): {e}",
                r.containerd_socket.display()
            )),
        }
    }
    (found, unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..10).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(&delays[..4], &[100, 200, 400, 800]);
        assert_eq!(*delays.last().unwrap(), 30_000);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::FIRST);
    }
}

//! Many clients at once over real TCP, and idle connections over TCP.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kurir_submit::smtp::ListenerMode;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::harness::*;

const CLIENTS: usize = 1000;

async fn serve(h: &Harness) -> SocketAddr {
    let listener = kurir_submit::smtp::listen(LOOPBACK_0.parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = h.server.clone();
    tokio::spawn(async move { server.serve(vec![(listener, ListenerMode::Starttls)]).await });
    addr
}

/// One client: connect, say it is ready, wait for the go, send one message.
async fn client(
    addr: SocketAddr,
    i: usize,
    ready: mpsc::Sender<()>,
    go: watch::Receiver<bool>,
) -> String {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut c = Client::new(Box::new(stream));
    c.expect_reply(220).await;
    ready.send(()).await.unwrap();
    drop(ready);
    let mut go = go;
    go.wait_for(|go| *go).await.unwrap();
    c.expect(&format!("EHLO client{i}.test"), 250).await;
    let to = format!("r{i}@dest.test");
    let (code, text) = c
        .send_mail("a@example.test", &[&to], &message(&format!("n{i}")))
        .await;
    assert_eq!(code, 250, "{text}");
    c.expect("QUIT", 221).await;
    queued_id(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_simultaneous_connections_all_get_queued() {
    let h = Harness::start(|c| {
        c.limits.max_connections = CLIENTS + 100;
        c.limits.max_connections_per_ip = CLIENTS + 100;
        c.timeouts.command = Duration::from_secs(60);
        c.timeouts.data = Duration::from_secs(60);
    })
    .await;
    let addr = serve(&h).await;
    let (ready_tx, mut ready) = mpsc::channel(CLIENTS);
    let (go_tx, go) = watch::channel(false);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client(addr, i, ready_tx.clone(), go.clone())))
        .collect();
    drop(ready_tx);
    // Every client connected and greeted before any sends: all sessions are open at once.
    for n in 0..CLIENTS {
        let got = tokio::time::timeout(Duration::from_secs(60), ready.recv()).await;
        assert!(matches!(got, Ok(Some(()))), "only {n} clients connected");
    }
    assert_eq!(h.server.sessions(), CLIENTS);
    let connected = start.elapsed();
    go_tx.send(true).unwrap();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    eprintln!(
        "{CLIENTS} simultaneous SMTP sessions: connected in {connected:?}, all queued in {elapsed:?}"
    );
    assert_eq!(ids.len(), CLIENTS);
    assert_eq!(h.server.metrics().messages_with_code(250), CLIENTS as u64);
    let q = take_queued(&h.queue, CLIENTS, Duration::from_secs(120)).await;
    assert_eq!(q.len(), CLIENTS);
    let queued: HashSet<String> = q.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(queued, ids);
}

#[tokio::test]
async fn idle_tcp_connection_is_closed_with_421_at_its_timeout() {
    let h = Harness::start(|c| c.timeouts.command = Duration::from_millis(300)).await;
    let addr = serve(&h).await;
    let mut c = Client::new(Box::new(TcpStream::connect(addr).await.unwrap()));
    let start = Instant::now();
    c.expect_reply(220).await;
    let text = c.expect_reply(421).await;
    assert!(text.starts_with("421 4.4.2"), "{text}");
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert!(c.is_closed().await);
    kurir_testkit::wait_for("session count to drop", Duration::from_secs(5), || async {
        (h.server.sessions() == 0).then_some(())
    })
    .await
    .unwrap();
}

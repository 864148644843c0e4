//! Graceful drain: idle sessions are told 421, a message being received completes, new
//! connections are refused with `421 4.3.2`, and the server stops once all are done.

use std::time::Duration;

use kurir_submit::smtp::ListenerMode;
use tokio::net::TcpStream;

use crate::harness::*;

#[tokio::test]
async fn shutdown_finishes_data_closes_idle_and_refuses_new_sessions() {
    let h = Harness::start(|_| {}).await;
    let listener = kurir_submit::smtp::listen(LOOPBACK_0.parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = h.server.clone();
    let serving =
        tokio::spawn(async move { server.serve(vec![(listener, ListenerMode::Starttls)]).await });

    let mut idle = Client::new(Box::new(TcpStream::connect(addr).await.unwrap()));
    idle.expect_reply(220).await;
    idle.expect("EHLO idle.test", 250).await;

    let mut busy = Client::new(Box::new(TcpStream::connect(addr).await.unwrap()));
    busy.expect_reply(220).await;
    busy.expect("EHLO busy.test", 250).await;
    busy.expect("MAIL FROM:<a@example.test>", 250).await;
    busy.expect("RCPT TO:<r@dest.test>", 250).await;
    busy.expect("DATA", 354).await;
    busy.send("Subject: in flight\r\n\r\nfirst half\r\n").await;

    let lifecycle = h.lifecycle.clone();
    let drain = tokio::spawn(async move { lifecycle.drain(Duration::from_secs(20)).await });

    let text = idle.expect_reply(421).await;
    assert!(text.starts_with("421 4.3.2"), "{text}");
    assert!(idle.is_closed().await);

    let mut late = Client::new(Box::new(TcpStream::connect(addr).await.unwrap()));
    let text = late.expect_reply(421).await;
    assert!(text.starts_with("421 4.3.2"), "{text}");

    busy.send("second half\r\n.\r\n").await;
    let text = busy.expect_reply(250).await;
    assert!(text.contains("queued as"), "{text}");
    busy.expect_reply(421).await;

    let report = drain.await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.queued(1).await.len(), 1);
}

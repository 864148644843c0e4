//! The sink counts what the SMTP sender sends: messages, distinct ids, duplicates,
//! recipients; STARTTLS, AUTH, pacing and the stop conditions.

use std::time::Duration;

use kurir_loadtest::message::{HEADER, RecipientPlan, SizeMix, Stamp, header_block};
use kurir_loadtest::send::smtp::Session;
use kurir_loadtest::send::{SmtpTarget, Transport};
use kurir_loadtest::sink::{Faults, Sink, SinkConfig, SinkTls};

use crate::common::{send, sink, smtp_load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_and_the_sink_count_every_message_once() {
    let sink = sink(Faults::default()).await;
    let mut config = smtp_load(&sink, 500);
    config.recipients = RecipientPlan {
        per_message: 2,
        domains: 3,
        ..RecipientPlan::default()
    };
    config.messages_per_connection = 40;
    let report = send(&config).await;
    let seen = sink.stop().await;

    assert_eq!(
        (report.messages, report.accepted, report.failed),
        (500, 500, 0),
        "{report}"
    );
    assert_eq!(report.recipients_accepted, 1000);
    assert!(
        report.errors.is_empty() && report.refusals.is_empty(),
        "{report}"
    );
    assert_eq!(report.accept_latency.count, 500);
    assert_eq!(seen.messages, 500, "{seen}");
    assert_eq!(seen.distinct_ids, 500);
    assert_eq!(seen.recipients, 1000);
    assert_eq!(seen.distinct_deliveries, 1000);
    assert_eq!((seen.duplicates, seen.unlabelled), (0, 0));
    assert_eq!(seen.delivery_latency.count, 500);
    assert!(
        report.bytes >= 500 * 2048 && seen.bytes >= report.bytes,
        "{report}{seen}"
    );
    // 4 connections, each reconnecting after 40 messages.
    assert!(seen.connections >= 500 / 40, "{seen}");
    // At most 4 at once from the sender's side; the sink counts a connection as open until
    // it has read the FIN, so a connection's successor may overlap it briefly there.
    assert!(seen.max_open_connections <= 2 * 4, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_accepted_twice_is_a_duplicate() {
    let sink = sink(Faults::default()).await;
    let mut session = Session::connect(&target(&sink)).await.unwrap();
    let to = vec!["user-1@d1.load.test".to_owned()];
    let stamp = Stamp::now("dup-run", 7);
    let header = header_block("a@sender.load.test", &to, &stamp);
    let body = b"hello\r\n";
    for _ in 0..2 {
        let result = session
            .send("a@sender.load.test", &to, &header, body)
            .await
            .unwrap();
        assert!(result.accepted(), "{result:?}");
    }
    // The same id to another recipient is no duplicate; a message without the header is
    // counted as unlabelled.
    let other = vec!["user-2@d1.load.test".to_owned()];
    session
        .send("a@sender.load.test", &other, &header, body)
        .await
        .unwrap();
    session
        .send("a@sender.load.test", &to, b"Subject: x\r\n\r\n", body)
        .await
        .unwrap();
    session.quit().await;
    let seen = sink.stop().await;

    assert_eq!(seen.messages, 4, "{seen}");
    assert_eq!(seen.distinct_ids, 1);
    assert_eq!(seen.distinct_deliveries, 2);
    assert_eq!(seen.duplicates, 1);
    assert_eq!(seen.unlabelled, 1);
    assert!(header.starts_with(b"From:") && String::from_utf8_lossy(&header).contains(HEADER));
}

fn target(sink: &Sink) -> SmtpTarget {
    SmtpTarget {
        addr: sink.addr(),
        helo: "loadtest.test".into(),
        starttls: false,
        auth: None,
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_work_against_a_self_signed_sink() {
    let sink = Sink::start(SinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(SinkTls::SelfSigned),
        ..SinkConfig::default()
    })
    .await
    .unwrap();
    let mut config = smtp_load(&sink, 40);
    config.transport = Transport::Smtp(SmtpTarget {
        starttls: true,
        auth: Some(("loadtest".into(), "secret".into())),
        ..target(&sink)
    });
    let report = send(&config).await;
    let seen = sink.stop().await;
    assert_eq!((report.accepted, report.failed), (40, 0), "{report}");
    assert_eq!(seen.distinct_ids, 40, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_to_a_sink_without_tls_fails_every_message_with_its_cause() {
    let sink = sink(Faults::default()).await;
    let mut config = smtp_load(&sink, 5);
    config.connections = 1;
    config.transport = Transport::Smtp(SmtpTarget {
        starttls: true,
        ..target(&sink)
    });
    let report = send(&config).await;
    assert_eq!((report.accepted, report.failed), (0, 5), "{report}");
    assert_eq!(report.errors.get("protocol starttls"), Some(&5), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_rate_paces_the_messages() {
    let sink = sink(Faults::default()).await;
    let mut config = smtp_load(&sink, 50);
    config.rate = Some(100.0);
    let report = send(&config).await;
    assert_eq!(report.accepted, 50, "{report}");
    // Message 49 is due at 0.49 s: the run cannot be shorter.
    assert!(report.elapsed_s >= 0.48, "{report}");
    assert!(report.elapsed_s < 10.0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_ends_the_run() {
    let sink = sink(Faults::default()).await;
    let mut config = smtp_load(&sink, 0);
    config.messages = None;
    config.duration = Some(Duration::from_millis(300));
    config.rate = Some(100.0);
    let report = send(&config).await;
    let seen = sink.stop().await;
    // About 30 messages are due within 300 ms.
    assert!((20..=31).contains(&report.accepted), "{report}");
    assert_eq!(seen.distinct_ids, report.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_mix_sends_both_sizes() {
    let sink = sink(Faults::default()).await;
    let mut config = smtp_load(&sink, 100);
    config.sizes = "1k:50,64k:50".parse::<SizeMix>().unwrap();
    let report = send(&config).await;
    let seen = sink.stop().await;
    assert_eq!(report.accepted, 100);
    // Every message is at least 1 KiB and about half are 64 KiB.
    assert!(seen.bytes > 100 * 1024 + 20 * 64 * 1024, "{seen}");
    assert!(seen.bytes < 100 * 64 * 1024 + 100 * 1024, "{seen}");
}

/// Writes `input`, then reads until `replies` reply lines (final lines: `NNN `) arrived.
async fn exchange(stream: &mut tokio::net::TcpStream, input: &[u8], replies: usize) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(input).await.unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let finals = |t: &str| {
        t.lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .count()
    };
    while finals(&text) < replies {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("sink answers")
            .unwrap();
        assert!(n > 0, "sink closed after {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text.lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l[..3].to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdat_chunks_make_one_message_and_refused_chunks_are_skipped() {
    let sink = Sink::start(SinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_message_size: 1000,
        ..SinkConfig::default()
    })
    .await
    .unwrap();
    let mut stream = tokio::net::TcpStream::connect(sink.addr()).await.unwrap();
    let ehlo = exchange(&mut stream, b"EHLO client.test\r\n", 2).await;
    assert_eq!(ehlo, ["220", "250"]);

    let to = vec!["user-1@d1.load.test".to_owned()];
    let mut message = header_block("a@sender.load.test", &to, &Stamp::now("bdat-run", 1));
    message.extend_from_slice(b"body\r\n.leading dot, not stuffed\r\n");
    let (first, second) = message.split_at(10);
    let mut input = b"MAIL FROM:<a@sender.load.test>\r\nRCPT TO:<user-1@d1.load.test>\r\n".to_vec();
    input.extend_from_slice(format!("BDAT {}\r\n", first.len()).as_bytes());
    input.extend_from_slice(first);
    input.extend_from_slice(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
    input.extend_from_slice(second);
    assert_eq!(
        exchange(&mut stream, &input, 4).await,
        ["250", "250", "250", "250"]
    );

    // No recipient: the chunk (which looks like commands) is skipped, then refused.
    let input = b"MAIL FROM:<a@sender.load.test>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n";
    assert_eq!(exchange(&mut stream, input, 3).await, ["250", "554", "250"]);
    // Over the size limit across chunks: read to the end, then 552.
    let mut input = b"MAIL FROM:<a@sender.load.test>\r\nRCPT TO:<user-1@d1.load.test>\r\n".to_vec();
    input.extend_from_slice(b"BDAT 600\r\n");
    input.extend_from_slice(&[b'x'; 600]);
    input.extend_from_slice(b"BDAT 600 LAST\r\n");
    input.extend_from_slice(&[b'x'; 600]);
    assert_eq!(
        exchange(&mut stream, &input, 4).await,
        ["250", "250", "250", "552"]
    );
    assert_eq!(exchange(&mut stream, b"QUIT\r\n", 1).await, ["221"]);

    // A size that overflows what came before, then the client gives up: the session
    // answers what it had and ends (no panic, nothing reserved from the claimed size).
    let mut stream = tokio::net::TcpStream::connect(sink.addr()).await.unwrap();
    exchange(&mut stream, b"EHLO client.test\r\n", 2).await;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut input =
            b"MAIL FROM:<a@sender.load.test>\r\nRCPT TO:<user-1@d1.load.test>\r\n".to_vec();
        input.extend_from_slice(b"BDAT 10\r\n0123456789BDAT 18446744073709551610 LAST\r\n");
        stream.write_all(&input).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
        read.await.expect("the sink closes").unwrap();
        let codes: Vec<&str> = std::str::from_utf8(&rest)
            .unwrap()
            .lines()
            .map(|l| &l[..3])
            .collect();
        assert_eq!(codes, ["250", "250", "250"]);
    }
    let seen = sink.stop().await;

    assert_eq!(seen.messages, 1, "{seen}");
    assert_eq!((seen.distinct_ids, seen.unlabelled), (1, 0), "{seen}");
    assert_eq!(seen.bytes, message.len() as u64, "{seen}");
}

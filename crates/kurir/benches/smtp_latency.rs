//! Accept latency of SMTP submission (not a test): the time from a message's final
//! `CRLF.CRLF` to kurir's `250 … queued as`, at a fixed offered rate, on the durable
//! embedded queue.
//!
//!     cargo bench -p kurir --bench smtp_latency -- [RATE] [CONNECTIONS] [MESSAGES]
//!
//! Defaults: 5,000 msg/s (about half the throughput measured by scripts/bench-smtp.sh) over
//! 50 connections, 30,000 messages of 2 KB. It runs the release `kurir` binary on loopback
//! with its data in a temp dir; the clients are plain tokio tasks in this process, each
//! sending at RATE / CONNECTIONS with the next message due on a fixed schedule, so a slow
//! reply delays that connection's next message but is not hidden (coordinated omission is
//! avoided by measuring from the final dot, not from the schedule, and by reporting the
//! achieved rate).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Starts `kurir serve` and returns it with its SMTP address.
fn start_kurir(dir: &std::path::Path) -> (std::process::Child, SocketAddr) {
    let config = dir.join("kurir.toml");
    let text = format!(
        "[node]\ndata_dir = \"{}\"\n[log]\nlevel = \"warn\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [smtp]\nlisteners = [{{ address = \"127.0.0.1:0\", mode = \"plain\" }}]\n\
         [smtp.limits]\nmax_messages_per_connection = 100000000\n",
        dir.join("data").display()
    );
    std::fs::write(&config, text).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kurir"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kurir");
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(addr) = line.strip_prefix(kurir::roles::SMTP_LISTENING) {
            return (child, addr.parse().expect("address"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("kurir did not announce its SMTP address");
}

async fn reply(reader: &mut AsyncBufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut out = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("read");
        assert!(!line.is_empty(), "connection closed");
        out.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return out;
        }
    }
}

/// One connection: `count` messages, one every `interval`; returns each accept latency.
async fn connection(
    addr: SocketAddr,
    count: u64,
    interval: Duration,
    body: String,
) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    // Like real clients' MTAs: no Nagle delay between the body and the final dot.
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let mut read = AsyncBufReader::new(read);
    reply(&mut read).await;
    write
        .write_all(b"EHLO bench.test\r\n")
        .await
        .expect("write");
    reply(&mut read).await;
    let mut latencies = Vec::with_capacity(count as usize);
    let mut next = tokio::time::Instant::now();
    for _ in 0..count {
        tokio::time::sleep_until(next).await;
        next += interval;
        write
            .write_all(b"MAIL FROM:<sender@bench.test>\r\nRCPT TO:<rcpt@bench.test>\r\nDATA\r\n")
            .await
            .expect("write");
        for _ in 0..3 {
            reply(&mut read).await; // 250, 250, 354 (PIPELINING)
        }
        write.write_all(body.as_bytes()).await.expect("write");
        let dot = Instant::now();
        write.write_all(b"\r\n.\r\n").await.expect("write");
        let answer = reply(&mut read).await;
        latencies.push(dot.elapsed());
        assert!(answer.starts_with("250"), "{answer}");
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let (rate, connections, messages) = (arg(0, 5000), arg(1, 50), arg(2, 30_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut kurir, addr) = start_kurir(dir.path());
    let body = format!("Subject: latency\r\n\r\n{}", "x".repeat(2000));
    let per_connection = messages / connections;
    let interval = Duration::from_secs_f64(connections as f64 / rate as f64);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(addr, per_connection, interval, body.clone())))
        .collect();
    let mut all: Vec<Duration> = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    let elapsed = started.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &kurir.id().to_string()])
        .status();
    let _ = kurir.wait();
    all.sort();
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    let mut out = std::io::stdout().lock();
    writeln!(out, "| offered msg/s | achieved msg/s | connections | messages | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |").ok();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|").ok();
    writeln!(
        out,
        "| {rate} | {:.0} | {connections} | {} | {} | {} | {} | {} | {} |",
        all.len() as f64 / elapsed.as_secs_f64(),
        all.len(),
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.9)),
        ms(percentile(&all, 0.99)),
        ms(percentile(&all, 0.999)),
        ms(*all.last().expect("samples")),
    )
    .ok();
}

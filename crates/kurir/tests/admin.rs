//! `kurir admin init-topics` against the real backends: the Tansu broker and the embedded
//! store in a temp dir.

use std::process::Command;

use kurir_testkit::KafkaBroker;

fn kurir(config: &str, dir: &std::path::Path) -> std::process::Output {
    let file = dir.join("kurir.toml");
    std::fs::write(&file, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kurir"))
        .args(["admin", "init-topics", "--config"])
        .arg(&file)
        .env_remove("KURIR_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_topics_creates_the_kafka_topics_with_their_partitions() {
    let broker = KafkaBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[queue]\nbackend = \"kafka\"\npartitions = 6\nretry_partitions = 2\nretry_tiers = [\"1m\", \"1h\"]\n\
         [queue.kafka]\nbrokers = \"{}\"\nlinger = \"0s\"\n",
        broker.bootstrap_servers()
    );
    for _ in 0..2 {
        // Twice: existing topics are fine.
        let out = kurir(&config, dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("kurir.mail (6 partitions)"), "{stdout}");
    }
    assert_eq!(broker.partition_count("kurir.mail").await.unwrap(), Some(6));
    assert_eq!(
        broker.partition_count("kurir.retry.1h").await.unwrap(),
        Some(2)
    );
    assert_eq!(
        broker.partition_count("kurir.events").await.unwrap(),
        Some(8)
    );
}

#[test]
fn init_topics_on_the_embedded_queue_writes_under_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!("[node]\ndata_dir = \"{}\"\n", data.display());
    let out = kurir(&config, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("queue").is_dir());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kurir.retry.6h (8 partitions)"), "{stdout}");
}

#[test]
fn a_bad_queue_setting_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = kurir(
        "[queue]\nbackend = \"kafka\"\ndrain_timeout = \"1m\"\n",
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("queue.drain_timeout"), "{stderr}");
}

//! The `kurir-loadtest` binary: `sink` and `send` as two processes, their JSON reports, and
//! `scenario` with its exit code.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kurir-loadtest");
const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Kills the child if the test fails first.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_json(child: &mut Killed) -> (bool, Value) {
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kurir-loadtest did not finish");
        std::thread::sleep(POLL);
    };
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (status.success(), json)
}

#[test]
fn sink_and_send_as_processes_agree_in_their_json_reports() {
    let mut sink = Killed(
        Command::new(BIN)
            .args(["sink", "--listen", "127.0.0.1:0", "--until-messages", "50"])
            .args(["--stats-interval", "0s", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(sink.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("sink listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();

    let mut send = Killed(
        Command::new(BIN)
            .args([
                "send", "--smtp", &addr, "-n", "50", "-c", "2", "--rcpts", "2",
            ])
            .args(["--json", "--no-progress", "--run-id", "cli-test"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (ok, sent) = wait_json(&mut send);
    assert!(ok, "{sent:#}");
    assert_eq!(sent["run_id"], "cli-test");
    assert_eq!(sent["accepted"], 50, "{sent:#}");
    assert_eq!(sent["recipients_accepted"], 100, "{sent:#}");

    let (ok, seen) = wait_json(&mut sink);
    assert!(ok, "{seen:#}");
    assert_eq!(seen["messages"], 50, "{seen:#}");
    assert_eq!(seen["distinct_ids"], 50);
    assert_eq!(seen["distinct_deliveries"], 100);
    assert_eq!(seen["duplicates"], 0);
}

#[test]
fn a_scenario_that_meets_its_goal_exits_0() {
    let smoke = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/smoke.toml");
    let mut run = Killed(
        Command::new(BIN)
            .args(["scenario", smoke, "--target", "sink", "-n", "30", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (ok, report) = wait_json(&mut run);
    assert!(ok, "{report:#}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["sink"]["distinct_ids"], 30);
}

#[test]
fn a_bad_fault_is_refused_with_exit_2() {
    let output = Command::new(BIN)
        .args(["sink", "--reject", "550:5.1.1:2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("probability"));
}

//! The scenario files: every one parses and builds its sink, and the small ones run
//! against their own sink (`--target sink`) and meet their goal.

use std::path::PathBuf;

use indicatif::ProgressBar;
use kurir_loadtest::scenario::{self, Overrides, SINK_TARGET, Scenario};

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn load(name: &str) -> Scenario {
    Scenario::load(&scenarios_dir().join(name)).unwrap()
}

#[test]
fn every_scenario_file_parses() {
    let mut names: Vec<String> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "burst-100k.toml",
            "rejects.toml",
            "smoke.toml",
            "steady-2k.toml"
        ]
    );
    for name in &names {
        let scenario = load(name);
        assert_eq!(format!("{}.toml", scenario.name), *name);
        assert!(!scenario.description.is_empty(), "{name}");
        let sink = scenario
            .sink
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no [sink]"));
        sink.config().unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(scenario.goal.settle, "{name}");
    }
}

async fn run_against_its_sink(name: &str, messages: u64) -> scenario::ScenarioReport {
    let overrides = Overrides {
        target: Some(SINK_TARGET.into()),
        messages: Some(messages),
        api_key: None,
    };
    scenario::run(&load(name), &overrides, ProgressBar::hidden())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_passes_against_its_own_sink() {
    let report = run_against_its_sink("smoke.toml", 200).await;
    assert!(report.passed, "{report}");
    let sink = report.sink.as_ref().unwrap();
    assert_eq!(
        (report.send.accepted, sink.distinct_ids),
        (200, 200),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_settles_against_its_own_sink() {
    let report = run_against_its_sink("rejects.toml", 200).await;
    assert!(report.passed, "{report}");
    let sink = report.sink.as_ref().unwrap();
    assert!(sink.rejected_recipients > 0, "{report}");
    assert_eq!(sink.distinct_deliveries, report.send.recipients_accepted);
}

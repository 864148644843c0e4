//! `kurir admin` against the real `kurir serve` (embedded backends): the suppression
//! commands round-trip, the file format imports and exports, the domain controls show up in
//! `domain list`.

mod common;

use common::*;

/// A node running the submit role (and so the gRPC API) with the test keys.
fn node(dir: &std::path::Path) -> Node {
    let config = serve_config_with_grpc(dir, &grpc_with_keys(), "");
    Node::start(&config, "submit", true)
}

/// The table row of `address` in `output`.
fn row<'a>(output: &'a str, address: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.split_whitespace().next() == Some(address))
        .unwrap_or_else(|| panic!("no row for {address}:\n{output}"))
}

/// The first line of a CSV export.
const EXPORT_HEADER: &str = "address,reason,source,created,expires";

#[test]
fn suppression_entries_are_added_checked_listed_exported_and_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node(dir.path());

    let added = node.admin_ok(&[
        "suppression",
        "add",
        "a@one.test",
        "b@one.test",
        "--reason",
        "complaint",
        "--source",
        "test-suite",
    ]);
    assert_eq!(added, "added 2 to the tenant list\n");

    let check = node.admin_ok(&["suppression", "check", "a@one.test", "c@one.test"]);
    assert!(check.starts_with("ADDRESS "), "{check}");
    let a = row(&check, "a@one.test");
    assert!(
        a.contains(" suppressed ") && a.contains("complaint") && a.contains("tenant"),
        "{check}"
    );
    assert!(
        row(&check, "c@one.test").contains("not suppressed"),
        "{check}"
    );
    let check: serde_json::Value = serde_json::from_str(&node.admin_ok(&[
        "suppression",
        "check",
        "a@one.test",
        "c@one.test",
        "--json",
    ]))
    .expect("json");
    assert_eq!(check[0]["suppressed"], true);
    assert_eq!(check[0]["entry"]["source"], "test-suite");
    assert_eq!(check[1]["suppressed"], false);

    let list = node.admin_ok(&["suppression", "list"]);
    assert!(row(&list, "a@one.test").contains("test-suite"), "{list}");
    assert!(row(&list, "b@one.test").contains("never"), "{list}");
    assert!(list.ends_with("2 entries\n"), "{list}");

    // The export: a header, then each entry with its creation time and no expiry.
    let export = node.admin_ok(&["suppression", "export"]);
    let mut lines: Vec<&str> = export.lines().collect();
    assert_eq!(lines.remove(0), EXPORT_HEADER, "{export}");
    lines.sort_unstable();
    assert_eq!(lines.len(), 2, "{export}");
    for (line, address) in lines.iter().zip(["a@one.test", "b@one.test"]) {
        assert!(
            line.starts_with(&format!("{address},complaint,test-suite,20")) && line.ends_with(','),
            "{export}"
        );
    }

    let removed = node.admin_ok(&["suppression", "remove", "a@one.test", "x@one.test"]);
    assert_eq!(removed, "removed 1 of 2 from the tenant list\n");
    let check = node.admin_ok(&["suppression", "check", "a@one.test"]);
    assert!(
        row(&check, "a@one.test").contains("not suppressed"),
        "{check}"
    );

    // The global list: applies to every tenant; the admin key may write it.
    let added = node.admin_ok(&["suppression", "add", "--global", "g@two.test"]);
    assert_eq!(added, "added 1 to the global list\n");
    let check = node.admin_ok(&["suppression", "check", "g@two.test"]);
    let g = row(&check, "g@two.test");
    assert!(g.contains("global") && g.contains("manual"), "{check}");
    let global = node.admin_ok(&["suppression", "list", "--global"]);
    assert!(
        row(&global, "g@two.test").contains("kurir-admin"),
        "{global}"
    );
    let global = node.admin_ok(&["suppression", "export", "--global"]);
    assert!(
        global.starts_with(&format!("{EXPORT_HEADER}\ng@two.test,manual,kurir-admin,")),
        "{global}"
    );
    assert_eq!(global.lines().count(), 2, "{global}");

    // Creation and expiry go in by file and come out by export (JSON lines here).
    let file = dir.path().join("expiring.jsonl");
    std::fs::write(
        &file,
        "{\"address\": \"e@one.test\", \"reason\": \"soft_bounces\", \
         \"created\": \"2026-01-02T03:04:05Z\", \"expires\": \"2099-01-01T00:00:00Z\"}\n",
    )
    .expect("write the file");
    let imported = node.admin_ok(&[
        "suppression",
        "import",
        "--format",
        "jsonl",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(imported, "imported 1 of 1 entries into the tenant list\n");
    let export = node.admin_ok(&["suppression", "export", "--format", "jsonl"]);
    let line = export
        .lines()
        .find(|l| l.contains("e@one.test"))
        .unwrap_or_else(|| panic!("{export}"));
    let entry: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(entry["reason"], "soft-bounces", "{line}");
    assert_eq!(entry["created"], "2026-01-02T03:04:05.000000000Z", "{line}");
    assert_eq!(entry["expires"], "2099-01-01T00:00:00.000000000Z", "{line}");
    assert!(entry.get("scope").is_none(), "{line}");

    let (status, _) = node.stop();
    assert!(status.success());
}

#[test]
fn an_import_of_300_lines_is_listed_in_full_and_exported_in_the_same_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node(dir.path());

    // Plain addresses and CSV lines, a header, a comment and a blank line.
    let mut file = String::from("address,reason,source\n# from the CRM\n\n");
    for i in 0..300 {
        match i % 3 {
            0 => file.push_str(&format!("u{i:03}@import.test\n")),
            1 => file.push_str(&format!("u{i:03}@import.test,unsubscribe\n")),
            _ => file.push_str(&format!("u{i:03}@import.test,hard_bounce,crm, nightly\n")),
        }
    }
    let path = dir.path().join("suppressions.csv");
    std::fs::write(&path, &file).expect("write the file");
    let imported = node.admin_ok(&["suppression", "import", path.to_str().expect("utf-8")]);
    assert_eq!(
        imported,
        "imported 300 of 300 entries into the tenant list\n"
    );

    let list = node.admin_ok(&["suppression", "list"]);
    assert!(list.ends_with("\n300 entries\n"), "{list}");
    assert_eq!(list.lines().count(), 1 + 300 + 1, "header, rows, count");
    assert!(
        row(&list, "u002@import.test").contains("hard_bounce"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&node.admin_ok(&["suppression", "list", "--json"])).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(300));

    let limited = node.admin_ok(&["suppression", "list", "--limit", "10"]);
    assert!(
        limited.ends_with("10 entries (more not shown: raise --limit)\n"),
        "{limited}"
    );

    let export = node.admin_ok(&["suppression", "export"]);
    assert_eq!(export.lines().count(), 1 + 300);
    assert!(export.contains("\nu000@import.test,manual,,20"), "{export}");
    assert!(
        export.contains("\nu001@import.test,unsubscribe,,20"),
        "{export}"
    );
    assert!(
        export.contains("\nu002@import.test,hard-bounce,\"crm, nightly\",20"),
        "{export}"
    );
    // The export imports again as it is (into the global list here).
    let again = dir.path().join("export.csv");
    std::fs::write(&again, &export).expect("write the export");
    let imported = node.admin_ok(&[
        "suppression",
        "import",
        "--global",
        again.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        imported,
        "imported 300 of 300 entries into the global list\n"
    );

    // A bad line fails before anything is sent, naming the file and line.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "ok@import.test\nnot an address,manual\n").expect("write");
    let output = node.admin(
        ADMIN_KEY,
        &["suppression", "import", bad.to_str().expect("utf-8")],
    );
    assert_eq!(output.status.code(), Some(2));
    let line = one_error_line(&output);
    assert!(
        line.starts_with(&format!("error: {}:2: ", bad.display())),
        "{line}"
    );
    let check = node.admin_ok(&["suppression", "check", "ok@import.test"]);
    assert!(
        row(&check, "ok@import.test").contains("not suppressed"),
        "{check}"
    );

    let (status, _) = node.stop();
    assert!(status.success());
}

#[test]
fn domain_pauses_and_bounce_orders_are_listed_until_resumed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node(dir.path());

    assert_eq!(node.admin_ok(&["domain", "list"]), "no domain is paused\n");
    let paused = node.admin_ok(&[
        "domain",
        "pause",
        "Example.TEST",
        "--for",
        "1h",
        "--reason",
        "maintenance window",
    ]);
    assert!(
        paused.starts_with("paused Example.TEST until 20"),
        "{paused}"
    );
    let paused = node.admin_ok(&["domain", "pause", "held.test"]);
    assert_eq!(paused, "paused held.test until resumed\n");
    let bounced = node.admin_ok(&["domain", "bounce", "gone.test", "--reason", "retired"]);
    assert!(
        bounced.starts_with("bouncing mail for gone.test until deliver.max_age"),
        "{bounced}"
    );

    let list = node.admin_ok(&["domain", "list"]);
    assert!(list.starts_with("DOMAIN "), "{list}");
    let example = row(&list, "example.test");
    assert!(
        example.contains("maintenance window") && example.contains("Z "),
        "{list}"
    );
    assert!(row(&list, "held.test").contains("resumed"), "{list}");
    assert!(
        row(&list, "gone.test").contains("bounce: retired"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&node.admin_ok(&["domain", "list", "--json"])).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(3), "{json}");

    assert_eq!(
        node.admin_ok(&["domain", "resume", "example.test"]),
        "resumed example.test\n"
    );
    assert_eq!(
        node.admin_ok(&["domain", "resume", "example.test"]),
        "example.test was not paused\n"
    );
    let list = node.admin_ok(&["domain", "list"]);
    assert!(!list.contains("example.test"), "{list}");
    assert!(list.contains("held.test"), "{list}");

    let (status, _) = node.stop();
    assert!(status.success());
}

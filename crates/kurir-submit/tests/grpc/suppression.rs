//! SuppressionService over a running server: every call, the keys that may make it, the
//! per-call limits, paging, and import/export streaming (the backend-specific flows on
//! both backends).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use kurir_proto::v1::{
    self, AddSuppressionsRequest, CheckSuppressionsRequest, ExportSuppressionsRequest,
    ListSuppressionsRequest, RemoveSuppressionsRequest, SuppressionReason, SuppressionScope,
};
use kurir_queue::Queue;
use kurir_state::State;
use tonic::{Code, Status};

use crate::harness::{ADMIN_KEY, Harness, OTHER_TENANT_KEY, SUBMIT_KEY, SUPPRESSION_KEY};

const GLOBAL: i32 = SuppressionScope::Global as i32;
const TENANT_SCOPE: i32 = SuppressionScope::Unspecified as i32;

fn entry(address: &str) -> v1::Suppression {
    v1::Suppression {
        address: address.into(),
        ..Default::default()
    }
}

fn global(address: &str) -> v1::Suppression {
    v1::Suppression {
        scope: GLOBAL,
        ..entry(address)
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn add<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    key: &str,
    entries: Vec<v1::Suppression>,
) -> Result<u64, Status> {
    let request = AddSuppressionsRequest { entries };
    Ok(h.suppression(key).add(request).await?.into_inner().added)
}

async fn check<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    key: &str,
    addresses: &[&str],
) -> Result<Vec<v1::SuppressionCheck>, Status> {
    let request = CheckSuppressionsRequest {
        addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
    };
    Ok(h.suppression(key)
        .check(request)
        .await?
        .into_inner()
        .results)
}

async fn remove<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    key: &str,
    scope: i32,
    addresses: &[&str],
) -> Result<u64, Status> {
    let request = RemoveSuppressionsRequest {
        scope,
        addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
    };
    Ok(h.suppression(key)
        .remove(request)
        .await?
        .into_inner()
        .removed)
}

async fn list<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    key: &str,
    scope: i32,
    cursor: &str,
    limit: u32,
) -> Result<v1::ListSuppressionsResponse, Status> {
    let request = ListSuppressionsRequest {
        scope,
        cursor: cursor.into(),
        limit,
    };
    Ok(h.suppression(key).list(request).await?.into_inner())
}

async fn import<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    key: &str,
    entries: Vec<v1::Suppression>,
) -> Result<v1::ImportSuppressionsResponse, Status> {
    let stream = tokio_stream::iter(entries);
    Ok(h.suppression(key).import(stream).await?.into_inner())
}

/// Every entry of a list, read through Export.
async fn export<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    key: &str,
    scope: i32,
) -> Result<Vec<v1::Suppression>, Status> {
    let request = ExportSuppressionsRequest { scope };
    let mut stream = h.suppression(key).export(request).await?.into_inner();
    let mut out = Vec::new();
    while let Some(entry) = stream.message().await? {
        out.push(entry);
    }
    Ok(out)
}

/// The code each call gets with `key` (on a tenant-scope request).
async fn codes_with<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    key: &str,
) -> Vec<(&'static str, Code)> {
    fn code<T>(result: Result<T, Status>) -> Code {
        result.err().map_or(Code::Ok, |s| s.code())
    }
    vec![
        ("add", code(add(h, key, vec![entry("a@k.test")]).await)),
        (
            "remove",
            code(remove(h, key, TENANT_SCOPE, &["a@k.test"]).await),
        ),
        ("check", code(check(h, key, &["a@k.test"]).await)),
        ("list", code(list(h, key, TENANT_SCOPE, "", 0).await)),
        (
            "import",
            code(import(h, key, vec![entry("a@k.test")]).await),
        ),
        ("export", code(export(h, key, TENANT_SCOPE).await)),
    ]
}

fn expect_invalid(status: Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "names {field}: {status:?}"
    );
}

#[tokio::test]
async fn every_call_needs_a_key_with_the_suppression_service() {
    let h = Harness::start().await;
    for (key, expected) in [
        ("", Code::Unauthenticated),
        ("kurir-test-unknown-key-0000000000", Code::Unauthenticated),
        (SUBMIT_KEY, Code::PermissionDenied),
    ] {
        for (call, code) in codes_with(&h, key).await {
            assert_eq!(code, expected, "{call} with key {key:?}");
        }
    }
    for key in [SUPPRESSION_KEY, ADMIN_KEY, OTHER_TENANT_KEY] {
        for (call, code) in codes_with(&h, key).await {
            assert_eq!(code, Code::Ok, "{call} with key {key:?}");
        }
    }
}

#[tokio::test]
async fn tenant_keys_may_not_touch_the_global_list() {
    let h = Harness::start().await;
    for key in [SUPPRESSION_KEY, OTHER_TENANT_KEY] {
        let denied = [
            add(&h, key, vec![entry("ok@g.test"), global("a@g.test")])
                .await
                .map(drop),
            remove(&h, key, GLOBAL, &["a@g.test"]).await.map(drop),
            list(&h, key, GLOBAL, "", 0).await.map(drop),
            import(&h, key, vec![global("a@g.test")]).await.map(drop),
            export(&h, key, GLOBAL).await.map(drop),
        ];
        for (i, result) in denied.into_iter().enumerate() {
            let status = result.expect_err("denied");
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "call {i}: {status:?}"
            );
        }
    }
    assert!(export(&h, ADMIN_KEY, GLOBAL).await.unwrap().is_empty());
    assert!(
        export(&h, SUPPRESSION_KEY, TENANT_SCOPE)
            .await
            .unwrap()
            .is_empty(),
        "a refused Add stores none of its entries"
    );
}

#[tokio::test]
async fn the_global_list_is_written_by_admin_keys_and_seen_by_every_tenant() {
    let h = Harness::start().await;
    assert_eq!(
        add(&h, ADMIN_KEY, vec![global("Everyone@G.test")])
            .await
            .unwrap(),
        1
    );
    let seen = check(&h, OTHER_TENANT_KEY, &["Everyone@g.TEST"])
        .await
        .unwrap();
    let entry = seen[0].entry.as_ref().expect("suppressed for globex");
    assert_eq!(
        (entry.address.as_str(), entry.scope),
        ("Everyone@g.test", GLOBAL)
    );
    let listed = list(&h, ADMIN_KEY, GLOBAL, "", 0).await.unwrap();
    assert_eq!(listed.entries.len(), 1);
    assert!(
        list(&h, ADMIN_KEY, TENANT_SCOPE, "", 0)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert_eq!(
        remove(&h, ADMIN_KEY, GLOBAL, &["Everyone@g.test"])
            .await
            .unwrap(),
        1
    );
    let seen = check(&h, OTHER_TENANT_KEY, &["Everyone@g.test"])
        .await
        .unwrap();
    assert_eq!(seen[0].entry, None);
}

#[tokio::test]
async fn add_check_and_remove_many_at_once() {
    let h = Harness::start().await;
    let expires = now_ms() + 3_600_000;
    let complaint = v1::Suppression {
        reason: SuppressionReason::Complaint as i32,
        source: "crm-sync".into(),
        created_unix_ms: 1_700_000_000_000,
        expires_unix_ms: expires,
        ..entry("Ann@Example.TEST")
    };
    let before = now_ms();
    let added = add(&h, SUPPRESSION_KEY, vec![complaint, entry("bob@x.test")]).await;
    assert_eq!(added.unwrap(), 2);

    let asked = [
        "ANN@example.test",
        "Ann@example.test",
        "nobody@x.test",
        "bob@X.test",
    ];
    let results = check(&h, SUPPRESSION_KEY, &asked).await.unwrap();
    let addresses: Vec<_> = results.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(addresses, asked, "one result per address, in request order");
    assert_eq!(results[0].entry, None, "the local part keeps its case");
    let ann = results[1].entry.clone().expect("ann is suppressed");
    assert_eq!(ann.address, "Ann@example.test");
    assert_eq!(ann.reason, SuppressionReason::Complaint as i32);
    assert_eq!(ann.source, "crm-sync");
    assert_eq!(ann.created_unix_ms, 1_700_000_000_000);
    assert_eq!(ann.expires_unix_ms, expires);
    assert_eq!(results[2].entry, None);
    let bob = results[3].entry.clone().expect("bob is suppressed");
    assert_eq!(
        bob.reason,
        SuppressionReason::Manual as i32,
        "the default reason"
    );
    assert!(
        (before..=now_ms()).contains(&bob.created_unix_ms),
        "created now"
    );
    assert_eq!(bob.expires_unix_ms, 0);

    let other = check(&h, OTHER_TENANT_KEY, &asked).await.unwrap();
    assert!(
        other.iter().all(|r| r.entry.is_none()),
        "tenant lists are apart"
    );

    let removed = remove(
        &h,
        SUPPRESSION_KEY,
        TENANT_SCOPE,
        &["Ann@example.test", "x@x.test"],
    );
    assert_eq!(
        removed.await.unwrap(),
        1,
        "only the entries that existed count"
    );
    let results = check(&h, SUPPRESSION_KEY, &asked).await.unwrap();
    assert_eq!(results[1].entry, None);
    assert!(results[3].entry.is_some());
}

#[tokio::test]
async fn limits_and_bad_input_are_refused_naming_the_field() {
    let h = Harness::start().await;
    let many: Vec<_> = (0..1001)
        .map(|i| entry(&format!("u{i}@many.test")))
        .collect();
    expect_invalid(add(&h, SUPPRESSION_KEY, many).await.unwrap_err(), "entries");
    let bad = vec![entry("good@x.test"), entry("not-an-address")];
    expect_invalid(
        add(&h, SUPPRESSION_KEY, bad).await.unwrap_err(),
        "entries[1].address",
    );
    let long = v1::Suppression {
        source: "s".repeat(513),
        ..entry("good@x.test")
    };
    let status = add(&h, SUPPRESSION_KEY, vec![long]).await.unwrap_err();
    expect_invalid(status, "entries[0].source");
    let odd_scope = v1::Suppression {
        scope: 7,
        ..entry("good@x.test")
    };
    let status = add(&h, SUPPRESSION_KEY, vec![odd_scope]).await.unwrap_err();
    expect_invalid(status, "entries[0].scope");
    let status = check(&h, SUPPRESSION_KEY, &["good@x.test"]).await.unwrap();
    assert_eq!(status[0].entry, None, "nothing of a refused Add is stored");

    let thousand: Vec<String> = (0..1000).map(|i| format!("u{i}@many.test")).collect();
    let refs: Vec<&str> = thousand.iter().map(String::as_str).collect();
    assert_eq!(check(&h, SUPPRESSION_KEY, &refs).await.unwrap().len(), 1000);
    let mut over = refs.clone();
    over.push("one@more.test");
    expect_invalid(
        check(&h, SUPPRESSION_KEY, &over).await.unwrap_err(),
        "addresses",
    );
    let status = remove(&h, SUPPRESSION_KEY, TENANT_SCOPE, &over)
        .await
        .unwrap_err();
    expect_invalid(status, "addresses");
    let bad = ["a@x.test", "b@x.test", "@x.test"];
    expect_invalid(
        check(&h, SUPPRESSION_KEY, &bad).await.unwrap_err(),
        "addresses[2]",
    );
    let status = remove(&h, SUPPRESSION_KEY, TENANT_SCOPE, &bad)
        .await
        .unwrap_err();
    expect_invalid(status, "addresses[2]");

    let status = list(&h, SUPPRESSION_KEY, TENANT_SCOPE, "", 1001)
        .await
        .unwrap_err();
    expect_invalid(status, "limit");
    assert!(
        list(&h, SUPPRESSION_KEY, TENANT_SCOPE, "", 1000)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_import_fails_at_a_bad_entry_naming_its_index() {
    let h = Harness::start().await;
    let mut entries: Vec<_> = (0..1200)
        .map(|i| entry(&format!("i{i}@imp.test")))
        .collect();
    entries[700] = entry("i700-at-nowhere");
    let status = import(&h, SUPPRESSION_KEY, entries).await.unwrap_err();
    expect_invalid(status.clone(), "entries[700].address");
    assert!(
        status.message().contains("500 earlier entries were stored"),
        "{status:?}"
    );
    let stored = export(&h, SUPPRESSION_KEY, TENANT_SCOPE).await.unwrap();
    assert_eq!(stored.len(), 500, "the first batch stays; nothing after it");
}

// --- both backends ---------------------------------------------------------------------

/// 250 entries read 100 at a time: every entry exactly once, then an empty cursor.
async fn paging_returns_each_entry_once<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>) {
    let addresses: BTreeSet<String> = (0..250).map(|i| format!("p{i:03}@page.test")).collect();
    let entries = addresses.iter().map(|a| entry(a)).collect();
    assert_eq!(add(h, SUPPRESSION_KEY, entries).await.unwrap(), 250);
    let (mut seen, mut pages, mut cursor) = (Vec::new(), 0, String::new());
    loop {
        let page = list(h, SUPPRESSION_KEY, TENANT_SCOPE, &cursor, 100)
            .await
            .unwrap();
        assert!(page.entries.len() <= 100, "page of {}", page.entries.len());
        seen.extend(page.entries.into_iter().map(|e| e.address));
        pages += 1;
        assert!(pages <= 250, "the cursor never ends");
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(seen.len(), 250, "no entry twice");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), addresses);
    assert!(pages >= 3, "{pages} pages of at most 100");
    let first = list(h, SUPPRESSION_KEY, TENANT_SCOPE, "", 0).await.unwrap();
    assert_eq!(first.entries.len(), 100, "limit 0 means 100");
}

/// 2,000 entries streamed in, then streamed back out unchanged.
async fn import_then_export_round_trips<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>) {
    let reasons = [
        SuppressionReason::HardBounce,
        SuppressionReason::SoftBounces,
        SuppressionReason::Complaint,
        SuppressionReason::Unsubscribe,
        SuppressionReason::Manual,
    ];
    let expires = now_ms() + 86_400_000;
    let entries: Vec<_> = (0..2000)
        .map(|i| v1::Suppression {
            reason: reasons[i % reasons.len()] as i32,
            source: format!("import {i}"),
            created_unix_ms: 1_700_000_000_000 + i as i64,
            expires_unix_ms: if i % 2 == 0 { expires } else { 0 },
            ..entry(&format!("bulk{i}@import.test"))
        })
        .collect();
    let summary = import(h, SUPPRESSION_KEY, entries.clone()).await.unwrap();
    assert_eq!((summary.read, summary.stored), (2000, 2000));
    let exported: BTreeMap<_, _> = export(h, SUPPRESSION_KEY, TENANT_SCOPE)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.address.ends_with("@import.test"))
        .map(|e| (e.address.clone(), e))
        .collect();
    let expected: BTreeMap<_, _> = entries
        .into_iter()
        .map(|e| (e.address.clone(), e))
        .collect();
    assert_eq!(exported.len(), 2000);
    assert!(
        exported == expected,
        "exported entries differ from the imported ones"
    );
    let other = export(h, OTHER_TENANT_KEY, TENANT_SCOPE).await.unwrap();
    assert!(other.is_empty(), "imported into the key's own tenant only");

    // Less than a batch: 3 entries replace imported ones, 4 are new.
    let more: Vec<_> = (1997..2004)
        .map(|i| v1::Suppression {
            source: "second import".into(),
            ..entry(&format!("bulk{i}@import.test"))
        })
        .collect();
    let summary = import(h, SUPPRESSION_KEY, more).await.unwrap();
    assert_eq!((summary.read, summary.stored), (7, 7));
    let exported = export(h, SUPPRESSION_KEY, TENANT_SCOPE).await.unwrap();
    let imported: Vec<_> = exported
        .iter()
        .filter(|e| e.address.ends_with("@import.test"))
        .collect();
    assert_eq!(imported.len(), 2004);
    let second = imported.iter().filter(|e| e.source == "second import");
    assert_eq!(
        second.count(),
        7,
        "the short import was stored, replacing entries"
    );
}

#[tokio::test]
async fn paging_through_250_entries_100_at_a_time_returns_each_once() {
    paging_returns_each_entry_once(&Harness::start().await).await;
}

#[tokio::test]
async fn two_thousand_entries_import_and_export_unchanged() {
    import_then_export_round_trips(&Harness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_and_redis_paging_and_bulk_streams_work() {
    let h = Harness::cluster(|_| {}).await;
    paging_returns_each_entry_once(&h).await;
    import_then_export_round_trips(&h).await;
    let added = add(&h, ADMIN_KEY, vec![global("g@cluster.test")]).await;
    assert_eq!(added.unwrap(), 1);
    let seen = check(&h, OTHER_TENANT_KEY, &["g@cluster.test"])
        .await
        .unwrap();
    assert!(
        seen[0].entry.is_some(),
        "the global list reaches every tenant"
    );
}

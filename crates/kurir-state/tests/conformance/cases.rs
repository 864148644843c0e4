//! The specification every state backend meets.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use kurir_core::{Address, BounceClass, Domain, MessageId};
use kurir_state::{
    Claim, DomainCounter, DomainCounters, DomainPause, PauseAction, Reason, Scope, Settlement,
    State, StateError, Suppression, Tenant, TrackEntry, TrackKind,
};
use kurir_testkit::wait_for;

use crate::harness::Harness;

const WAIT: Duration = Duration::from_secs(10);

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn tenant(s: &str) -> Tenant {
    Tenant::new(s).unwrap()
}

fn entry(scope: Scope, address: &str, reason: Reason) -> Suppression {
    Suppression {
        scope,
        address: addr(address),
        reason,
        source: "conformance".into(),
        created: SystemTime::now(),
        expires: None,
    }
}

fn acme() -> Scope {
    Scope::Tenant(tenant("acme"))
}

pub async fn suppression_is_scoped_per_tenant_with_a_global_scope<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    s.suppress(&[
        entry(acme(), "a@x.test", Reason::Manual),
        entry(Scope::Global, "g@y.test", Reason::Complaint),
    ])
    .await
    .unwrap();
    // Another spelling of the domain is the same address.
    let probe = [addr("a@X.TEST"), addr("g@y.test"), addr("other@x.test")];
    let found = s.check_suppressed(&tenant("acme"), &probe).await.unwrap();
    assert_eq!(
        found[0].as_ref().map(|e| (e.reason, e.scope.clone())),
        Some((Reason::Manual, acme()))
    );
    assert_eq!(found[1].as_ref().map(|e| e.reason), Some(Reason::Complaint));
    assert!(found[2].is_none());
    let other = s.check_suppressed(&tenant("globex"), &probe).await.unwrap();
    assert!(other[0].is_none(), "tenants are kept apart");
    assert!(
        other[1].is_some(),
        "the global scope applies to every tenant"
    );

    let removed = s
        .unsuppress(&acme(), &[addr("a@x.test"), addr("never@x.test")])
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(
        s.check_suppressed(&tenant("acme"), &probe[..1])
            .await
            .unwrap()[0]
            .is_none()
    );
    assert_eq!(
        s.check_suppressed(&tenant("acme"), &[]).await.unwrap(),
        vec![]
    );
}

pub async fn expired_suppressions_are_ignored<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let now = SystemTime::now();
    let mut past = entry(acme(), "old@x.test", Reason::Unsubscribe);
    past.expires = Some(now - Duration::from_secs(1));
    let mut soon = entry(acme(), "soon@x.test", Reason::Unsubscribe);
    soon.expires = Some(now + Duration::from_millis(1500));
    s.suppress(&[past, soon]).await.unwrap();
    let probe = [addr("old@x.test"), addr("soon@x.test")];
    let found = s.check_suppressed(&tenant("acme"), &probe).await.unwrap();
    assert!(found[0].is_none() && found[1].is_some());
    wait_for("the entry to expire", WAIT, || async {
        s.check_suppressed(&tenant("acme"), &probe[1..])
            .await
            .unwrap()[0]
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
}

pub async fn listing_pages_through_every_entry_once<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let entries: Vec<_> = (0..2500)
        .map(|i| entry(acme(), &format!("user{i}@list.test"), Reason::Manual))
        .collect();
    s.suppress(&entries).await.unwrap();
    s.suppress(&[entry(Scope::Global, "global@list.test", Reason::Manual)])
        .await
        .unwrap();
    let (mut cursor, mut seen, mut count) = (String::new(), BTreeSet::new(), 0);
    loop {
        let page = s.list_suppressions(&acme(), &cursor, 100).await.unwrap();
        assert!(page.items.len() <= 100);
        count += page.items.len();
        seen.extend(page.items.iter().map(|e| e.address.to_string()));
        assert!(page.items.iter().all(|e| e.scope == acme()));
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(
        (seen.len(), count),
        (2500, 2500),
        "every entry exactly once"
    );
    let global = s.list_suppressions(&Scope::Global, "", 100).await.unwrap();
    assert_eq!(global.items.len(), 1);
}

pub async fn unknown_tenants_and_bad_input_are_refused<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let stranger = tenant("nobody");
    let err = s
        .check_suppressed(&stranger, &[addr("a@x.test")])
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::UnknownTenant(_)), "{err:?}");
    assert!(!err.is_retryable());
    let err = s
        .suppress(&[entry(
            Scope::Tenant(stranger.clone()),
            "a@x.test",
            Reason::Manual,
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::UnknownTenant(_)), "{err:?}");
    let err = s
        .claim_idempotency_key(&tenant("acme"), "")
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Invalid { .. }), "{err:?}");
    let err = s
        .claim_idempotency_key(&tenant("acme"), &"k".repeat(10_000))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Invalid { .. }), "{err:?}");
    assert!(Tenant::new("Not Valid").is_err());
}

pub async fn hard_bounces_suppress_at_once_and_soft_ones_at_the_threshold<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let acme_t = tenant("acme");
    let hard = s
        .record_bounce(
            &acme_t,
            &addr("gone@b.test"),
            BounceClass::BadMailbox,
            "event-1",
        )
        .await
        .unwrap();
    assert!(hard.suppressed);
    let found = s
        .check_suppressed(&acme_t, &[addr("gone@b.test")])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(
        (found.reason, found.source.as_str(), found.scope),
        (Reason::HardBounce, "event-1", acme())
    );

    let full = addr("full@b.test");
    for n in 1..=2 {
        let v = s
            .record_bounce(&acme_t, &full, BounceClass::Quota, "event")
            .await
            .unwrap();
        assert_eq!((v.soft_bounces, v.suppressed), (n, false));
    }
    assert!(
        s.check_suppressed(&acme_t, std::slice::from_ref(&full))
            .await
            .unwrap()[0]
            .is_none()
    );
    let third = s
        .record_bounce(&acme_t, &full, BounceClass::Quota, "event-3")
        .await
        .unwrap();
    assert_eq!((third.soft_bounces, third.suppressed), (3, true));
    let found = s
        .check_suppressed(&acme_t, &[full])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(found.reason, Reason::SoftBounces);
    // Soft bounces are counted per tenant and address.
    let other = s
        .record_bounce(
            &tenant("globex"),
            &addr("full@b.test"),
            BounceClass::Quota,
            "e",
        )
        .await
        .unwrap();
    assert_eq!(other.soft_bounces, 1);
}

pub async fn domain_counters_count<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let d = Domain::parse("count.test").unwrap();
    for counter in [
        DomainCounter::Delivered,
        DomainCounter::Delivered,
        DomainCounter::Deferred,
        DomainCounter::Bounced,
    ] {
        s.count_domain(&d, counter).await.unwrap();
    }
    let c = s.domain_counters(&d).await.unwrap();
    assert_eq!((c.delivered, c.deferred, c.bounced), (2, 1, 1));
    let none = s
        .domain_counters(&Domain::parse("quiet.test").unwrap())
        .await
        .unwrap();
    assert_eq!((none.delivered, none.deferred, none.bounced), (0, 0, 0));
}

pub async fn the_ledger_remembers_deliveries_until_its_ttl<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let (id, other) = (MessageId::new(), MessageId::new());
    s.mark_delivered(id, &[addr("a@l.test"), addr("b@l.test")])
        .await
        .unwrap();
    let probe = [addr("a@l.test"), addr("b@L.TEST"), addr("c@l.test")];
    assert_eq!(s.delivered(id, &probe).await.unwrap(), [true, true, false]);
    assert_eq!(
        s.delivered(other, &probe).await.unwrap(),
        [false, false, false]
    );
    // ledger_ttl is 1s in these tests.
    wait_for("the ledger entry to expire", WAIT, || async {
        (s.delivered(id, &probe[..1]).await.unwrap() == [false]).then_some(())
    })
    .await
    .unwrap();
}

pub async fn idempotency_keys_return_the_first_result<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let t = tenant("acme");
    assert_eq!(
        s.claim_idempotency_key(&t, "order-1").await.unwrap(),
        Claim::New
    );
    assert_eq!(
        s.claim_idempotency_key(&t, "order-1").await.unwrap(),
        Claim::Pending
    );
    s.complete_idempotency_key(&t, "order-1", b"01J0000000000000000000000A")
        .await
        .unwrap();
    assert_eq!(
        s.claim_idempotency_key(&t, "order-1").await.unwrap(),
        Claim::Done(b"01J0000000000000000000000A".to_vec())
    );
    assert_eq!(
        s.claim_idempotency_key(&tenant("globex"), "order-1")
            .await
            .unwrap(),
        Claim::New
    );
    // A released claim (the submission failed) can be claimed again.
    assert_eq!(
        s.claim_idempotency_key(&t, "order-2").await.unwrap(),
        Claim::New
    );
    s.release_idempotency_key(&t, "order-2").await.unwrap();
    assert_eq!(
        s.claim_idempotency_key(&t, "order-2").await.unwrap(),
        Claim::New
    );
}

pub async fn concurrent_claims_have_one_winner<H: Harness>() {
    let h = H::start().await;
    let claims = (0..32).map(|_| {
        let s = h.state();
        tokio::spawn(async move {
            s.claim_idempotency_key(&tenant("acme"), "race")
                .await
                .unwrap()
        })
    });
    let results: Vec<Claim> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        results.iter().filter(|c| **c == Claim::New).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|c| matches!(c, Claim::New | Claim::Pending))
    );
}

pub async fn tracking_keeps_a_bounded_history<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let id = MessageId::new();
    let at = |i: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + i);
    let accepted = TrackEntry {
        at: at(0),
        kind: TrackKind::Accepted,
        recipient: None,
        detail: "smtp".into(),
    };
    s.track(id, &accepted).await.unwrap();
    for i in 1..=20 {
        let attempt = TrackEntry {
            at: at(i),
            kind: TrackKind::Deferred,
            recipient: Some("r@t.test".into()),
            detail: format!("451 4.7.1 try {i}"),
        };
        s.track(id, &attempt).await.unwrap();
    }
    let history = s.history(id).await.unwrap();
    assert_eq!(history.len(), 10, "tracking_max_entries is 10");
    assert_eq!(history[0], accepted, "the first entry is kept");
    assert_eq!(
        history[9].detail, "451 4.7.1 try 20",
        "the newest entries are kept, oldest first"
    );
    assert!(history.windows(2).all(|w| w[0].at < w[1].at));
    assert!(s.history(MessageId::new()).await.unwrap().is_empty());
}

pub async fn settling_an_attempt_writes_ledger_counters_and_history<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let id = MessageId::new();
    let domain = Domain::parse("settle.test").unwrap();
    let at = |i: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + i);
    let line = |i: u64, kind, rcpt: &str| TrackEntry {
        at: at(i),
        kind,
        recipient: Some(rcpt.into()),
        detail: format!("reply {i}"),
    };
    let first = [
        line(1, TrackKind::Delivered, "a@settle.test"),
        line(2, TrackKind::Deferred, "b@settle.test"),
    ];
    s.settle(&Settlement {
        id,
        domain: &domain,
        delivered: &[addr("a@settle.test")],
        counts: DomainCounters {
            delivered: 1,
            deferred: 1,
            bounced: 0,
        },
        history: &first,
    })
    .await
    .unwrap();
    let probe = [addr("a@settle.test"), addr("b@settle.test")];
    assert_eq!(s.delivered(id, &probe).await.unwrap(), [true, false]);
    let c = s.domain_counters(&domain).await.unwrap();
    assert_eq!((c.delivered, c.deferred, c.bounced), (1, 1, 0));
    assert_eq!(s.history(id).await.unwrap(), first);

    // A later attempt with more entries than the history keeps, in one call: the first
    // entry stays, then the newest.
    let later: Vec<TrackEntry> = (3..=14)
        .map(|i| line(i, TrackKind::Bounced, "b@settle.test"))
        .collect();
    s.settle(&Settlement {
        id,
        domain: &domain,
        delivered: &[],
        counts: DomainCounters {
            delivered: 0,
            deferred: 0,
            bounced: 12,
        },
        history: &later,
    })
    .await
    .unwrap();
    let history = s.history(id).await.unwrap();
    assert_eq!(history.len(), 10, "tracking_max_entries is 10");
    assert_eq!(history[0], first[0]);
    assert_eq!(history[1..], later[3..]);
    let c = s.domain_counters(&domain).await.unwrap();
    assert_eq!((c.delivered, c.deferred, c.bounced), (1, 1, 12));
    assert_eq!(s.delivered(id, &probe).await.unwrap(), [true, false]);

    // Nothing to settle is not an error; a single track afterwards appends after them.
    s.settle(&Settlement {
        id,
        domain: &domain,
        delivered: &[],
        counts: DomainCounters::default(),
        history: &[],
    })
    .await
    .unwrap();
    s.track(id, &line(15, TrackKind::Delivered, "b@settle.test"))
        .await
        .unwrap();
    let history = s.history(id).await.unwrap();
    assert_eq!(history.len(), 10);
    assert_eq!(history[9].detail, "reply 15");
    assert_eq!(history[0], first[0]);
}

pub async fn domains_pause_and_resume<H: Harness>() {
    let h = H::start().await;
    let s = h.state();
    let (a, b) = (
        Domain::parse("a.test").unwrap(),
        Domain::parse("b.test").unwrap(),
    );
    s.pause_domain(&DomainPause {
        domain: a.clone(),
        until: None,
        reason: "incident".into(),
        action: PauseAction::Hold,
    })
    .await
    .unwrap();
    let until = SystemTime::now() + Duration::from_millis(1500);
    s.pause_domain(&DomainPause {
        domain: b.clone(),
        until: Some(until),
        reason: "cool down".into(),
        action: PauseAction::Hold,
    })
    .await
    .unwrap();
    let paused: BTreeSet<_> = s
        .paused_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.domain)
        .collect();
    assert_eq!(paused, BTreeSet::from([a.clone(), b.clone()]));
    assert!(s.resume_domain(&a).await.unwrap());
    assert!(
        !s.resume_domain(&a).await.unwrap(),
        "resuming twice reports it was not paused"
    );
    wait_for("the timed pause to end", WAIT, || async {
        s.paused_domains().await.unwrap().is_empty().then_some(())
    })
    .await
    .unwrap();
}

pub async fn bounce_orders_round_trip<H: Harness>() {
    let mut h = H::start().await;
    let s = h.state();
    let order = DomainPause {
        domain: Domain::parse("gone.test").unwrap(),
        until: Some(SystemTime::now() + Duration::from_secs(3600)),
        reason: "domain retired\twith a tab".into(),
        action: PauseAction::Bounce,
    };
    let hold = DomainPause {
        domain: Domain::parse("held.test").unwrap(),
        until: None,
        reason: "incident".into(),
        action: PauseAction::Hold,
    };
    s.pause_domain(&order).await.unwrap();
    s.pause_domain(&hold).await.unwrap();
    let mut read = s.paused_domains().await.unwrap();
    read.sort_by(|a, b| a.domain.as_str().cmp(b.domain.as_str()));
    assert_eq!(read, [order.clone(), hold.clone()], "read back exactly");
    drop(s);
    h.restart().await;
    let s = h.state();
    let mut read = s.paused_domains().await.unwrap();
    read.sort_by(|a, b| a.domain.as_str().cmp(b.domain.as_str()));
    assert_eq!(read, [order.clone(), hold], "kept across a restart");
    // A later pause of the domain replaces the order, action included.
    let held_again = DomainPause {
        action: PauseAction::Hold,
        ..order.clone()
    };
    s.pause_domain(&held_again).await.unwrap();
    let now_held = s
        .paused_domains()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.domain == order.domain);
    assert_eq!(now_held, Some(held_again));
    assert!(s.resume_domain(&order.domain).await.unwrap());
}

pub async fn state_survives_a_restart<H: Harness>() {
    let mut h = H::start().await;
    let s = h.state();
    let id = MessageId::new();
    s.suppress(&[entry(acme(), "kept@r.test", Reason::Complaint)])
        .await
        .unwrap();
    assert_eq!(
        s.claim_idempotency_key(&tenant("acme"), "k").await.unwrap(),
        Claim::New
    );
    s.complete_idempotency_key(&tenant("acme"), "k", b"result")
        .await
        .unwrap();
    let d = Domain::parse("paused.test").unwrap();
    s.pause_domain(&DomainPause {
        domain: d.clone(),
        until: None,
        reason: "x".into(),
        action: PauseAction::Hold,
    })
    .await
    .unwrap();
    s.track(
        id,
        &TrackEntry {
            at: SystemTime::now(),
            kind: TrackKind::Accepted,
            recipient: None,
            detail: String::new(),
        },
    )
    .await
    .unwrap();
    drop(s);
    h.restart().await;
    let s = h.state();
    assert!(
        s.check_suppressed(&tenant("acme"), &[addr("kept@r.test")])
            .await
            .unwrap()[0]
            .is_some()
    );
    assert_eq!(
        s.claim_idempotency_key(&tenant("acme"), "k").await.unwrap(),
        Claim::Done(b"result".to_vec())
    );
    assert_eq!(s.paused_domains().await.unwrap().len(), 1);
    assert_eq!(s.history(id).await.unwrap().len(), 1);
}

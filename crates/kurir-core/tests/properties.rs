//! Property tests for address and domain parsing: normalisation is idempotent, case and
//! IDNA spelling do not change identity, and no input makes the parsers panic.

use kurir_core::{Address, Domain, MessageId, RoutingKey};
use proptest::prelude::*;

/// A valid LDH label. Labels with `--` in positions 3–4 are reserved for A-labels
/// (IDNA2008 / UTS #46 CheckHyphens), so the generator leaves them out.
fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?"
        .prop_filter("reserved hyphens", |l| l.get(2..4) != Some("--"))
}

fn domain() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|labels| format!("{}.test", labels.join(".")))
}

fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-zA-Z0-9_-]{1,10}){0,2}",
        "[a-zA-Z0-9äöüßçé用户]{1,10}",
        "[ a-zA-Z0-9@\"\\\\(),:;<>]{1,15}",
    ]
}

proptest! {
    #[test]
    fn parsers_never_panic(input in any::<String>()) {
        let _ = Address::parse(&input);
        let _ = Domain::parse(&input);
        let _ = input.parse::<RoutingKey>();
        let _ = input.parse::<MessageId>();
    }

    #[test]
    fn parsers_never_panic_on_address_like_bytes(input in "[a-zA-Z0-9@.\"\\\\ \\[\\]ä-]{0,80}") {
        let _ = Address::parse(&input);
    }

    #[test]
    fn domain_normalisation_is_idempotent_and_case_blind(d in domain()) {
        let parsed = Domain::parse(&d).unwrap();
        prop_assert_eq!(parsed.as_str(), d.to_ascii_lowercase());
        prop_assert_eq!(Domain::parse(parsed.as_str()).unwrap(), parsed.clone());
        prop_assert_eq!(Domain::parse(&d.to_ascii_uppercase()).unwrap(), parsed);
    }

    // `xn--` is the one prefix with hyphens in positions 3-4 that is allowed: an A-label,
    // valid whenever its rest is valid Punycode (e.g. `xn--cla`), so it is not generated.
    #[test]
    fn reserved_hyphen_labels_are_refused(a in "[a-wyz][a-z]|x[a-mo-z]", b in "[a-z]{1,5}") {
        let reserved = format!("{a}--{b}.test");
        prop_assert!(Domain::parse(&reserved).is_err());
    }

    #[test]
    fn unicode_and_ace_spellings_are_one_domain(word in "[a-zäöüéñ]{1,12}") {
        let unicode = format!("{word}.test");
        let parsed = Domain::parse(&unicode).unwrap();
        prop_assert!(parsed.as_str().is_ascii());
        prop_assert_eq!(Domain::parse(parsed.as_str()).unwrap(), parsed.clone());
        prop_assert_eq!(Domain::parse(&parsed.to_unicode()).unwrap(), parsed);
    }

    #[test]
    fn address_display_parses_back_to_itself(local in local_part(), d in domain()) {
        let quoted = format!("\"{}\"", local.replace('\\', "\\\\").replace('"', "\\\""));
        let addr = Address::parse(&format!("{quoted}@{d}")).unwrap();
        prop_assert_eq!(addr.local_part(), local.as_str());
        let again = Address::parse(&addr.to_string()).unwrap();
        prop_assert_eq!(&again, &addr);
        prop_assert_eq!(again.to_string(), addr.to_string());
        prop_assert_eq!(addr.needs_smtputf8(), !local.is_ascii());
    }

    #[test]
    fn routing_keys_round_trip(d in domain(), shards in 1u16..64) {
        let key = RoutingKey::for_message(Domain::parse(&d).unwrap(), shards, MessageId::new());
        prop_assert_eq!(key.to_string().parse::<RoutingKey>().unwrap(), key.clone());
        prop_assert!(key.shard().is_none_or(|s| s < shards));
    }
}

//! Tests for [`super::parse_command`]: one per rule the module docs promise.

use super::*;
use proptest::prelude::*;

fn parse(line: &str) -> Result<Command, CommandError> {
    parse_command(line.as_bytes())
}

fn mail(line: &str) -> (Option<Address>, MailParams) {
    match parse(line) {
        Ok(Command::Mail { from, params }) => (from, params),
        other => panic!("{line:?}: {other:?}"),
    }
}

fn rcpt(line: &str) -> (Address, RcptParams) {
    match parse(line) {
        Ok(Command::Rcpt { to, params }) => (to, params),
        other => panic!("{line:?}: {other:?}"),
    }
}

fn code(line: &str) -> (u16, Option<(u8, u16, u16)>) {
    let reply = parse(line).unwrap_err().reply();
    (reply.code, reply.enhanced)
}

#[test]
fn simple_commands() {
    let cases: &[(&str, Command)] = &[
        (
            "EHLO client.test",
            Command::Ehlo {
                host: "client.test".into(),
            },
        ),
        (
            "helo client.test",
            Command::Helo {
                host: "client.test".into(),
            },
        ),
        ("DATA", Command::Data),
        ("RSET", Command::Rset),
        ("NOOP", Command::Noop),
        ("NOOP anything", Command::Noop),
        ("QUIT", Command::Quit),
        ("STARTTLS", Command::StartTls),
        (
            "BDAT 1000",
            Command::Bdat {
                size: 1000,
                last: false,
            },
        ),
        (
            "BDAT 0 LAST",
            Command::Bdat {
                size: 0,
                last: true,
            },
        ),
        (
            "VRFY user",
            Command::Vrfy {
                argument: "user".into(),
            },
        ),
        (
            "EXPN list",
            Command::Expn {
                argument: "list".into(),
            },
        ),
        ("HELP", Command::Help { topic: None }),
        (
            "HELP MAIL",
            Command::Help {
                topic: Some("MAIL".into()),
            },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line).as_ref(), Ok(want), "{line:?}");
    }
}

#[test]
fn mail_from_with_all_parameters() {
    let (from, params) = mail(
        "MAIL FROM:<Sender@Example.TEST> SIZE=1234 BODY=8bitmime RET=HDRS ENVID=id+2B1 AUTH=<>",
    );
    assert_eq!(from.unwrap().to_string(), "Sender@example.test");
    assert_eq!(params.size, Some(1234));
    assert_eq!(params.body, BodyType::EightBitMime);
    assert_eq!(params.ret, Some(Ret::Headers));
    assert_eq!(params.envid.as_deref(), Some("id+1"));
    assert_eq!(params.auth.as_deref(), Some("<>"));
    assert!(!params.smtputf8);
    let (_, params) = mail("MAIL FROM:<a@b.test> BODY=BINARYMIME SMTPUTF8 RET=FULL");
    assert_eq!(params.body, BodyType::BinaryMime);
    assert_eq!(params.ret, Some(Ret::Full));
    assert!(params.smtputf8);
}

#[test]
fn null_sender_only_for_mail() {
    assert_eq!(mail("MAIL FROM:<>"), (None, MailParams::default()));
    assert_eq!(mail("MAIL FROM: <> SIZE=10").1.size, Some(10));
    assert_eq!(
        parse("RCPT TO:<>"),
        Err(CommandError::Address(AddressError::Empty))
    );
    assert_eq!(code("RCPT TO:<>"), (553, Some((5, 1, 3))));
}

#[test]
fn quoted_local_parts_and_source_routes() {
    let (to, _) = rcpt(r#"RCPT TO:<"john doe"@example.test>"#);
    assert_eq!(to.local_part(), "john doe");
    let (to, _) = rcpt(r#"RCPT TO:<"a>b\"c"@example.test>"#);
    assert_eq!(to.local_part(), r#"a>b"c"#);
    let (to, _) = rcpt("RCPT TO:<@relay.test,@other.test:user@example.test>");
    assert_eq!(to.to_string(), "user@example.test");
}

#[test]
fn rcpt_dsn_parameters() {
    let (to, params) =
        rcpt("RCPT TO:<user@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user+40example.test");
    assert_eq!(to.to_string(), "user@example.test");
    let notify = params.notify.unwrap();
    assert!(notify.success && notify.failure && !notify.delay);
    let orcpt = params.orcpt.unwrap();
    assert_eq!(
        (orcpt.addr_type.as_str(), orcpt.address.as_str()),
        ("rfc822", "user@example.test")
    );
    assert_eq!(
        rcpt("RCPT TO:<u@e.test> NOTIFY=NEVER").1.notify,
        Some(Notify::NEVER)
    );
}

#[test]
fn bad_addresses_say_why() {
    assert_eq!(
        parse("MAIL FROM:<user@[192.0.2.1]>"),
        Err(CommandError::Address(AddressError::AddressLiteral))
    );
    assert!(matches!(
        parse("RCPT TO:<a..b@example.test>"),
        Err(CommandError::Address(_))
    ));
    assert!(matches!(
        parse("RCPT TO:<nobody>"),
        Err(CommandError::Address(_))
    ));
    assert!(matches!(
        parse("MAIL FROM:<postmaster>"),
        Err(CommandError::Address(_))
    ));
    assert!(matches!(
        parse("RCPT TO:<a@-bad.test>"),
        Err(CommandError::Address(_))
    ));
    assert!(parse("MAIL FROM:user@example.test").is_err());
    assert!(parse("MAIL FROM:<user@example.test").is_err());
}

#[test]
fn non_ascii_sender_needs_smtputf8() {
    assert_eq!(
        parse("MAIL FROM:<用户@例子.test>"),
        Err(CommandError::Utf8WithoutSmtputf8)
    );
    assert_eq!(code("MAIL FROM:<用户@例子.test>"), (553, Some((5, 6, 7))));
    // A U-label domain is non-ASCII on the wire too (RFC 6531 §3.4).
    assert_eq!(
        parse("MAIL FROM:<info@bücher.test>"),
        Err(CommandError::Utf8WithoutSmtputf8)
    );
    let (from, params) = mail("MAIL FROM:<用户@例子.test> SMTPUTF8");
    assert!(from.unwrap().needs_smtputf8() && params.smtputf8);
    // For RCPT the session checks, since SMTPUTF8 was given on MAIL.
    assert!(rcpt("RCPT TO:<用户@例子.test>").0.needs_smtputf8());
}

#[test]
fn unsupported_parameters_get_555() {
    for line in [
        "MAIL FROM:<a@b.test> REQUIRETLS",
        "MAIL FROM:<a@b.test> MT-PRIORITY=3",
        "MAIL FROM:<a@b.test> HOLDFOR=10",
        "MAIL FROM:<a@b.test> XFOO=1",
        "MAIL FROM:<a@b.test> NOTIFY=NEVER",
        "RCPT TO:<a@b.test> SIZE=10",
        "RCPT TO:<a@b.test> RRVS=2030-01-01T00:00:00Z",
    ] {
        assert!(
            matches!(parse(line), Err(CommandError::UnsupportedParameter(_))),
            "{line:?}: {:?}",
            parse(line)
        );
        assert_eq!(code(line), (555, Some((5, 5, 4))), "{line:?}");
    }
}

#[test]
fn duplicate_and_malformed_parameters_get_501() {
    for line in [
        "MAIL FROM:<a@b.test> SIZE=1 SIZE=2",
        "MAIL FROM:<a@b.test> BODY=7BIT BODY=8BITMIME",
        "MAIL FROM:<a@b.test> SMTPUTF8 smtputf8",
        "MAIL FROM:<a@b.test> SIZE=abc",
        "MAIL FROM:<a@b.test> SIZE=99999999999999999999999",
        "MAIL FROM:<a@b.test> BODY=9BIT",
        "MAIL FROM:<a@b.test> RET=SOME",
        "MAIL FROM:<a@b.test> ENVID=bad+zz",
        "RCPT TO:<a@b.test> NOTIFY=SUCCESS,SUCCESS",
        "RCPT TO:<a@b.test> NOTIFY=NEVER,DELAY",
        "RCPT TO:<a@b.test> ORCPT=rfc822",
        "RCPT TO:<a@b.test> NOTIFY=DELAY NOTIFY=DELAY",
    ] {
        assert_eq!(
            code(line),
            (501, Some((5, 5, 4))),
            "{line:?}: {:?}",
            parse(line)
        );
    }
    let long_envid = format!("MAIL FROM:<a@b.test> ENVID={}", "x".repeat(101));
    assert_eq!(code(&long_envid), (501, Some((5, 5, 4))));
    assert!(parse("MAIL FROM:<a@b.test>SIZE=1").is_err());
}

#[test]
fn auth_mechanisms() {
    assert_eq!(
        parse("AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q="),
        Ok(Command::Auth {
            mechanism: AuthMechanism::Plain,
            initial_response: Some("dGVzdAB0ZXN0AHRlc3Q=".into())
        })
    );
    assert_eq!(
        parse("auth login"),
        Ok(Command::Auth {
            mechanism: AuthMechanism::Login,
            initial_response: None
        })
    );
    assert_eq!(
        parse("AUTH PLAIN ="),
        Ok(Command::Auth {
            mechanism: AuthMechanism::Plain,
            initial_response: Some("=".into())
        })
    );
    for line in [
        "AUTH CRAM-MD5",
        "AUTH GSSAPI abc",
        "AUTH XYZZY",
        "AUTH SCRAM-SHA-256",
    ] {
        assert_eq!(
            parse(line),
            Err(CommandError::UnsupportedMechanism),
            "{line:?}"
        );
        assert_eq!(code(line), (504, Some((5, 5, 4))));
    }
    assert!(matches!(parse("AUTH"), Err(CommandError::Syntax(_))));
}

#[test]
fn unknown_verbs_get_500() {
    for line in [
        "",
        "FOO",
        "XYZZY bar",
        "STARTTLSX",
        "LHLO x",
        "ETRN x",
        "MAILFROM:<a@b.test>",
    ] {
        assert_eq!(
            code(line),
            (500, Some((5, 5, 2))),
            "{line:?}: {:?}",
            parse(line)
        );
    }
}

#[test]
fn nul_cr_lf_and_invalid_utf8_are_syntax_errors() {
    for line in [
        &b"NOOP\0"[..],
        b"MA\rIL FROM:<a@b.test>",
        b"NOOP\nQUIT",
        b"HELO \xff\xfe",
    ] {
        assert!(
            matches!(parse_command(line), Err(CommandError::Syntax(_))),
            "{line:?}"
        );
        assert_eq!(parse_command(line).unwrap_err().reply().code, 501);
    }
}

#[test]
fn error_replies_do_not_echo_junk() {
    let junk = format!("MAIL FROM:<a@b.test> X{}=\u{1b}[31m", "A".repeat(500));
    let reply = parse(&junk).unwrap_err().reply();
    assert_eq!(reply.code, 555);
    assert!(reply.lines[0].len() < 100, "{:?}", reply.lines);
    assert!(
        reply.lines[0]
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
    );
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = parse_command(&line) {
            let reply = e.reply();
            prop_assert!(reply.code >= 500);
        }
    }

    #[test]
    fn never_panics_on_command_like_lines(
        verb in prop_oneof![Just("MAIL FROM:"), Just("RCPT TO:"), Just("AUTH "), Just("BDAT "),
                            Just("EHLO "), Just("HELP ")],
        rest in "[<>@\"\\\\=:;,. a-zA-Z0-9+é]{0,80}",
    ) {
        let _ = parse(&format!("{verb}{rest}"));
    }
}

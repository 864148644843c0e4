//! Smarthost: a `[[deliver.routes]]` entry sends `*.corp.test` to a relay given by address,
//! which requires STARTTLS and AUTH. The message goes there, over TLS, authenticated, and
//! no MX lookup is made for the recipient's domain.

use kurir_deliver::config::{RouteConfig, SmarthostAuth, TlsPolicy};
use kurir_proto::v1::Outcome;
use kurir_testkit::TestCa;
use kurir_testkit::smtp_sink::Extensions;

use crate::harness::{Env, SENDER, scenario};

const USER: &str = "relay-user";
const PASSWORD: &str = "relay-secret";

async fn run(env: Env) {
    let ca = TestCa::new();
    let relay = env.sink("relay.corp.test", 4).await;
    relay.set_extensions(Extensions {
        starttls: Some(ca.server_config(&["relay.corp.test", "127.0.0.4"])),
        auth: Some((USER.into(), PASSWORD.into())),
        ..Extensions::default()
    });
    let mut config = env.config();
    config.routes.push(RouteConfig {
        domains: vec!["*.corp.test".into()],
        host: format!("127.0.0.4:{}", env.mx_port),
        tls: TlsPolicy::Require,
        auth: Some(SmarthostAuth {
            username: USER.into(),
            password: PASSWORD.into(),
        }),
    });
    let node = env.node(config).await;

    env.submit(
        Some(SENDER),
        &["dee@eng.corp.test"],
        "Subject: via relay\r\n\r\nhello\r\n",
    )
    .await;
    let e = env
        .wait_event("dee@eng.corp.test", Outcome::Delivered)
        .await;
    assert_eq!(e.mx_host, "127.0.0.4");
    assert!(e.tls_version.starts_with("TLS"), "{e:?}");

    let txns = relay.transactions();
    assert_eq!(txns.len(), 1);
    let t = &txns[0];
    assert!(t.accepted());
    assert_eq!(t.accepted_rcpts(), vec!["dee@eng.corp.test"]);
    assert!(t.tls.is_some(), "the relay saw TLS");
    let auth = t.auth.as_ref().expect("the relay saw AUTH");
    assert_eq!(auth.user, USER);
    assert_eq!(
        env.dns.query_count("eng.corp.test"),
        0,
        "no DNS for a routed domain"
    );
    node.stop().await;
}

scenario!(smarthost, run);

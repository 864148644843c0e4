//! RedisServer: a real round trip, and an outage followed by a recovery on the same port.

use std::time::Duration;

use kurir_testkit::{RedisServer, wait_for};

#[tokio::test]
async fn redis_round_trip() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("kurir:smoke")
        .arg("hello")
        .query_async(&mut conn)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("kurir:smoke")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "hello");
    let n: i64 = redis::cmd("INCRBY")
        .arg("kurir:n")
        .arg(41)
        .query_async(&mut conn)
        .await
        .unwrap();
    let n2: i64 = redis::cmd("INCR")
        .arg("kurir:n")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((n, n2), (41, 42));
}

#[tokio::test]
async fn redis_stop_and_restart_on_the_same_port() {
    let mut server = RedisServer::start().await.unwrap();
    let port = server.port();
    let client = server.client().unwrap();
    server.stop().await.unwrap();
    let down = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("connecting to a stopped server fails fast");
    assert!(down.is_err(), "a stopped server must refuse connections");

    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    // No persistence: the restarted server is empty, and answers again.
    let mut conn = wait_for(
        "a connection after restart",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            async move { client.get_multiplexed_async_connection().await.ok() }
        },
    )
    .await
    .unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg("anything")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists);
}

//! `/echo` sends every text and binary message back verbatim.

use tungstenite::Message;

use crate::support::*;

#[test]
fn echoes_text_and_binary_verbatim() {
    let server = TestServer::start();
    let mut ws = connect_raw(&server.echo_url()).unwrap();
    let big_text = "é".repeat(30_000); // 60,000 bytes, under the 64 KiB cap
    let binary: Vec<u8> = (0..=255).cycle().take(50_000).collect();
    let cases = vec![
        Message::text("hello"),
        Message::text("not json is fine here"),
        Message::binary(vec![0u8, 255, 1]),
        Message::text(big_text),
        Message::binary(binary),
        Message::text(""),
    ];
    for m in cases {
        ws.send(m.clone()).unwrap();
        let back = loop {
            match ws.read().expect("echo reply within the timeout") {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => break other,
            }
        };
        assert_eq!(back, m);
    }
}

#[test]
fn echo_clients_do_not_receive_chat_broadcasts() {
    let server = TestServer::start();
    let mut echo = connect_raw(&server.echo_url()).unwrap();
    let mut chat = server.chat();
    chat.say("for chat only");
    chat.recv_type("message");
    echo.send(Message::text("mine")).unwrap();
    assert_eq!(echo.read().unwrap(), Message::text("mine"), "the broadcast must not reach /echo");
}

//! JSON mode for the integration tests: sending requests and reading the
//! server's objects with every check PROTOCOL.md's "JSON mode" allows
//! (one object per LF-terminated line, no CR, a string `type`; errors with
//! exactly a code and a non-empty message; a current `ts` on messages).

use serde_json::{Value, json};

use super::Client;
use super::time::check_ts;

/// Sends `request` as one line.
#[track_caller]
pub fn send(c: &mut Client, request: &Value) {
    c.send(&request.to_string());
}

/// The next line, which must be one JSON object with a string `type`.
#[track_caller]
pub fn recv(c: &mut Client) -> Value {
    let line = c.line();
    assert!(!line.ends_with('\r'), "a CR before the LF: {line:?}");
    let v: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("expected a JSON object, got {line:?} ({e})"));
    assert!(
        v.get("type").is_some_and(Value::is_string),
        "no string \"type\" in {line:?}"
    );
    v
}

/// The next line must be `want`. A `message` or `direct` must carry a
/// current `ts` in the format `YYYY-MM-DDTHH:MM:SSZ`; it is checked, then
/// left out of the comparison, as a recorded message's `seq` (a number)
/// and a `connect_ack`'s `epoch` (a non-empty string) and `token` are,
/// unless `want` names them. A `connect_ack` must be followed by its
/// room's history with the same id (see `expect_history`).
#[track_caller]
pub fn expect(c: &mut Client, want: Value) {
    let mut got = recv(c);
    if matches!(got["type"].as_str(), Some("message" | "direct")) {
        let ts = got["payload"]
            .as_object_mut()
            .and_then(|p| p.remove("ts"))
            .unwrap_or_else(|| panic!("no payload.ts in {got}"));
        check_ts(&ts);
    }
    let wanted = |key: &str| want["payload"].get(key).is_some();
    if got["type"] == "message" && !wanted("seq") {
        let seq = got["payload"].as_object_mut().and_then(|p| p.remove("seq"));
        assert!(seq.is_none_or(|s| s.is_u64()), "a seq is a number: {got}");
    }
    if got["type"] == "notification" && got["payload"]["event"] == "register" && !wanted("token") {
        let token = got["payload"]
            .as_object_mut()
            .and_then(|p| p.remove("token"));
        assert!(
            token.is_some_and(|t| t.is_string()),
            "register carries a token"
        );
    }
    if got["type"] == "connect_ack" {
        let p = got["payload"].as_object_mut().expect("a payload");
        if !wanted("epoch") {
            let epoch = p.remove("epoch");
            assert!(
                epoch.is_some_and(|e| e.as_str().is_some_and(|e| !e.is_empty())),
                "connect_ack carries its epoch"
            );
        }
        if !wanted("token") {
            p.remove("token");
        }
    }
    assert_eq!(got, want, "unexpected object");
    // Entering a room is always followed by its history, with the same id.
    if want["type"] == "connect_ack" {
        expect_history(c, &want["payload"]["room"], want.get("id"));
    }
}

/// The next object must be the history of `room` (its messages are
/// checked by tests/history.rs), carrying `id` or none.
#[track_caller]
pub fn expect_history(c: &mut Client, room: &Value, id: Option<&Value>) {
    let got = recv(c);
    assert_eq!(
        got["type"], "history",
        "expected the room's history, got {got}"
    );
    assert_eq!(&got["payload"]["room"], room, "{got}");
    assert!(got["payload"]["messages"].is_array(), "{got}");
    assert_eq!(got.get("id"), id, "{got}");
}

/// The next line must be an error with `code` and a non-empty message,
/// carrying `id` (or none), and nothing else; returns the message.
#[track_caller]
pub fn expect_error(c: &mut Client, code: &str, id: Option<Value>) -> String {
    let got = recv(c);
    assert_eq!(got["type"], "error", "expected a {code} error, got {got}");
    let payload = got["payload"]
        .as_object()
        .unwrap_or_else(|| panic!("no payload object in {got}"));
    assert_eq!(payload.len(), 2, "payload is code and message: {got}");
    assert_eq!(payload["code"], code, "wrong code in {got}");
    let message = payload["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message string in {got}"));
    assert!(!message.trim().is_empty(), "empty message in {got}");
    assert_eq!(got.get("id"), id.as_ref(), "wrong id in {got}");
    let keys = if id.is_some() { 3 } else { 2 };
    assert_eq!(got.as_object().unwrap().len(), keys, "stray fields: {got}");
    message.to_string()
}

/// A room message as a JSON client receives it (without its `ts`, which
/// `expect` checks).
pub fn message(sender: &str, room: &str, text: &str) -> Value {
    json!({"type": "message", "payload": {"sender": sender, "room": room, "text": text}})
}

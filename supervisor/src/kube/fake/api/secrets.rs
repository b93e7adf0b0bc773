//! The FAKE API server's Secrets: created (POST) with the API server's validation, read
//! (GET), never listed. slipwayd creates bootstrap-token Secrets in kube-system.

use serde_json::{Value, json};

use super::super::http::Response;
use super::{World, now_unix, status, timestamp};

impl World {
    /// The Secret `namespace/name`, as stored (its data base64, as the API holds it).
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Value> {
        self.secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Creates a Secret, as the API server validates one: a body of kind Secret whose
    /// namespace (if given) is the URL's, an object name, data keys of `[-._a-zA-Z0-9]`
    /// with base64 values; 409 AlreadyExists for a name taken.
    pub(super) fn create_secret(&mut self, ns: &str, body: &[u8]) -> Response {
        let mut secret: Value = match serde_json::from_slice(body) {
            Ok(s) => s,
            Err(e) => return status(400, "BadRequest", &e.to_string(), Value::Null),
        };
        if secret["kind"] != json!("Secret") || secret["apiVersion"] != json!("v1") {
            return status(
                400,
                "BadRequest",
                "the body is not a v1 Secret",
                Value::Null,
            );
        }
        match secret["metadata"]["namespace"].as_str() {
            None => secret["metadata"]["namespace"] = json!(ns),
            Some(given) if given == ns => {}
            Some(_) => {
                return status(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                    Value::Null,
                );
            }
        }
        let name = secret["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let valid_name = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_name {
            return status(
                422,
                "Invalid",
                &format!("Secret {name:?} is invalid: metadata.name: Invalid value"),
                Value::Null,
            );
        }
        if let Some(data) = secret["data"].as_object() {
            use base64::Engine;
            for (key, value) in data {
                let key_ok = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
                let value_ok = value
                    .as_str()
                    .is_some_and(|v| base64::engine::general_purpose::STANDARD.decode(v).is_ok());
                if !key_ok || !value_ok {
                    return status(
                        422,
                        "Invalid",
                        &format!("Secret {name:?} is invalid: data[{key}]: Invalid value"),
                        Value::Null,
                    );
                }
            }
        }
        let key = (ns.to_owned(), name.clone());
        if self.secrets.contains_key(&key) {
            return status(
                409,
                "AlreadyExists",
                &format!("secrets \"{name}\" already exists"),
                json!({"name": name, "kind": "secrets"}),
            );
        }
        let n = self.next();
        secret["metadata"]["uid"] = json!(format!("secret-uid-{n}"));
        secret["metadata"]["resourceVersion"] = json!(n.to_string());
        secret["metadata"]["creationTimestamp"] = json!(timestamp(now_unix()));
        if secret["type"].is_null() {
            secret["type"] = json!("Opaque");
        }
        self.secrets.insert(key, secret.clone());
        Response {
            code: 201,
            body: secret,
        }
    }
}

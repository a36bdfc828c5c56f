//! Front webhook signatures, as pure functions.
//!
//! - Rule webhooks ("Send to a Webhook"): `X-Front-Signature` =
//!   base64(HMAC-SHA1(rule secret, raw body)).
//! - Application webhooks: `X-Front-Signature` = base64(HMAC-SHA256(app secret,
//!   "{X-Front-Request-Timestamp}:{raw body}")), the timestamp in ms, at most 5 minutes
//!   from now either way.
//!
//! Comparisons are constant-time (`Mac::verify_slice`). Errors never include the secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};

/// How far an application webhook's timestamp may be from our clock.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// Why a signature was refused; all map to HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing x-front-signature header")]
    Missing,
    #[error("x-front-signature is not base64")]
    NotBase64,
    #[error("signature does not match")]
    Mismatch,
    #[error("x-front-request-timestamp is not a number of milliseconds")]
    BadTimestamp,
    #[error("request timestamp is {skew_ms} ms away from now (limit 300000)")]
    Stale { skew_ms: i64 },
    #[error("no {0} secret is configured for this connection")]
    NoSecret(&'static str),
}

/// Verifies a rule webhook.
pub fn verify_rule(
    secret: &[u8],
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let expected = decode(signature)?;
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// Verifies an application webhook signed at `timestamp` (ms, as sent) against `now_ms`.
pub fn verify_app(
    secret: &[u8],
    body: &[u8],
    timestamp: &str,
    signature: Option<&str>,
    now_ms: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let skew_ms = now_ms.saturating_sub(ts);
    // `unsigned_abs`, not `abs`: a skew of exactly i64::MIN (found by the fuzzer) overflows
    // `abs`, which panics in debug builds and, wrapped in release, would pass this check.
    if skew_ms.unsigned_abs() > MAX_SKEW_MS.unsigned_abs() {
        return Err(SignatureError::Stale { skew_ms });
    }
    let expected = decode(signature)?;
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

fn decode(signature: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    let sig = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(SignatureError::Missing)?;
    STANDARD.decode(sig).map_err(|_| SignatureError::NotBase64)
}

/// Signs like a Front rule webhook (for tests, the load tool and the README's curl example).
pub fn sign_rule(secret: &[u8], body: &[u8]) -> String {
    // new_from_slice accepts keys of any length for HMAC.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Signs like a Front application webhook.
pub fn sign_app(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_signature_matches_known_vector() {
        // Computed independently: printf '{"a":1}' | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            sign_rule(b"secret", br#"{"a":1}"#),
            "+ERmcvAz5LK+r8XKOnHq/NLK+24="
        );
        assert!(
            verify_rule(
                b"secret",
                br#"{"a":1}"#,
                Some("+ERmcvAz5LK+r8XKOnHq/NLK+24=")
            )
            .is_ok()
        );
    }

    #[test]
    fn rule_signature_rejects_tampering_and_wrong_secret() {
        let sig = sign_rule(b"secret", b"body");
        assert_eq!(
            verify_rule(b"secret", b"body!", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_rule(b"other", b"body", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_rule(b"secret", b"body", None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_rule(b"secret", b"body", Some("%%%")),
            Err(SignatureError::NotBase64)
        );
    }

    #[test]
    fn app_signature_matches_known_vector() {
        // printf '1700000000000:{"a":1}' | openssl dgst -sha256 -hmac secret -binary | base64
        let sig = sign_app(b"secret", "1700000000000", br#"{"a":1}"#);
        assert_eq!(sig, "J3H6nYMcLDQwand3Jcl0P/3trzAwWWvHtIjJcP8x9hw=");
        assert!(
            verify_app(
                b"secret",
                br#"{"a":1}"#,
                "1700000000000",
                Some(&sig),
                1_700_000_000_000
            )
            .is_ok()
        );
    }

    #[test]
    fn app_signature_window_is_five_minutes_both_ways() {
        let ts = "1700000000000";
        let sig = sign_app(b"k", ts, b"x");
        let at = 1_700_000_000_000;
        assert!(verify_app(b"k", b"x", ts, Some(&sig), at + MAX_SKEW_MS).is_ok());
        assert!(verify_app(b"k", b"x", ts, Some(&sig), at - MAX_SKEW_MS).is_ok());
        assert!(matches!(
            verify_app(b"k", b"x", ts, Some(&sig), at + MAX_SKEW_MS + 1),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            verify_app(b"k", b"x", ts, Some(&sig), at - MAX_SKEW_MS - 1),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            verify_app(b"k", b"x", "soon", Some(&sig), at),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn extreme_clock_and_timestamp_values_are_stale_not_a_panic() {
        let sig = sign_app(b"k", "9223372036854775807", b"x");
        // now - ts == i64::MIN exactly.
        assert!(matches!(
            verify_app(b"k", b"x", "9223372036854775807", Some(&sig), -1),
            Err(SignatureError::Stale { .. })
        ));
        let sig = sign_app(b"k", "-9223372036854775808", b"x");
        assert!(matches!(
            verify_app(b"k", b"x", "-9223372036854775808", Some(&sig), i64::MAX),
            Err(SignatureError::Stale { .. })
        ));
    }

    #[test]
    fn app_signature_covers_timestamp() {
        let sig = sign_app(b"k", "1700000000000", b"x");
        assert_eq!(
            verify_app(b"k", b"x", "1700000000001", Some(&sig), 1_700_000_000_000),
            Err(SignatureError::Mismatch)
        );
    }
}

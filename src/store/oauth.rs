//! OAuth grants in the state database: per connection, the access token and when it
//! expires, the refresh token, and when they were obtained.
//!
//! The tokens are held as [`SecretValue`] everywhere outside this file (so `Debug` prints
//! `***`); only the stored JSON carries them in clear, in a file that is 0600.
//!
//! [`Txn::replace_oauth_grant`] is a compare-and-set on the refresh token: a refresh
//! commits its result only if the grant it started from is still the stored one, so a
//! grant stored meanwhile by `frontsync auth` is never overwritten by a stale refresh.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::tables::OAUTH_GRANTS;
use super::{Store, StoreError, Txn, db_err};
use crate::secret::SecretValue;

/// One connection's OAuth grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthGrant {
    /// Sent as `Authorization: Bearer ...` to Front's API.
    pub access_token: SecretValue,
    /// Unix ms when the access token stops working (Front: an hour after it was issued).
    pub access_expires_at_ms: i64,
    /// Exchanged for a new access token (Front: valid six months, may be replaced on each
    /// refresh).
    pub refresh_token: SecretValue,
    /// Unix ms when this access token was obtained.
    pub obtained_at_ms: i64,
}

/// The stored form. Never given `Debug`: it holds the tokens in clear.
#[derive(Serialize, Deserialize)]
struct StoredGrant {
    access_token: String,
    access_expires_at_ms: i64,
    refresh_token: String,
    obtained_at_ms: i64,
}

impl From<&OAuthGrant> for StoredGrant {
    fn from(g: &OAuthGrant) -> Self {
        StoredGrant {
            access_token: g.access_token.expose().to_string(),
            access_expires_at_ms: g.access_expires_at_ms,
            refresh_token: g.refresh_token.expose().to_string(),
            obtained_at_ms: g.obtained_at_ms,
        }
    }
}

impl From<StoredGrant> for OAuthGrant {
    fn from(s: StoredGrant) -> Self {
        OAuthGrant {
            access_token: SecretValue::new(s.access_token),
            access_expires_at_ms: s.access_expires_at_ms,
            refresh_token: SecretValue::new(s.refresh_token),
            obtained_at_ms: s.obtained_at_ms,
        }
    }
}

/// Decodes a stored grant. serde's own message is not kept: it may quote the value it
/// choked on, which could be a token.
fn decode(bytes: &[u8], path: &std::path::Path) -> Result<OAuthGrant, StoreError> {
    serde_json::from_slice::<StoredGrant>(bytes)
        .map(OAuthGrant::from)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            table: "oauth_grants_v1",
            message: format!(
                "not an oauth grant (line {} column {}); run `frontsync auth` again",
                e.line(),
                e.column()
            ),
        })
}

impl Store {
    /// The grant stored for `connection`, if any.
    pub fn oauth_grant(&self, connection: &str) -> Result<Option<OAuthGrant>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(OAUTH_GRANTS).map_err(|e| self.db_err(e))?;
        match table.get(connection).map_err(|e| self.db_err(e))? {
            None => Ok(None),
            Some(v) => decode(v.value(), &self.path).map(Some),
        }
    }
}

impl Txn<'_> {
    /// The grant stored for `connection`, inside the transaction.
    pub fn oauth_grant(&mut self, connection: &str) -> Result<Option<OAuthGrant>, StoreError> {
        let path = self.path;
        let table = self.oauth_grants()?;
        match table.get(connection).map_err(|e| db_err(path, e))? {
            None => Ok(None),
            Some(v) => decode(v.value(), path).map(Some),
        }
    }

    /// Stores `grant` for `connection`, replacing whatever was there (a new authorization).
    pub fn put_oauth_grant(
        &mut self,
        connection: &str,
        grant: &OAuthGrant,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&StoredGrant::from(grant)).map_err(|e| self.err(e))?;
        let path = self.path;
        self.oauth_grants()?
            .insert(connection, bytes.as_slice())
            .map_err(|e| db_err(path, e))?;
        Ok(())
    }

    /// Stores `grant` (the result of a refresh) only if the stored grant still has the
    /// refresh token the refresh started from. Returns whether it was stored; `false`
    /// means someone authorized again meanwhile, and the stored grant is the one to use.
    pub fn replace_oauth_grant(
        &mut self,
        connection: &str,
        grant: &OAuthGrant,
        previous_refresh_token: &SecretValue,
    ) -> Result<bool, StoreError> {
        let current = self.oauth_grant(connection)?;
        if current.is_none_or(|c| c.refresh_token != *previous_refresh_token) {
            return Ok(false);
        }
        self.put_oauth_grant(connection, grant)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(access: &str, refresh: &str, at: i64) -> OAuthGrant {
        OAuthGrant {
            access_token: SecretValue::new(access),
            access_expires_at_ms: at + 3_600_000,
            refresh_token: SecretValue::new(refresh),
            obtained_at_ms: at,
        }
    }

    #[test]
    fn grants_are_stored_per_connection_and_replaced_only_from_the_stored_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.oauth_grant("acme").unwrap(), None);
        let first = grant("at_1", "rt_1", 1_000);
        store.write(|t| t.put_oauth_grant("acme", &first)).unwrap();
        assert_eq!(store.oauth_grant("acme").unwrap(), Some(first.clone()));
        assert_eq!(store.oauth_grant("other").unwrap(), None);

        // A refresh that started from rt_1 commits.
        let second = grant("at_2", "rt_2", 2_000);
        let prev = SecretValue::new("rt_1");
        assert!(
            store
                .write(|t| t.replace_oauth_grant("acme", &second, &prev))
                .unwrap()
        );
        // A late refresh that also started from rt_1 does not overwrite rt_2.
        let stale = grant("at_x", "rt_x", 3_000);
        assert!(
            !store
                .write(|t| t.replace_oauth_grant("acme", &stale, &prev))
                .unwrap()
        );
        // Nor does one for a connection with no grant.
        assert!(
            !store
                .write(|t| t.replace_oauth_grant("other", &stale, &prev))
                .unwrap()
        );
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.oauth_grant("acme").unwrap(), Some(second));
    }

    #[test]
    fn debug_never_shows_a_token() {
        let g = grant("at_secret_1", "rt_secret_1", 1);
        let text = format!("{g:?}");
        assert!(!text.contains("secret"), "{text}");
    }
}

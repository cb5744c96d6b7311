//! API keys in the store: only hashes, never the keys themselves.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::sql::SqlStore;
use super::{Result, StoreError};
use crate::domain::{EntityId, Level, Millis};

/// A stored API key (its hash, never the key).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: EntityId,
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// `None` for an operator key.
    pub scope: Option<(Level, EntityId)>,
    pub label: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

#[async_trait]
pub trait KeyStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()>;

    /// The key with this hash, if it exists and is not revoked.
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>>;

    /// Revokes a key; false if there is no such key or it was already revoked.
    async fn revoke_api_key(&self, id: &EntityId, now: Millis) -> Result<bool>;

    /// Whether any operator key (not revoked) is stored.
    async fn has_operator_key(&self) -> Result<bool>;
}

fn key_from_row(r: &AnyRow) -> Result<ApiKeyRecord> {
    let corrupt = |e: String| StoreError::Corrupt(e);
    let level: Option<String> = r.try_get("level")?;
    let level_id: Option<String> = r.try_get("level_id")?;
    let scope = match (level, level_id) {
        (Some(l), Some(id)) => Some((
            l.parse::<Level>().map_err(corrupt)?,
            EntityId::parse(&id).map_err(corrupt)?,
        )),
        _ => None,
    };
    Ok(ApiKeyRecord {
        id: EntityId::parse(&r.try_get::<String, _>("id")?).map_err(corrupt)?,
        hash: r.try_get("hash")?,
        scope,
        label: r.try_get("label")?,
        created_at: Millis(r.try_get("created_at")?),
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(Millis),
    })
}

const COLUMNS: &str = "id, hash, level, level_id, label, created_at, revoked_at";

#[async_trait]
impl KeyStore for SqlStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.write_one(
            "INSERT INTO api_keys (id, hash, level, level_id, label, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
            &[
                key.id.as_str().into(),
                key.hash.as_str().into(),
                key.scope.as_ref().map(|(l, _)| l.as_str()).into(),
                key.scope.as_ref().map(|(_, id)| id.as_str()).into(),
                key.label.as_str().into(),
                key.created_at.0.into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE hash = $1 AND revoked_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.reader).await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_api_key(&self, id: &EntityId, now: Millis) -> Result<bool> {
        let n = self
            .write_one(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                &[now.0.into(), id.as_str().into()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn has_operator_key(&self) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_keys WHERE level IS NULL AND revoked_at IS NULL",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }
}

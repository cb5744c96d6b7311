//! A level's own settings: its signing secret (read, rotated) and its endpoint (read,
//! changed), each through the same visibility rule as the level itself.

use serde_json::Value;

use super::rules::get_visible;
use super::{ChangeError, Hierarchy};
use crate::delivery::secrets;
use crate::domain::endpoint::Endpoint;
use crate::domain::{EntityId, Kind};
use crate::store::{Health, StoreError};
use crate::tenancy::Principal;

/// A level's endpoint settings with its health, as the API shows them.
#[derive(Debug, Clone)]
pub struct LevelEndpoint {
    pub level: crate::domain::Level,
    pub level_id: EntityId,
    pub settings: Endpoint,
    pub health: Health,
}

impl Hierarchy {
    /// A level's current signing secret (`whsec_...`).
    pub async fn secret(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<String, ChangeError> {
        let level = self.level_id(who, kind, id).await?;
        let sealed = self
            .store
            .secrets(&level)
            .await?
            .ok_or_else(|| ChangeError::NotFound {
                kind,
                id: id.to_owned(),
            })?;
        let secret = self
            .keys
            .open(&sealed.current)
            .map_err(|e| ChangeError::Store(StoreError::Corrupt(e.to_string())))?;
        Ok(secret.to_string())
    }

    /// Replaces a level's signing secret; the old one keeps signing for 24 hours.
    pub async fn rotate_secret(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<String, ChangeError> {
        let level = self.level_id(who, kind, id).await?;
        self.may_change(who).await?;
        let now = self.clock.now();
        let new = secrets::generate();
        let until = crate::domain::Millis(now.0 + secrets::ROTATION_OVERLAP_MS);
        self.store
            .rotate_secret(&level, &self.keys.seal(&new), until, now)
            .await?;
        tracing::info!(level = %level, "signing secret rotated; the previous one signs too for 24 h");
        Ok(new.to_string())
    }

    /// A level's endpoint settings and health.
    pub async fn endpoint(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<LevelEndpoint, ChangeError> {
        let level_id = self.level_id(who, kind, id).await?;
        self.endpoint_of(kind, level_id).await
    }

    /// Changes a level's endpoint settings (a partial update; see [`Endpoint::patched`]).
    /// Disabling stops the level's pending webhooks; enabling lets `recover` send them.
    pub async fn patch_endpoint(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
        body: Value,
    ) -> Result<LevelEndpoint, ChangeError> {
        let level_id = self.level_id(who, kind, id).await?;
        let level = kind.level().ok_or_else(|| ChangeError::NotFound {
            kind,
            id: id.to_owned(),
        })?;
        let before = self.store.endpoint(&level_id).await?;
        let after = before.patched(level, &body).map_err(ChangeError::Invalid)?;
        if after != before {
            let set_enabled = after.enabled != before.enabled;
            self.store
                .put_endpoint(&level_id, &after, set_enabled, self.clock.now())
                .await?;
            tracing::info!(level = %level_id, enabled = after.enabled, ordered = after.ordered, success = after.success.as_str(), "endpoint settings changed");
        }
        self.endpoint_of(kind, level_id).await
    }

    async fn endpoint_of(
        &self,
        kind: Kind,
        level_id: EntityId,
    ) -> Result<LevelEndpoint, ChangeError> {
        let level = kind.level().ok_or_else(|| ChangeError::NotFound {
            kind,
            id: level_id.to_string(),
        })?;
        let settings = self.store.endpoint(&level_id).await?;
        let health = self
            .store
            .endpoint_health(std::slice::from_ref(&level_id), self.clock.now())
            .await?
            .remove(&level_id)
            .unwrap_or_default();
        Ok(LevelEndpoint {
            level,
            level_id,
            settings,
            health,
        })
    }

    async fn level_id(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<EntityId, ChangeError> {
        let mut tx = self.store.read().await?;
        Ok(get_visible(tx.as_mut(), who, kind, id, false)
            .await?
            .id()
            .clone())
    }
}

//! What a PostgreSQL instance remembers of the levels it has read: each level entity with its
//! endpoint settings and signing secrets, as of one generation of the levels (the number in
//! `level_generation`, taken anew by every commit that changes a level, its endpoint or its
//! secrets: migrations/postgres/0015_level_generation.sql).
//!
//! A change reads its own entity, and whatever it refers to below the levels, in one statement
//! that also reads the generation; when that is the generation remembered, the levels above
//! come from memory instead of from a recursive read of every level with its endpoint and
//! secrets (most of a change's reading). Another instance's change to a level is seen as a new
//! generation by the next statement anywhere, so what is remembered is never older than what
//! the statement itself would have read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::delivery::secrets::SealedSecrets;
use crate::domain::endpoint::Endpoint;
use crate::domain::entities::Entity;
use crate::domain::EntityId;

/// A level as a transaction read it.
#[derive(Debug)]
pub(super) struct Level {
    pub(super) entity: Entity,
    /// Its endpoint settings, `None` when none are stored.
    pub(super) endpoint: Option<Endpoint>,
    /// Its signing secrets, `None` when none were made.
    pub(super) secrets: Option<SealedSecrets>,
}

/// How many levels an instance remembers at most (about 1 KiB each); past that it starts over.
const REMEMBERED: usize = 16_384;

#[derive(Default)]
pub(super) struct LevelCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The generation the levels were read at (`None`: nothing remembered yet).
    generation: Option<i64>,
    levels: HashMap<EntityId, Arc<Level>>,
}

impl LevelCache {
    /// Whether anything is remembered: until then a change reads the levels with its entity
    /// at once rather than first asking whether what it remembers still holds.
    pub(super) fn is_empty(&self) -> bool {
        self.state().generation.is_none()
    }

    /// The levels `ids` and every level above them, if all of them are remembered at
    /// `generation`; otherwise `None`, and the caller reads them.
    pub(super) fn closure(
        &self,
        generation: i64,
        ids: impl IntoIterator<Item = EntityId>,
    ) -> Option<Vec<(EntityId, Arc<Level>)>> {
        let state = self.state();
        if state.generation != Some(generation) {
            return None;
        }
        let mut found: Vec<(EntityId, Arc<Level>)> = Vec::new();
        let mut todo: Vec<EntityId> = ids.into_iter().collect();
        while let Some(id) = todo.pop() {
            if found.iter().any(|(f, _)| *f == id) {
                continue;
            }
            let level = state.levels.get(&id)?.clone();
            todo.extend(level.entity.level_refs());
            found.push((id, level));
        }
        Some(found)
    }

    /// Remembers levels a committed transaction read at `generation`. Generations only grow:
    /// a newer one replaces what was remembered, an older one is too late to keep.
    pub(super) fn remember(&self, generation: i64, levels: HashMap<EntityId, Level>) {
        let mut state = self.state();
        match state.generation {
            Some(g) if g > generation => return,
            Some(g) if g == generation => {}
            _ => {
                state.levels.clear();
                state.generation = Some(generation);
            }
        }
        if state.levels.len() + levels.len() > REMEMBERED {
            state.levels.clear();
        }
        state
            .levels
            .extend(levels.into_iter().map(|(id, l)| (id, Arc::new(l))));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a map that is whole (every change to it is
        // one call that cannot stop halfway), so a poisoned lock is taken over.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::entities::{Contact, Dealer, Reseller};
    use crate::domain::Millis;

    fn id(n: i64) -> EntityId {
        EntityId::generate(Millis(n))
    }

    fn contact() -> Contact {
        Contact {
            id: id(0),
            first_name: "F".into(),
            last_name: "L".into(),
            email: "f@example.com".into(),
            phone: None,
            language: None,
        }
    }

    fn reseller(id: &EntityId) -> Level {
        Level {
            entity: Entity::Reseller(Reseller {
                id: id.clone(),
                name: "R".into(),
                contact: contact(),
                notification_contact: None,
                webhook_url: None,
                suspended: false,
            }),
            endpoint: None,
            secrets: None,
        }
    }

    fn dealer(id: &EntityId, reseller: &EntityId) -> Level {
        Level {
            entity: Entity::Dealer(Dealer {
                id: id.clone(),
                name: "D".into(),
                contact: contact(),
                reseller: reseller.clone(),
                notification_contact: None,
                webhook_url: None,
                suspended: false,
            }),
            endpoint: None,
            secrets: None,
        }
    }

    fn ids(found: Option<Vec<(EntityId, Arc<Level>)>>) -> Option<Vec<EntityId>> {
        found.map(|f| {
            let mut ids: Vec<EntityId> = f.into_iter().map(|(id, _)| id).collect();
            ids.sort();
            ids
        })
    }

    #[test]
    fn a_level_comes_with_the_levels_above_it_only_at_the_generation_remembered() {
        let (r, d) = (id(1), id(2));
        let cache = LevelCache::default();
        assert!(cache.is_empty());
        assert_eq!(ids(cache.closure(5, [d.clone()])), None);

        cache.remember(5, HashMap::from([(d.clone(), dealer(&d, &r))]));
        assert!(!cache.is_empty());
        // The reseller above is not remembered: the caller reads them all.
        assert_eq!(ids(cache.closure(5, [d.clone()])), None);

        cache.remember(5, HashMap::from([(r.clone(), reseller(&r))]));
        let mut both = vec![r.clone(), d.clone()];
        both.sort();
        assert_eq!(ids(cache.closure(5, [d.clone()])), Some(both));
        assert_eq!(ids(cache.closure(5, [r.clone()])), Some(vec![r.clone()]));
        // Another generation: nothing holds.
        assert_eq!(ids(cache.closure(6, [r.clone()])), None);
        assert_eq!(ids(cache.closure(4, [r.clone()])), None);

        // An older generation is not kept; a newer one replaces everything.
        cache.remember(4, HashMap::from([(d.clone(), dealer(&d, &r))]));
        assert_eq!(ids(cache.closure(4, [d.clone()])), None);
        cache.remember(7, HashMap::from([(r.clone(), reseller(&r))]));
        assert_eq!(ids(cache.closure(5, [r.clone()])), None);
        assert_eq!(ids(cache.closure(7, [d.clone()])), None);
        assert_eq!(ids(cache.closure(7, [r.clone()])), Some(vec![r]));
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = LevelCache::default();
        let first = id(1);
        cache.remember(1, HashMap::from([(first.clone(), reseller(&first))]));
        let many: HashMap<EntityId, Level> = (0..REMEMBERED as i64)
            .map(|n| {
                let i = id(10 + n);
                (i.clone(), reseller(&i))
            })
            .collect();
        cache.remember(1, many);
        assert_eq!(ids(cache.closure(1, [first])), None);
        assert_eq!(cache.state().levels.len(), REMEMBERED);
    }
}

//! The levels a key may see, loaded in a few queries (one page of each level kind at a
//! time) and filtered by the tenancy rule itself ([`Principal::sees`]).

use std::collections::HashMap;

use crate::domain::entities::Entity;
use crate::domain::{EntityId, Kind, Level};
use crate::store::{Store, StoreError};
use crate::tenancy::Principal;

/// Levels of one kind read at most (the console says when it shows only part).
pub const MAX_PER_KIND: usize = 20_000;
const PAGE: u32 = 1000;

#[derive(Debug, Clone)]
pub struct Node {
    pub level: Level,
    pub id: EntityId,
    pub name: String,
    pub parent: Option<EntityId>,
    pub webhook_url: Option<String>,
    pub contact: Option<String>,
}

pub struct Tree {
    /// Visible levels, parents before children.
    pub nodes: Vec<Node>,
    /// Whether some kind had more levels than were read.
    pub truncated: bool,
    by_id: HashMap<EntityId, usize>,
    /// Positions of each parent's children; roots (no parent shown) under `None`.
    kids: HashMap<Option<EntityId>, Vec<usize>>,
}

impl Tree {
    pub async fn load(store: &dyn Store, who: &Principal) -> Result<Tree, StoreError> {
        let mut all: Vec<Node> = Vec::new();
        let mut truncated = false;
        for level in Level::ALL {
            let mut after: Option<EntityId> = None;
            let mut read = 0;
            loop {
                let page = store.list(level.kind(), after.as_ref(), PAGE).await?;
                let n = page.len();
                read += n;
                after = page.last().map(|e| e.id().clone());
                all.extend(page.iter().filter_map(node));
                if n < PAGE as usize {
                    break;
                }
                if read >= MAX_PER_KIND {
                    truncated = true;
                    break;
                }
            }
        }
        let parents: HashMap<EntityId, Option<EntityId>> = all
            .iter()
            .map(|n| (n.id.clone(), n.parent.clone()))
            .collect();
        let nodes: Vec<Node> = all
            .into_iter()
            .filter(|n| {
                let mut above = Vec::new();
                let mut up = n.parent.clone();
                while let Some(p) = up {
                    up = parents.get(&p).cloned().flatten();
                    above.push(p);
                }
                who.sees(&n.id, &above)
            })
            .collect();
        let by_id: HashMap<EntityId, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let mut kids: HashMap<Option<EntityId>, Vec<usize>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let parent = n.parent.clone().filter(|p| by_id.contains_key(p));
            kids.entry(parent).or_default().push(i);
        }
        Ok(Tree {
            nodes,
            truncated,
            by_id,
            kids,
        })
    }

    pub fn ids(&self) -> Vec<EntityId> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// The ids to narrow a store query to: `None` (everything) for the operator.
    pub fn scope(&self, who: &Principal) -> Option<Vec<EntityId>> {
        (!who.is_operator()).then(|| self.ids())
    }

    pub fn get(&self, id: &EntityId) -> Option<&Node> {
        self.by_id.get(id).map(|i| &self.nodes[*i])
    }

    /// The children of `parent` (the roots for `None`: levels whose parent is not shown).
    pub fn children(&self, parent: Option<&EntityId>) -> Vec<&Node> {
        self.kids
            .get(&parent.cloned())
            .map(|v| v.iter().map(|i| &self.nodes[*i]).collect())
            .unwrap_or_default()
    }
}

fn node(e: &Entity) -> Option<Node> {
    let (level, url, contact) = e.level_settings()?;
    Some(Node {
        level,
        id: e.id().clone(),
        name: e.name(),
        parent: e.up().cloned(),
        webhook_url: url.map(str::to_owned),
        contact: contact.map(|c| c.email.clone()),
    })
}

/// The API's collection name of a level kind (`companies`), used in the console's URLs too.
pub fn collection(level: Level) -> &'static str {
    match level.kind() {
        Kind::Reseller => "resellers",
        Kind::Dealer => "dealers",
        Kind::Company => "companies",
        _ => "sites",
    }
}

pub fn level_of_collection(name: &str) -> Option<Level> {
    Level::ALL.into_iter().find(|l| collection(*l) == name)
}

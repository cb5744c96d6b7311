//! Who is asking, and what they may see: the operator sees everything; a key scoped to a
//! level sees that level and everything below it, and nothing else exists for it.
//!
//! Pure rules over an entity's chain of levels; the caller loads the chain.

use crate::domain::{EntityId, Level};

/// The holder of an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    /// A key bound to one level (reseller, dealer, company or site).
    Tenant {
        level: Level,
        id: EntityId,
    },
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator)
    }

    /// Whether an entity whose id is `id` and whose chain of levels above it is `above`
    /// (nearest first) lies in this principal's subtree (the level itself included).
    pub fn sees(&self, id: &EntityId, above: &[EntityId]) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Tenant { id: own, .. } => id == own || above.contains(own),
        }
    }

    /// Whether this principal is the operator or a key whose level lies strictly above the
    /// entity `id` whose chain of levels above it is `above`. Only such a principal changes
    /// the fields that express the authority of the levels above an entity
    /// ([`crate::domain::entities::Entity::authority`]): a key cannot lift its own level's
    /// suspension, attach a package to it, or move it.
    pub fn is_above(&self, id: &EntityId, above: &[EntityId]) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Tenant { id: own, .. } => own != id && above.contains(own),
        }
    }

    /// The tenant's own level id, if a tenant.
    pub fn own_level(&self) -> Option<&EntityId> {
        match self {
            Principal::Operator => None,
            Principal::Tenant { id, .. } => Some(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::numbered_id as id;

    #[test]
    fn a_tenant_sees_its_level_and_below_only() {
        let dealer = Principal::Tenant {
            level: Level::Dealer,
            id: id(2),
        };
        // reseller 1 > dealer 2 > company 3 > site 4; sibling dealer 5 > company 6
        assert!(dealer.sees(&id(2), &[id(1)]));
        assert!(dealer.sees(&id(3), &[id(2), id(1)]));
        assert!(dealer.sees(&id(4), &[id(3), id(2), id(1)]));
        assert!(!dealer.sees(&id(1), &[]), "not the level above");
        assert!(!dealer.sees(&id(5), &[id(1)]), "not a sibling");
        assert!(
            !dealer.sees(&id(6), &[id(5), id(1)]),
            "not a sibling's subtree"
        );
        assert!(Principal::Operator.sees(&id(6), &[id(5), id(1)]));
    }

    #[test]
    fn only_a_level_strictly_above_or_the_operator_is_above() {
        let dealer = Principal::Tenant {
            level: Level::Dealer,
            id: id(2),
        };
        assert!(dealer.is_above(&id(3), &[id(2), id(1)]), "its company");
        assert!(dealer.is_above(&id(4), &[id(3), id(2), id(1)]), "its site");
        assert!(!dealer.is_above(&id(2), &[id(1)]), "not its own level");
        assert!(!dealer.is_above(&id(1), &[]), "not the level above");
        assert!(!dealer.is_above(&id(6), &[id(5), id(1)]), "not a sibling's");
        assert!(Principal::Operator.is_above(&id(1), &[]));
    }
}

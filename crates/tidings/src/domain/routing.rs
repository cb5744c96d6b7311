//! Who receives an event: the seed's level table applied to the subject's ancestors.
//!
//! Pure: the caller loads the chain of levels above the subject; this module only decides.
//! It never sends anything to the subject's own level, never user events to sites, and never
//! a direct meeting's events to a site (a direct meeting has no site in its chain).

use super::endpoint::Endpoint;
use super::event::{EventType, Level};
use super::ids::EntityId;

/// One level above the subject of an event, as it is at the moment of the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    pub level: Level,
    pub id: EntityId,
    /// The level's `webhook_url` now; a webhook created now keeps this URL for good.
    pub webhook_url: Option<String>,
}

/// One webhook to create: the receiving level and the URL snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub level: Level,
    pub id: EntityId,
    pub url: String,
}

/// The webhooks an event of type `event` causes, given the levels above its subject
/// (nearest first: for a personal meeting site, company, dealer, reseller; for a user its
/// owning entity and the levels above that).
pub fn recipients(event: EventType, ancestors: &[Ancestor]) -> Vec<Recipient> {
    let subject = event.subject();
    ancestors
        .iter()
        .filter(|a| a.level.receives_events_about(subject))
        .filter_map(|a| {
            a.webhook_url.as_ref().map(|url| Recipient {
                level: a.level,
                id: a.id.clone(),
                url: url.clone(),
            })
        })
        .collect()
}

/// A webhook to create, with what the receiving level's endpoint settings make of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub recipient: Recipient,
    /// Attempted only after older webhooks to the level about the same subject finished.
    pub ordered: bool,
    /// Kept with status `disabled` (the level's endpoint is disabled): never sent on its own.
    pub disabled: bool,
}

/// [`recipients`], then each level's endpoint settings (`None`: the defaults): levels that
/// do not want this event type are left out; the rest say whether they are ordered and
/// whether their endpoint is disabled.
pub fn route<'a>(
    event: EventType,
    ancestors: &[Ancestor],
    endpoint: impl Fn(&EntityId) -> Option<&'a Endpoint>,
) -> Vec<Routed> {
    recipients(event, ancestors)
        .into_iter()
        .filter_map(|recipient| {
            let (ordered, disabled) = match endpoint(&recipient.id) {
                Some(e) if !e.wants(event) => return None,
                Some(e) => (e.ordered, !e.enabled),
                None => (false, false),
            };
            Some(Routed {
                recipient,
                ordered,
                disabled,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Kind;
    use crate::domain::ids::numbered_id as id;
    use Level::*;

    /// The chain above a subject of each shape, nearest first.
    fn chain(levels: &[Level], configured: &[Level]) -> Vec<Ancestor> {
        levels
            .iter()
            .enumerate()
            .map(|(i, &level)| Ancestor {
                level,
                id: id(i as u32 + 1),
                webhook_url: configured
                    .contains(&level)
                    .then(|| format!("https://{level}.example/hook")),
            })
            .collect()
    }

    /// Every subset of the four levels: each arrangement of configured webhook URLs.
    fn arrangements() -> Vec<Vec<Level>> {
        (0u8..16)
            .map(|mask| {
                Level::ALL
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, l)| l)
                    .collect()
            })
            .collect()
    }

    /// The seed's table written out by hand, per subject shape: the chain above the subject
    /// and the levels that may receive its events. Independent of `receives_events_about`.
    fn shapes(event: EventType) -> Vec<(&'static str, Vec<Level>, Vec<Level>)> {
        match event.subject() {
            Kind::Meeting => vec![
                (
                    "personal meeting",
                    vec![Site, Company, Dealer, Reseller],
                    vec![Site, Company, Dealer, Reseller],
                ),
                (
                    "direct meeting",
                    vec![Company, Dealer, Reseller],
                    vec![Company, Dealer, Reseller],
                ),
            ],
            Kind::User => vec![
                (
                    "user of a company",
                    vec![Company, Dealer, Reseller],
                    vec![Company, Dealer, Reseller],
                ),
                (
                    "user of a dealer",
                    vec![Dealer, Reseller],
                    vec![Dealer, Reseller],
                ),
                ("user of a reseller", vec![Reseller], vec![Reseller]),
            ],
            Kind::Site => vec![(
                "site",
                vec![Company, Dealer, Reseller],
                vec![Company, Dealer, Reseller],
            )],
            Kind::Company => vec![("company", vec![Dealer, Reseller], vec![Dealer, Reseller])],
            Kind::Dealer => vec![("dealer", vec![Reseller], vec![Reseller])],
            other => panic!("no event is about a {other}"),
        }
    }

    #[test]
    fn every_type_and_every_arrangement_of_configured_levels() {
        let mut cases = 0;
        for event in EventType::ALL {
            for (shape, above, receiving) in shapes(event) {
                for configured in arrangements() {
                    let got: Vec<Level> = recipients(event, &chain(&above, &configured))
                        .into_iter()
                        .map(|r| r.level)
                        .collect();
                    let want: Vec<Level> = above
                        .iter()
                        .copied()
                        .filter(|l| receiving.contains(l) && configured.contains(l))
                        .collect();
                    assert_eq!(
                        got, want,
                        "{event} for a {shape}, configured {configured:?}"
                    );
                    cases += 1;
                }
            }
        }
        // 10 meeting types x 2 shapes + 3 user types x 3 shapes + 9 level types x 1, 16 arrangements each.
        assert_eq!(cases, (10 * 2 + 3 * 3 + 9) * 16);
    }

    #[test]
    fn company_change_goes_to_dealer_and_reseller_not_company() {
        let above = chain(&[Dealer, Reseller], &[Dealer, Reseller]);
        let got = recipients(EventType::CompanyChanged, &above);
        assert_eq!(
            got.iter().map(|r| r.level).collect::<Vec<_>>(),
            vec![Dealer, Reseller]
        );
        assert_eq!(got[0].url, "https://dealer.example/hook");
    }

    #[test]
    fn sites_never_receive_user_or_site_events_even_if_in_the_chain() {
        let above = chain(&[Site, Company, Dealer, Reseller], &Level::ALL);
        for event in [
            EventType::UserCreated,
            EventType::UserChanged,
            EventType::SiteChanged,
        ] {
            assert!(
                recipients(event, &above).iter().all(|r| r.level != Site),
                "{event}"
            );
        }
    }

    #[test]
    fn levels_without_a_webhook_url_are_skipped() {
        let above = chain(&[Site, Company, Dealer, Reseller], &[Site, Reseller]);
        let got = recipients(EventType::MeetingEnded, &above);
        assert_eq!(
            got.iter().map(|r| r.level).collect::<Vec<_>>(),
            vec![Site, Reseller]
        );
    }

    #[test]
    fn a_level_that_wants_only_meeting_ended_gets_only_that() {
        let above = chain(&[Site, Company, Dealer, Reseller], &Level::ALL);
        let company = above[1].id.clone();
        let only_ended = Endpoint {
            event_types: Some(vec![EventType::MeetingEnded]),
            ..Endpoint::default()
        };
        let settings = |id: &EntityId| (id == &company).then_some(&only_ended);
        for event in EventType::ALL
            .into_iter()
            .filter(|t| t.subject() == Kind::Meeting)
        {
            let got: Vec<Level> = route(event, &above, settings)
                .into_iter()
                .map(|r| r.recipient.level)
                .collect();
            let want = if event == EventType::MeetingEnded {
                vec![Site, Company, Dealer, Reseller]
            } else {
                vec![Site, Dealer, Reseller]
            };
            assert_eq!(got, want, "{event}");
        }
    }

    #[test]
    fn ordered_and_disabled_come_from_each_levels_endpoint() {
        let above = chain(&[Company, Dealer, Reseller], &Level::ALL);
        let ordered = Endpoint {
            ordered: true,
            ..Endpoint::default()
        };
        let disabled = Endpoint {
            enabled: false,
            disabled_reason: Some("HTTP 410 Gone".into()),
            ..Endpoint::default()
        };
        let (company, dealer) = (above[0].id.clone(), above[1].id.clone());
        let got = route(EventType::UserChanged, &above, |id| {
            if id == &company {
                Some(&ordered)
            } else if id == &dealer {
                Some(&disabled)
            } else {
                None
            }
        });
        let flags: Vec<(Level, bool, bool)> = got
            .iter()
            .map(|r| (r.recipient.level, r.ordered, r.disabled))
            .collect();
        assert_eq!(
            flags,
            vec![
                (Company, true, false),
                (Dealer, false, true),
                (Reseller, false, false)
            ]
        );
    }
}

//! The core API as a black box: the real binary on a temporary SQLite file, driven over HTTP.
//!
//! Covers docs/contract.md#routing, #event-types, #envelope, #payload-shapes and #api (delivery itself is tested elsewhere): who receives each of
//! the 22 event types, the payload envelope and the seed's shapes, GET equal to webhook data,
//! URL snapshots, no-op patches, refused input that changes nothing, and the operational
//! endpoints.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::server::TestServer;
use crate::helpers::shapes::{
    assert_envelope, assert_routed, key_diff, routed, seed, seed_data, shape_diff, Routed,
};
use crate::helpers::tree::{
    company_body, contact, direct_meeting_body, hook_url, personal_meeting_body, site_body,
    user_body, Level, Tree,
};
use crate::helpers::{id_of, OPERATOR_KEY};

/// The seven meeting moments and the event each emits.
const MOMENTS: [(&str, &str); 7] = [
    ("start", "MEETING_STARTED"),
    ("restart", "MEETING_RESTARTED"),
    ("end", "MEETING_ENDED"),
    ("takeover", "MEETING_TAKEOVER"),
    ("wait", "MEETING_WAIT"),
    ("decline", "MEETING_DECLINED"),
    ("forward", "MEETING_FORWARDED"),
];

const ALL_TYPES: [&str; 22] = [
    "MEETING_CREATED",
    "MEETING_STARTED",
    "MEETING_RESTARTED",
    "MEETING_ENDED",
    "MEETING_CHANGED",
    "MEETING_TAKEOVER",
    "MEETING_WAIT",
    "MEETING_DECLINED",
    "MEETING_FORWARDED",
    "MEETING_DELETED",
    "USER_CREATED",
    "USER_CHANGED",
    "USER_DELETED",
    "SITE_CREATED",
    "SITE_CHANGED",
    "SITE_DELETED",
    "COMPANY_CREATED",
    "COMPANY_CHANGED",
    "COMPANY_DELETED",
    "DEALER_CREATED",
    "DEALER_CHANGED",
    "DEALER_DELETED",
];

/// Records which event types a test has checked, so it can prove it saw all 22.
#[derive(Default)]
struct Seen(BTreeSet<String>);

impl Seen {
    fn check(&mut self, what: &str, webhooks: &[Value], event_type: &str, expected: &[&Level]) {
        assert_routed(what, webhooks, event_type, expected);
        self.0.insert(event_type.to_owned());
    }
}

#[test]
fn every_event_type_reaches_exactly_the_levels_above_its_subject() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let (r, d, c, sa) = (&t.reseller, &t.dealer, &t.company, &t.site_a);
    let mut seen = Seen::default();

    // What building the tree emitted. Resellers and packages emit nothing.
    assert_eq!(s.webhooks_of(&r.id), Vec::<Value>::new());
    assert_eq!(s.webhooks_of(&t.package), Vec::<Value>::new());
    seen.check("tree dealer", &s.webhooks_of(&d.id), "DEALER_CREATED", &[r]);
    seen.check(
        "tree company",
        &s.webhooks_of(&c.id),
        "COMPANY_CREATED",
        &[d, r],
    );
    for site in [&t.site_a, &t.site_b] {
        seen.check(
            "tree site",
            &s.webhooks_of(&site.id),
            "SITE_CREATED",
            &[c, d, r],
        );
    }
    seen.check(
        "company user",
        &s.webhooks_of(&t.company_user),
        "USER_CREATED",
        &[c, d, r],
    );
    seen.check(
        "dealer user",
        &s.webhooks_of(&t.dealer_user),
        "USER_CREATED",
        &[d, r],
    );
    seen.check(
        "direct meeting",
        &s.webhooks_of(&t.direct_meeting),
        "MEETING_CREATED",
        &[c, d, r],
    );
    seen.check(
        "personal meeting",
        &s.webhooks_of(&t.personal_meeting),
        "MEETING_CREATED",
        &[sa, c, d, r],
    );

    // Changes.
    let change =
        |path: String, id: &str, patch: Value| s.new_webhooks(id, || s.patch_ok(&path, &patch)).1;
    let w = change(
        format!("/v1/dealers/{}", d.id),
        &d.id,
        json!({"name": "Dealer 1b"}),
    );
    seen.check("dealer change", &w, "DEALER_CHANGED", &[r]);
    let w = change(
        format!("/v1/companies/{}", c.id),
        &c.id,
        json!({"name": "Company 1b"}),
    );
    seen.check("company change", &w, "COMPANY_CHANGED", &[d, r]);
    let w = change(
        format!("/v1/sites/{}", sa.id),
        &sa.id,
        json!({"logo": "https://cdn.example.test/other.png"}),
    );
    seen.check("site change", &w, "SITE_CHANGED", &[c, d, r]);
    let w = change(
        format!("/v1/users/{}", t.company_user),
        &t.company_user,
        json!({"status": "busy"}),
    );
    seen.check("company user change", &w, "USER_CHANGED", &[c, d, r]);
    let w = change(
        format!("/v1/users/{}", t.dealer_user),
        &t.dealer_user,
        json!({"status": "busy"}),
    );
    seen.check("dealer user change", &w, "USER_CHANGED", &[d, r]);
    let w = change(
        format!("/v1/meetings/{}", t.direct_meeting),
        &t.direct_meeting,
        json!({"stream_camera_two_way": false}),
    );
    seen.check("direct meeting change", &w, "MEETING_CHANGED", &[c, d, r]);
    let w = change(
        format!("/v1/meetings/{}", t.personal_meeting),
        &t.personal_meeting,
        json!({"subject": "Another subject"}),
    );
    seen.check(
        "personal meeting change",
        &w,
        "MEETING_CHANGED",
        &[sa, c, d, r],
    );

    // The seven moments, on both kinds of meeting.
    for (moment, event_type) in MOMENTS {
        for (meeting, levels) in [
            (&t.direct_meeting, vec![c, d, r]),
            (&t.personal_meeting, vec![sa, c, d, r]),
        ] {
            let (_, w) = s.new_webhooks(meeting, || s.moment(meeting, moment));
            seen.check(&format!("{moment} of {meeting}"), &w, event_type, &levels);
        }
    }

    // Deletes, of entities made for the purpose (the tree's own have children).
    let delete = |collection: &str, id: &str| {
        s.new_webhooks(id, || s.delete_ok(&format!("/v1/{collection}/{id}")))
            .1
    };
    let direct = id_of(&s.create("meetings", &direct_meeting_body(&c.id, &t.company_user)));
    let personal = id_of(&s.create(
        "meetings",
        &personal_meeting_body(&c.id, &t.site_b.id, &t.company_user),
    ));
    seen.check(
        "personal meeting at site B",
        &s.webhooks_of(&personal),
        "MEETING_CREATED",
        &[&t.site_b, c, d, r],
    );
    seen.check(
        "delete direct meeting",
        &delete("meetings", &direct),
        "MEETING_DELETED",
        &[c, d, r],
    );
    seen.check(
        "delete personal meeting",
        &delete("meetings", &personal),
        "MEETING_DELETED",
        &[&t.site_b, c, d, r],
    );
    let cu = id_of(&s.create("users", &user_body("Temp", "company", &c.id, &[&sa.id])));
    seen.check(
        "delete company user",
        &delete("users", &cu),
        "USER_DELETED",
        &[c, d, r],
    );
    let du = id_of(&s.create("users", &user_body("Tempdealer", "dealer", &d.id, &[])));
    seen.check(
        "delete dealer user",
        &delete("users", &du),
        "USER_DELETED",
        &[d, r],
    );
    let site = id_of(&s.create("sites", &site_body("Temp site", &c.id, None)));
    seen.check(
        "delete site",
        &delete("sites", &site),
        "SITE_DELETED",
        &[c, d, r],
    );
    let company = id_of(&s.create(
        "companies",
        &json!({"name": "Temp company", "contact": contact("Temp", "temp@tidings.test"),
                "dealer": {"id": d.id}}),
    ));
    seen.check(
        "delete company",
        &delete("companies", &company),
        "COMPANY_DELETED",
        &[d, r],
    );
    let dealer = id_of(&s.create(
        "dealers",
        &json!({"name": "Temp dealer", "contact": contact("Temp", "temp@tidings.test"),
                "reseller": {"id": r.id}}),
    ));
    seen.check(
        "delete dealer",
        &delete("dealers", &dealer),
        "DEALER_DELETED",
        &[r],
    );

    // A suspended level still receives.
    s.patch_ok(
        &format!("/v1/dealers/{}", d.id),
        &json!({"suspended": true}),
    );
    let w = change(
        format!("/v1/users/{}", t.company_user),
        &t.company_user,
        json!({"status": "offline"}),
    );
    assert_routed("suspended dealer", &w, "USER_CHANGED", &[c, d, r]);

    let all: BTreeSet<String> = ALL_TYPES.iter().map(|t| t.to_string()).collect();
    assert_eq!(seen.0, all, "every one of the 22 event types was checked");

    // A user owned by the reseller reaches the reseller only; a level without a webhook_url
    // is skipped.
    let ru = id_of(&s.create("users", &user_body("Reselleragent", "reseller", &r.id, &[])));
    assert_routed("reseller user", &s.webhooks_of(&ru), "USER_CREATED", &[r]);
    let bare_company = id_of(&s.create(
        "companies",
        &json!({"name": "No hook", "contact": contact("No", "nohook@tidings.test"),
                "dealer": {"id": d.id}}),
    ));
    let bare_user = id_of(&s.create("users", &user_body("Nohook", "company", &bare_company, &[])));
    assert_routed(
        "user of a company without webhook_url",
        &s.webhooks_of(&bare_user),
        "USER_CREATED",
        &[d, r],
    );
}

/// Checks every webhook about `subject` of the types in the seed example's `type` list
/// against the example, and that each listed type was seen. Returns how many were checked.
fn assert_seed_shape(s: &TestServer, example: &str, subject: &str, skip: &[&str]) -> usize {
    let seed = seed(example);
    let types: Vec<&str> = seed["type"].as_str().unwrap().split('|').collect();
    let mut seen = BTreeSet::new();
    let mut checked = 0;
    for w in s.webhooks_of(subject) {
        let t = w["type"].as_str().unwrap().to_owned();
        if !types.contains(&t.as_str()) || skip.contains(&t.as_str()) {
            continue;
        }
        assert_envelope(&w);
        assert_eq!(w["payload"]["data"]["id"], subject, "{w:#}");
        let diff = shape_diff(&seed_data(example), &w["payload"]["data"]);
        assert!(
            diff.is_empty(),
            "{t} of {subject} differs from the seed's {example} example:\n  {}\ndata: {:#}",
            diff.join("\n  "),
            w["payload"]["data"]
        );
        seen.insert(t);
        checked += 1;
    }
    let want: BTreeSet<String> = types
        .iter()
        .filter(|t| !skip.contains(t))
        .map(|t| t.to_string())
        .collect();
    assert_eq!(seen, want, "the {example} example's types for {subject}");
    checked
}

#[test]
fn payloads_have_the_seeds_envelope_and_shapes() {
    let s = TestServer::start();
    let t = Tree::build(&s);

    // The meeting examples: every type in each example's list, on a meeting of that kind.
    for meeting in [&t.direct_meeting, &t.personal_meeting] {
        s.patch_ok(
            &format!("/v1/meetings/{meeting}"),
            &json!({"room_available_till": "2031-01-01T00:00:00.000Z"}),
        );
        for (moment, _) in MOMENTS {
            s.moment(meeting, moment);
        }
    }
    let n = assert_seed_shape(&s, "meeting_direct", &t.direct_meeting, &[]);
    assert_eq!(n, 8 * 3, "8 types of the direct example, 3 levels each");
    let n = assert_seed_shape(&s, "meeting_personal", &t.personal_meeting, &[]);
    assert_eq!(n, 9 * 4, "9 types of the personal example, 4 levels each");
    // MEETING_CHANGED of a direct meeting (not in the seed's direct list) has the direct shape.
    let seed_direct = seed("meeting_direct");
    for w in s.webhooks(&[
        ("subject_id", &t.direct_meeting),
        ("type", "MEETING_CHANGED"),
    ]) {
        assert_eq!(
            shape_diff(&seed_direct["data"], &w["payload"]["data"]),
            Vec::<String>::new()
        );
    }

    // The user example: a user of a company that has a package, linked to two sites.
    s.patch_ok(
        &format!("/v1/users/{}", t.company_user),
        &json!({"locale": "en"}),
    );
    let n = assert_seed_shape(&s, "user", &t.company_user, &[]);
    assert_eq!(n, 2 * 3);

    // The site example: a site that lists two users (only a change shows them; at creation
    // a site has none).
    s.create(
        "users",
        &user_body("Second", "company", &t.company.id, &[&t.site_a.id]),
    );
    s.patch_ok(
        &format!("/v1/sites/{}", t.site_a.id),
        &json!({"videochat_font_type": "Arial"}),
    );
    let site = s.get_ok(&format!("/v1/sites/{}", t.site_a.id));
    assert_eq!(site["users"].as_array().unwrap().len(), 2, "{site:#}");
    let n = assert_seed_shape(&s, "site", &t.site_a.id, &["SITE_CREATED"]);
    assert_eq!(n, 3);

    // The company example.
    s.patch_ok(
        &format!("/v1/companies/{}", t.company.id),
        &json!({"suspended": true}),
    );
    let n = assert_seed_shape(&s, "company", &t.company.id, &[]);
    assert_eq!(n, 2 * 2);

    // The dealer example has a notification_contact and no webhook_url.
    let dealer = id_of(&s.create(
        "dealers",
        &json!({"name": "Dealer 2", "contact": contact("Dealer", "dealer2@tidings.test"),
                "notification_contact": {"email": "notify_dealer@tidings.test"},
                "reseller": {"id": t.reseller.id}}),
    ));
    s.patch_ok(
        &format!("/v1/dealers/{dealer}"),
        &json!({"name": "Dealer 2b"}),
    );
    let n = assert_seed_shape(&s, "dealer", &dealer, &[]);
    assert_eq!(n, 2);

    // The deleted example, for each of the five kinds.
    let seed_deleted = seed("deleted");
    let company = id_of(&s.create("companies", &company_body(&dealer)));
    let site = id_of(&s.create("sites", &site_body("S", &company, None)));
    let user = id_of(&s.create("users", &user_body("U", "company", &company, &[&site])));
    let meeting = id_of(&s.create("meetings", &personal_meeting_body(&company, &site, &user)));
    for (collection, id, event_type) in [
        ("meetings", &meeting, "MEETING_DELETED"),
        ("users", &user, "USER_DELETED"),
        ("sites", &site, "SITE_DELETED"),
        ("companies", &company, "COMPANY_DELETED"),
        ("dealers", &dealer, "DEALER_DELETED"),
    ] {
        s.delete_ok(&format!("/v1/{collection}/{id}"));
        let w = s.webhooks(&[("subject_id", id), ("type", event_type)]);
        assert!(!w.is_empty(), "{event_type} of {id} reached someone");
        for w in w {
            assert_envelope(&w);
            assert_eq!(w["payload"]["data"], json!({"id": id}), "{w:#}");
            assert_eq!(
                shape_diff(&seed_deleted["data"], &w["payload"]["data"]),
                Vec::<String>::new()
            );
        }
    }

    // No secret-looking value appears in any payload.
    for w in s.webhooks(&[]) {
        let text = w["payload"].to_string();
        assert!(!text.contains("whsec_"), "{text}");
        assert!(!text.contains(OPERATOR_KEY), "{text}");
    }
}

/// Asserts that `got` (a GET answer or a webhook's data) has every key of `expected`, `null`
/// allowed where nothing was set.
fn assert_keys(what: &str, expected: &Value, got: &Value) {
    let diff = key_diff(expected, got);
    assert!(
        diff.is_empty(),
        "{what} lacks keys of the seed's example:\n  {}\ndata: {got:#}",
        diff.join("\n  ")
    );
}

#[test]
fn sparse_entities_carry_every_key_of_the_seeds_examples() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    // Only the required fields: no phone or language, no photo, no logo, no texts, no
    // package, no webhook_url or notification_contact.
    let bare = |name: &str| json!({"first_name": name, "last_name": "L", "email": format!("{name}@tidings.test")});
    let reseller = id_of(&s.create("resellers", &json!({"name": "R", "contact": bare("r")})));
    let dealer = id_of(&s.create(
        "dealers",
        &json!({"name": "D", "contact": bare("d"), "reseller": {"id": t.reseller.id}}),
    ));
    let company = id_of(&s.create(
        "companies",
        &json!({"name": "C", "contact": bare("c"), "dealer": {"id": dealer}}),
    ));
    let site = id_of(&s.create("sites", &json!({"name": "S", "company": {"id": company}})));
    let user = id_of(&s.create(
        "users",
        &json!({"first_name": "U", "last_name": "L", "email": "u@tidings.test",
                "entity": {"type": "company", "id": company}}),
    ));
    let dealer_user = id_of(&s.create(
        "users",
        &json!({"first_name": "V", "last_name": "L", "email": "v@tidings.test",
                "entity": {"type": "dealer", "id": dealer}, "sites": []}),
    ));
    // A site lists its users: one linked to it, shown after the site changes.
    s.patch_ok(
        &format!("/v1/users/{user}"),
        &json!({"sites": [{"id": site}]}),
    );
    s.patch_ok(&format!("/v1/sites/{site}"), &json!({"name": "S2"}));
    let direct = id_of(&s.create(
        "meetings",
        &json!({"company": {"id": company}, "created_by": {"id": user}}),
    ));
    // Participants given with one field each: an agent by its user, a visitor by a phone.
    let personal = id_of(&s.create(
        "meetings",
        &json!({"company": {"id": company}, "site": {"id": site}, "created_by": {"id": user},
                "participants": [{"user": user}, {"phone": "+31612312312"}]}),
    ));

    let mut reseller_example = seed_data("dealer");
    reseller_example.as_object_mut().unwrap().remove("reseller");
    let cases = [
        ("resellers", &reseller, reseller_example),
        ("dealers", &dealer, seed_data("dealer")),
        ("companies", &company, seed_data("company")),
        ("sites", &site, seed_data("site")),
        ("users", &user, seed_data("user")),
        ("users", &dealer_user, seed_data("user")),
        ("meetings", &direct, seed_data("meeting_direct")),
        ("meetings", &personal, seed_data("meeting_personal")),
    ];
    for (collection, id, example) in &cases {
        let got = s.get_ok(&format!("/v1/{collection}/{id}"));
        assert_keys(&format!("GET {collection}/{id}"), example, &got);
        let webhooks = s.webhooks_of(id);
        if *collection != "resellers" {
            assert!(!webhooks.is_empty(), "{collection} {id} reached someone");
        }
        for w in webhooks {
            assert_keys(
                &format!("{} of {id}", w["type"]),
                example,
                &w["payload"]["data"],
            );
        }
    }

    // What was not given is null (or the seed's default), not left out.
    let company_view = s.get_ok(&format!("/v1/companies/{company}"));
    assert_eq!(company_view["contact"]["phone"], Value::Null);
    assert_eq!(company_view["contact"]["language"], Value::Null);
    assert_eq!(company_view["package"], Value::Null);
    assert_eq!(company_view["webhook_url"], Value::Null);
    assert_eq!(company_view["notification_contact"], Value::Null);
    assert_eq!(company_view["suspended"], false);
    let site_view = s.get_ok(&format!("/v1/sites/{site}"));
    for key in [
        "logo",
        "videochat_font_type",
        "videochat_text_color",
        "email_invite_text",
        "email_cancel_text",
        "email_hardwaretest_text",
        "webhook_url",
        "notification_contact",
    ] {
        assert_eq!(site_view.get(key), Some(&Value::Null), "site {key}");
    }
    assert_eq!(site_view["email_enable_hardwaretest"], false);
    let user_view = s.get_ok(&format!("/v1/users/{user}"));
    assert_eq!(user_view.get("photo"), Some(&Value::Null));
    assert_eq!(user_view["entity"].get("package"), Some(&Value::Null));
    let meeting = s.get_ok(&format!("/v1/meetings/{personal}"));
    assert_eq!(meeting.get("subject"), Some(&Value::Null));
    assert_eq!(meeting.get("invitation"), Some(&Value::Null));
    let visitor = &meeting["participants"][1];
    for key in ["name", "user", "email"] {
        assert_eq!(visitor.get(key), Some(&Value::Null), "visitor {key}");
    }
    assert_eq!(meeting["participants"][0].get("phone"), Some(&Value::Null));
}

#[test]
fn the_shape_comparison_catches_a_missing_or_extra_key() {
    // The shape check must be able to fail: a seed example (its participants completed with
    // `null` for the keys other participants show) with one key removed, one added, one
    // retyped, and a participant without a key another one has.
    let seed = seed("meeting_personal")["data"].clone();
    let mut full = seed.clone();
    for p in full["participants"].as_array_mut().unwrap() {
        for key in ["name", "user", "email", "phone"] {
            p.as_object_mut().unwrap().entry(key).or_insert(Value::Null);
        }
    }
    assert_eq!(shape_diff(&seed, &full), Vec::<String>::new());
    assert_eq!(
        shape_diff(&seed, &seed),
        [
            "data.participants[0].phone: missing",
            "data.participants[1].user: missing",
            "data.participants[2].user: missing"
        ],
        "the seed's own participants each lack a key another one shows"
    );
    let mut v = full.clone();
    v.as_object_mut().unwrap().remove("subject");
    v["company"]["contact"]["extra"] = json!(1);
    v["duration"] = json!("0");
    v["participants"][1]
        .as_object_mut()
        .unwrap()
        .remove("email");
    let diff = shape_diff(&seed, &v);
    assert_eq!(diff.len(), 4, "{diff:#?}");
    assert!(diff.contains(&"data.subject: missing".to_owned()));
    assert!(diff.contains(&"data.company.contact.extra: not in the seed".to_owned()));
    assert!(diff.contains(&"data.duration: a string, the seed has a number".to_owned()));
    assert!(
        diff.contains(&"data.participants[1].email: missing".to_owned()),
        "{diff:#?}"
    );
}

#[test]
fn get_of_each_entity_equals_the_data_of_its_latest_webhook() {
    let s = TestServer::start();
    let t = Tree::build(&s);

    // Top-down, so that no later change alters what an earlier entity embeds (a company
    // embeds its dealer, a site its users, a meeting its company, site and creator).
    let subjects: [(&str, &str, Value); 7] = [
        ("dealers", &t.dealer.id, json!({"name": "Dealer 1b"})),
        ("companies", &t.company.id, json!({"name": "Company 1b"})),
        ("users", &t.company_user, json!({"first_name": "Agentb"})),
        ("users", &t.dealer_user, json!({"role": "admin"})),
        (
            "sites",
            &t.site_a.id,
            json!({"email_enable_hardwaretest": true}),
        ),
        (
            "meetings",
            &t.direct_meeting,
            json!({"participants": [{"user": t.company_user}]}),
        ),
        (
            "meetings",
            &t.personal_meeting,
            json!({"invitation": "See you"}),
        ),
    ];
    let mut latest: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (collection, id, patch) in &subjects {
        let path = format!("/v1/{collection}/{id}");
        let (answer, webhooks) = s.new_webhooks(id, || s.patch_ok(&path, patch));
        assert!(!webhooks.is_empty(), "{path} {patch}");
        for w in &webhooks {
            assert_eq!(
                w["payload"]["data"], answer,
                "PATCH answer vs webhook of {path}"
            );
        }
        latest.insert(id.to_string(), webhooks);
    }
    // A moment is the latest event of the meetings.
    for meeting in [&t.direct_meeting, &t.personal_meeting] {
        let (answer, webhooks) = s.new_webhooks(meeting, || s.moment(meeting, "end"));
        for w in &webhooks {
            assert_eq!(w["payload"]["data"], answer);
        }
        latest.insert(meeting.clone(), webhooks);
    }

    for (collection, id, _) in &subjects {
        let got = s.get_ok(&format!("/v1/{collection}/{id}"));
        let webhooks = &latest[*id];
        for w in webhooks {
            assert_eq!(
                w["payload"]["data"], got,
                "GET /v1/{collection}/{id} vs the data of its latest webhook ({})",
                w["type"]
            );
        }
        // The list shows the same object.
        let listed = s.list_all(&format!("/v1/{collection}"), &[]);
        let item = listed.iter().find(|v| v["id"] == **id).expect("listed");
        assert_eq!(item, &got, "list vs GET of {id}");
    }
    // The patches really changed what they said.
    let dealer = s.get_ok(&format!("/v1/dealers/{}", t.dealer.id));
    assert_eq!(dealer["name"], "Dealer 1b");
    let user = s.get_ok(&format!("/v1/users/{}", t.company_user));
    assert_eq!(user["name"], "Agentb Lastname");
    let meeting = s.get_ok(&format!("/v1/meetings/{}", t.direct_meeting));
    assert_eq!(meeting["participants"].as_array().unwrap().len(), 1);
    assert_eq!(meeting["company"]["name"], "Company 1b");
    assert_eq!(meeting["created_by"]["name"], "Agentb Lastname");
}

#[test]
fn a_webhook_keeps_the_url_its_level_had_when_it_was_created() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let (r, d, c) = (&t.reseller, &t.dealer, &t.company);
    let user_path = format!("/v1/users/{}", t.company_user);
    let touch_user = |status: &str| {
        s.new_webhooks(&t.company_user, || {
            s.patch_ok(&user_path, &json!({"status": status}))
        })
        .1
    };

    let before = touch_user("away");
    assert_routed("before", &before, "USER_CHANGED", &[c, d, r]);

    // The company's new URL: its own change goes to dealer and reseller, never to itself.
    let new_url = "https://127.0.0.1:9/hooks/company-new";
    let (_, w) = s.new_webhooks(&c.id, || {
        s.patch_ok(
            &format!("/v1/companies/{}", c.id),
            &json!({"webhook_url": new_url}),
        )
    });
    assert_routed("url change", &w, "COMPANY_CHANGED", &[d, r]);
    assert_eq!(w[0]["payload"]["data"]["webhook_url"], new_url);

    let after = touch_user("online");
    let c_new = Level {
        url: new_url.into(),
        ..c.clone()
    };
    assert_routed("after", &after, "USER_CHANGED", &[&c_new, d, r]);
    // The earlier webhook still has the old URL, read back one by one.
    for w in &before {
        let again = s.get_ok(&format!("/v1/webhooks/{}", w["id"].as_str().unwrap()));
        assert_eq!(again["url"], w["url"]);
    }
    let to_company: Vec<String> = s
        .webhooks(&[("level_id", &c.id)])
        .iter()
        .map(|w| w["url"].as_str().unwrap().to_owned())
        .collect();
    assert!(to_company.contains(&c.url) && to_company.contains(&new_url.to_owned()));

    // The same for a site and a personal meeting.
    let site_url = "https://127.0.0.1:9/hooks/site-a-new";
    let (_, first) = s.new_webhooks(&t.personal_meeting, || {
        s.moment(&t.personal_meeting, "start")
    });
    s.patch_ok(
        &format!("/v1/sites/{}", t.site_a.id),
        &json!({"webhook_url": site_url}),
    );
    let (_, second) = s.new_webhooks(&t.personal_meeting, || s.moment(&t.personal_meeting, "end"));
    let sa_new = Level {
        url: site_url.into(),
        ..t.site_a.clone()
    };
    assert_routed(
        "before site url",
        &first,
        "MEETING_STARTED",
        &[&t.site_a, &c_new, d, r],
    );
    assert_routed(
        "after site url",
        &second,
        "MEETING_ENDED",
        &[&sa_new, &c_new, d, r],
    );

    // Clearing the URL stops new webhooks to that level; old ones stay.
    let cleared = s.patch_ok(
        &format!("/v1/companies/{}", c.id),
        &json!({"webhook_url": null}),
    );
    assert_eq!(
        cleared.get("webhook_url"),
        Some(&Value::Null),
        "{cleared:#}"
    );
    let company_count = s.webhooks(&[("level_id", &c.id)]).len();
    let last = touch_user("away");
    assert_routed("cleared", &last, "USER_CHANGED", &[d, r]);
    let (_, m) = s.new_webhooks(&t.personal_meeting, || {
        s.moment(&t.personal_meeting, "wait")
    });
    assert_routed("cleared, meeting", &m, "MEETING_WAIT", &[&sa_new, d, r]);
    assert_eq!(s.webhooks(&[("level_id", &c.id)]).len(), company_count);
    for w in &before {
        let again = s.get_ok(&format!("/v1/webhooks/{}", w["id"].as_str().unwrap()));
        assert_eq!(again["url"], w["url"]);
    }
}

#[test]
fn a_patch_that_changes_nothing_emits_nothing() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let count = s.webhook_count();
    let subjects = [
        ("resellers", &t.reseller.id),
        ("packages", &t.package),
        ("dealers", &t.dealer.id),
        ("companies", &t.company.id),
        ("sites", &t.site_a.id),
        ("users", &t.company_user),
        ("users", &t.dealer_user),
        ("meetings", &t.direct_meeting),
        ("meetings", &t.personal_meeting),
    ];
    for (collection, id) in subjects {
        let path = format!("/v1/{collection}/{id}");
        let current = s.get_ok(&path);
        // An empty patch, and a patch that sets fields to the values they have.
        let same = match collection {
            "resellers" | "dealers" | "companies" => {
                json!({"name": current["name"], "contact": {"email": current["contact"]["email"]},
                       "webhook_url": current["webhook_url"], "suspended": current["suspended"]})
            }
            "packages" => json!({"features": current["features"]}),
            "sites" => json!({"name": current["name"], "company": {"id": t.company.id},
                              "email_enable_hardwaretest": false}),
            "users" => json!({"first_name": current["first_name"], "status": current["status"],
                              "entity": {"type": current["entity"]["type"],
                                         "id": current["entity"]["id"]}}),
            _ if id == &t.direct_meeting => json!({
                "participants": [{"user": t.company_user}, {"phone": "+3112312312"}],
                "stream_camera_two_way": true}),
            _ => json!({"subject": "Meeting", "site": {"id": t.site_a.id}}),
        };
        for patch in [json!({}), same] {
            let answer = s.patch_ok(&path, &patch);
            assert_eq!(answer, current, "PATCH {path} {patch} changed the entity");
            assert_eq!(
                s.webhook_count(),
                count,
                "PATCH {path} {patch} emitted webhooks"
            );
        }
        assert_eq!(s.get_ok(&path), current);
    }
    // A real change does emit (the count above can move).
    s.patch_ok(
        &format!("/v1/companies/{}", t.company.id),
        &json!({"name": "Changed"}),
    );
    assert_eq!(s.webhook_count(), count + 2);
}

/// What a refused request must leave alone: the webhook count and the entities it touches.
fn snapshot(s: &TestServer, paths: &[String]) -> (usize, Vec<Value>) {
    let entities = paths
        .iter()
        .map(|p| {
            if p.matches('/').count() == 2 {
                json!(s.list_all(p, &[]))
            } else {
                s.get_ok(p)
            }
        })
        .collect();
    (s.webhook_count(), entities)
}

struct Refusal {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<String>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
    /// Collections and entities that must not change.
    untouched: Vec<String>,
}

#[test]
fn bad_input_is_refused_with_the_right_error_and_changes_nothing() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let (r, d, c) = (&t.reseller.id, &t.dealer.id, &t.company.id);
    let dealer_body = |extra: Value| {
        let mut b = json!({"name": "D", "contact": contact("D", "d@tidings.test"),
                           "reseller": {"id": r}});
        common_merge(&mut b, extra);
        b.to_string()
    };
    let company_path = format!("/v1/companies/{c}");
    let missing = "0123456789abcdef01234567";
    let refusal = |what: &'static str,
                   method: Method,
                   path: &str,
                   body: Option<String>,
                   status: u16,
                   code: &'static str,
                   field: Option<&'static str>,
                   untouched: &[&str]| Refusal {
        what,
        method,
        path: path.to_owned(),
        body,
        status,
        code,
        field,
        untouched: untouched.iter().map(|p| p.to_string()).collect(),
    };
    let cases = vec![
        refusal(
            "malformed JSON on create",
            Method::POST,
            "/v1/dealers",
            Some(r#"{"name": "D","#.into()),
            400,
            "invalid_json",
            None,
            &["/v1/dealers"],
        ),
        refusal(
            "malformed JSON on change",
            Method::PATCH,
            &company_path,
            Some("name=Other".into()),
            400,
            "invalid_json",
            None,
            &[&company_path],
        ),
        refusal(
            "empty body",
            Method::POST,
            "/v1/companies",
            Some(String::new()),
            400,
            "invalid_json",
            None,
            &["/v1/companies"],
        ),
        refusal(
            "unknown field on create",
            Method::POST,
            "/v1/dealers",
            Some(dealer_body(json!({"colour": "red"}))),
            422,
            "invalid_field",
            Some("colour"),
            &["/v1/dealers"],
        ),
        refusal(
            "unknown nested field",
            Method::POST,
            "/v1/dealers",
            Some(dealer_body(json!({"contact": {"fax": "+3100"}}))),
            422,
            "invalid_field",
            Some("contact.fax"),
            &["/v1/dealers"],
        ),
        refusal(
            "unknown field on change",
            Method::PATCH,
            &company_path,
            Some(json!({"name": "New", "nickname": "x"}).to_string()),
            422,
            "invalid_field",
            Some("nickname"),
            &[&company_path],
        ),
        refusal(
            "wrong type on create",
            Method::POST,
            "/v1/dealers",
            Some(dealer_body(json!({"contact": {"email": 5}}))),
            422,
            "invalid_field",
            Some("contact.email"),
            &["/v1/dealers"],
        ),
        refusal(
            "wrong type on change",
            Method::PATCH,
            &company_path,
            Some(json!({"name": "New", "suspended": "yes"}).to_string()),
            422,
            "invalid_field",
            Some("suspended"),
            &[&company_path],
        ),
        refusal(
            "invalid e-mail",
            Method::PATCH,
            &company_path,
            Some(json!({"contact": {"email": "not an address"}}).to_string()),
            422,
            "invalid_field",
            Some("contact.email"),
            &[&company_path],
        ),
        refusal(
            "missing parent",
            Method::POST,
            "/v1/companies",
            Some(company_body(missing).to_string()),
            422,
            "invalid_reference",
            Some("dealer.id"),
            &["/v1/companies"],
        ),
        refusal(
            "a reseller as a company's dealer",
            Method::POST,
            "/v1/companies",
            Some(company_body(r).to_string()),
            422,
            "invalid_reference",
            Some("dealer.id"),
            &["/v1/companies"],
        ),
        refusal(
            "moving a company under a reseller",
            Method::PATCH,
            &company_path,
            Some(json!({"dealer": {"id": r}}).to_string()),
            422,
            "invalid_reference",
            Some("dealer.id"),
            &[&company_path],
        ),
        refusal(
            "a dealer as a site's company",
            Method::POST,
            "/v1/sites",
            Some(site_body("S", d, None).to_string()),
            422,
            "invalid_reference",
            Some("company.id"),
            &["/v1/sites"],
        ),
        refusal(
            "a user whose company is a dealer",
            Method::POST,
            "/v1/users",
            Some(user_body("U", "company", d, &[]).to_string()),
            422,
            "invalid_reference",
            Some("entity.id"),
            &["/v1/users"],
        ),
        refusal(
            "a company as a meeting's site",
            Method::POST,
            "/v1/meetings",
            Some(personal_meeting_body(c, c, &t.company_user).to_string()),
            422,
            "invalid_reference",
            Some("site.id"),
            &["/v1/meetings"],
        ),
        refusal(
            "http:// webhook URL on create",
            Method::POST,
            "/v1/dealers",
            Some(dealer_body(
                json!({"webhook_url": "http://127.0.0.1:9/hooks/plain"}),
            )),
            422,
            "invalid_field",
            Some("webhook_url"),
            &["/v1/dealers"],
        ),
        refusal(
            "http:// webhook URL on change",
            Method::PATCH,
            &company_path,
            Some(json!({"webhook_url": "http://127.0.0.1:9/hooks/plain"}).to_string()),
            422,
            "invalid_field",
            Some("webhook_url"),
            &[&company_path],
        ),
        refusal(
            "deleting a company that has sites",
            Method::DELETE,
            &company_path,
            None,
            409,
            "conflict",
            None,
            &[&company_path, "/v1/companies"],
        ),
        refusal(
            "deleting a dealer that has companies",
            Method::DELETE,
            &format!("/v1/dealers/{d}"),
            None,
            409,
            "conflict",
            None,
            &["/v1/dealers"],
        ),
        refusal(
            "deleting a site users are linked to",
            Method::DELETE,
            &format!("/v1/sites/{}", t.site_b.id),
            None,
            409,
            "conflict",
            None,
            &["/v1/sites"],
        ),
        refusal(
            "deleting a user who created meetings",
            Method::DELETE,
            &format!("/v1/users/{}", t.company_user),
            None,
            409,
            "conflict",
            None,
            &["/v1/users"],
        ),
        refusal(
            "a client-made id",
            Method::POST,
            "/v1/dealers",
            Some(dealer_body(json!({"id": "0123456789abcdef01234567"}))),
            422,
            "invalid_field",
            Some("id"),
            &["/v1/dealers"],
        ),
        refusal(
            "a client-made created_at",
            Method::POST,
            "/v1/users",
            Some({
                let mut b = user_body("U", "company", c, &[]);
                b["created_at"] = json!("2020-01-29T15:26:20.000Z");
                b.to_string()
            }),
            422,
            "invalid_field",
            Some("created_at"),
            &["/v1/users"],
        ),
        refusal(
            "a client-made room_id",
            Method::POST,
            "/v1/meetings",
            Some({
                let mut b = direct_meeting_body(c, &t.company_user);
                b["room_id"] = json!("9Pusrq3Do43DAEQnOG9aCtLFfl2FoURd");
                b.to_string()
            }),
            422,
            "invalid_field",
            Some("room_id"),
            &["/v1/meetings"],
        ),
        refusal(
            "a client-made participant hash",
            Method::POST,
            "/v1/meetings",
            Some({
                let mut b = direct_meeting_body(c, &t.company_user);
                b["participants"][1]["hash"] = json!("qj7OqoxSt2zK6S16my8VZ28N1IigzvNl");
                b.to_string()
            }),
            422,
            "invalid_field",
            Some("participants[1].hash"),
            &["/v1/meetings"],
        ),
        refusal(
            "changing a meeting's room_id",
            Method::PATCH,
            &format!("/v1/meetings/{}", t.direct_meeting),
            Some(json!({"room_id": "x"}).to_string()),
            422,
            "invalid_field",
            Some("room_id"),
            &[&format!("/v1/meetings/{}", t.direct_meeting)],
        ),
        refusal(
            "an unknown meeting moment",
            Method::POST,
            &format!("/v1/meetings/{}/explode", t.direct_meeting),
            None,
            404,
            "not_found",
            None,
            &[&format!("/v1/meetings/{}", t.direct_meeting)],
        ),
        refusal(
            "a moment of a meeting that does not exist",
            Method::POST,
            &format!("/v1/meetings/{missing}/start"),
            None,
            404,
            "not_found",
            None,
            &["/v1/meetings"],
        ),
        refusal(
            "a moment of a company",
            Method::POST,
            &format!("/v1/meetings/{c}/start"),
            None,
            404,
            "not_found",
            None,
            &[&company_path],
        ),
        refusal(
            "changing a company through the dealers collection",
            Method::PATCH,
            &format!("/v1/dealers/{c}"),
            Some(json!({"name": "Other"}).to_string()),
            404,
            "not_found",
            None,
            &[&company_path],
        ),
    ];
    for case in cases {
        let before = snapshot(&s, &case.untouched);
        let a = s.raw(case.method.clone(), &case.path, case.body.as_deref());
        let ctx = format!(
            "{}: {} {} {:?} answered {} {:#}",
            case.what, case.method, case.path, case.body, a.status, a.body
        );
        assert_eq!(a.status, case.status, "{ctx}");
        assert_eq!(a.body["error"]["code"], case.code, "{ctx}");
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{ctx}"
        );
        match case.field {
            Some(f) => assert_eq!(a.body["error"]["field"], f, "{ctx}"),
            None => assert!(a.body["error"].get("field").is_none(), "{ctx}"),
        }
        assert_eq!(
            snapshot(&s, &case.untouched),
            before,
            "{ctx}: state changed"
        );
    }
}

/// Merges `extra` into `base` (objects key by key).
fn common_merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                common_merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

#[test]
fn a_missing_required_field_is_named() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let a = s.post(
        "/v1/dealers",
        &json!({"contact": contact("D", "d@tidings.test"), "reseller": {"id": t.reseller.id}}),
    );
    assert_eq!(a.status, 422, "{:#}", a.body);
    assert_eq!(a.body["error"]["field"], "name", "{:#}", a.body);
}

#[test]
fn a_personal_meetings_site_must_belong_to_its_company() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let other = id_of(&s.create(
        "companies",
        &json!({"name": "Other", "contact": contact("O", "o@tidings.test"),
                "dealer": {"id": t.dealer.id}, "webhook_url": hook_url("other")}),
    ));
    let other_site = id_of(&s.create("sites", &site_body("Other site", &other, None)));
    let count = s.webhook_count();
    let a = s.post(
        "/v1/meetings",
        &personal_meeting_body(&t.company.id, &other_site, &t.company_user),
    );
    let routed: Vec<Routed> = s
        .webhooks(&[("type", "MEETING_CREATED")])
        .iter()
        .skip(7) // the tree's two meetings
        .map(routed)
        .collect();
    assert_eq!(
        a.status, 422,
        "{:#}\nits webhooks went to {routed:#?}",
        a.body
    );
    assert_eq!(a.body["error"]["code"], "invalid_reference");
    assert_eq!(a.body["error"]["field"], "site.id");
    assert_eq!(s.webhook_count(), count);
}

#[test]
fn http_webhook_urls_are_accepted_only_when_the_operator_allows_them() {
    let url = "http://127.0.0.1:9/hooks/plain";
    let body = |reseller: &str| {
        json!({"name": "D", "contact": contact("D", "d@tidings.test"),
               "reseller": {"id": reseller}, "webhook_url": url})
    };
    let reseller = json!({"name": "R", "contact": contact("R", "r@tidings.test"),
                          "webhook_url": "https://127.0.0.1:9/hooks/r"});

    let strict = TestServer::start();
    let r = id_of(&strict.create("resellers", &reseller));
    let a = strict.post("/v1/dealers", &body(&r));
    assert_eq!(a.status, 422, "{:#}", a.body);
    assert_eq!(a.body["error"]["field"], "webhook_url");
    assert_eq!(strict.list_all("/v1/dealers", &[]), Vec::<Value>::new());

    let dev = TestServer::start_env(&[("TIDINGS_ALLOW_HTTP", "true")]);
    let r = id_of(&dev.create("resellers", &reseller));
    let dealer = dev.create("dealers", &body(&r));
    assert_eq!(dealer["webhook_url"], url);
    // Its events then carry the http:// URL as their snapshot.
    let company = id_of(&dev.create("companies", &company_body(dealer["id"].as_str().unwrap())));
    let w = dev.webhooks(&[
        ("subject_id", &company),
        ("level_id", dealer["id"].as_str().unwrap()),
    ]);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0]["url"], url);
    // Other schemes stay refused even then.
    let mut ftp = body(&r);
    ftp["webhook_url"] = json!("ftp://127.0.0.1:9/hooks/ftp");
    let a = dev.post("/v1/dealers", &ftp);
    assert_eq!(a.status, 422, "{:#}", a.body);
    assert_eq!(a.body["error"]["field"], "webhook_url");
}

#[test]
fn health_readiness_metrics_and_openapi() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    // Two more dealers under the tree's reseller (one webhook each), one under a reseller
    // without a webhook_url (none).
    for n in 0..2 {
        s.create(
            "dealers",
            &json!({"name": format!("Extra {n}"), "contact": contact("E", "e@tidings.test"),
                    "reseller": {"id": t.reseller.id}}),
        );
    }
    let quiet = id_of(&s.create(
        "resellers",
        &json!({"name": "Quiet", "contact": contact("Q", "q@tidings.test")}),
    ));
    s.create(
        "dealers",
        &json!({"name": "Quiet dealer", "contact": contact("Q", "q@tidings.test"),
                "reseller": {"id": quiet}}),
    );

    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/readyz").status, 200);

    let metrics = s.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("metrics are text").to_owned();
    let value = |series: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    };
    assert_eq!(
        value(r#"tidings_webhooks{type="DEALER_CREATED",status="pending"}"#).as_deref(),
        Some("3"),
        "{text}"
    );
    assert_eq!(
        value(r#"tidings_webhooks{type="COMPANY_CREATED",status="pending"}"#).as_deref(),
        Some("2"),
        "{text}"
    );
    // Personal meeting: site, company, dealer, reseller.
    assert_eq!(
        value(r#"tidings_webhooks{type="MEETING_CREATED",status="pending"}"#).as_deref(),
        Some("7"),
        "{text}"
    );
    assert_eq!(
        value(r#"tidings_webhooks{type="DEALER_DELETED",status="pending"}"#),
        None,
        "{text}"
    );

    let doc = s.get("/v1/openapi.json");
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    let paths = doc.body["paths"].as_object().expect("paths");
    for p in [
        "/v1/dealers",
        "/v1/dealers/{id}",
        "/v1/meetings/{id}/takeover",
        "/v1/webhooks",
    ] {
        assert!(paths.contains_key(p), "{p} in {:?}", paths.keys());
    }
    assert!(doc.body["paths"]["/v1/dealers"]["post"].is_object());

    let a = s.get("/v1/nothing-here");
    assert_eq!(a.status, 404);
    assert_eq!(a.body["error"]["code"], "not_found");
}

// ---------------------------------------------------------------------------------------------
// Request and answer details

/// A request with chosen headers; answers status, headers and the body as JSON.
fn send(
    s: &TestServer,
    method: Method,
    path: &str,
    key: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::blocking::Client::new();
    let mut req = client
        .request(method, s.url(path))
        .bearer_auth(key)
        .body(body.to_owned());
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn a_body_that_is_not_declared_json_answers_415_and_changes_nothing() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let dealer = json!({"name": "D415", "contact": contact("D", "d415@tidings.test"),
                        "reseller": {"id": t.reseller.id}})
    .to_string();
    let before = s.get_ok("/v1/dealers?limit=1000");
    let bodies = [
        (Method::POST, "/v1/dealers".to_owned(), dealer.clone()),
        (
            Method::PATCH,
            format!("/v1/dealers/{}", t.dealer.id),
            r#"{"name": "Changed"}"#.to_owned(),
        ),
        (
            Method::POST,
            "/v1/api-keys".to_owned(),
            json!({"level": "dealer", "id": t.dealer.id}).to_string(),
        ),
        (
            Method::POST,
            "/v1/webhooks/recover".to_owned(),
            json!({"level_id": t.dealer.id, "since": "2000-01-01T00:00:00.000Z"}).to_string(),
        ),
    ];
    for (method, path, body) in &bodies {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonx"),
        ] {
            let (status, _, answer) =
                send(&s, method.clone(), path, OPERATOR_KEY, content_type, body);
            assert_eq!(status, 415, "{method} {path} {content_type:?}: {answer}");
            assert_eq!(
                answer["error"]["code"], "unsupported_media_type",
                "{answer}"
            );
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("application/json")),
                "{answer}"
            );
        }
    }
    assert_eq!(s.get_ok("/v1/dealers?limit=1000"), before);
    // JSON with parameters or a +json type is JSON.
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ] {
        let (status, _, answer) = send(
            &s,
            Method::PATCH,
            &format!("/v1/dealers/{}", t.dealer.id),
            OPERATOR_KEY,
            Some(content_type),
            &json!({"name": format!("Dealer {content_type}")}).to_string(),
        );
        assert_eq!(status, 200, "{content_type}: {answer}");
    }
}

#[test]
fn secrets_and_new_keys_are_answered_with_no_store() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let company = format!("/v1/companies/{}", t.company.id);
    for (method, path, body) in [
        (Method::GET, format!("{company}/secret"), None),
        (Method::POST, format!("{company}/secret/rotate"), None),
        (
            Method::POST,
            "/v1/api-keys".to_owned(),
            Some(json!({"level": "company", "id": t.company.id}).to_string()),
        ),
    ] {
        let (status, headers, answer) = send(
            &s,
            method.clone(),
            &path,
            OPERATOR_KEY,
            body.as_ref().map(|_| "application/json"),
            body.as_deref().unwrap_or(""),
        );
        assert!(status == 200 || status == 201, "{method} {path}: {answer}");
        assert_eq!(headers["cache-control"], "no-store", "{method} {path}");
    }
}

#[test]
fn webhook_urls_are_stored_normalised_and_ambiguous_ones_refused() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let path = format!("/v1/companies/{}", t.company.id);
    let before = s.get_ok(&path);
    for bad in [
        " https://hooks.example/x",
        "https://hooks.example/x ",
        "https://hooks.example\\x",
        "https://hooks.example/\tx",
    ] {
        let a = s.patch(&path, &json!({ "webhook_url": bad }));
        assert_eq!(a.status, 422, "{bad:?}: {:?}", a.body);
        assert_eq!(a.body["error"]["field"], "webhook_url", "{:?}", a.body);
    }
    assert_eq!(s.get_ok(&path), before, "refused URLs changed nothing");
    let changed = s.patch_ok(
        &path,
        &json!({"webhook_url": "HTTPS://Hooks.EXAMPLE:443/a/../hook"}),
    );
    assert_eq!(changed["webhook_url"], "https://hooks.example/hook");
    assert_eq!(s.get_ok(&path)["webhook_url"], "https://hooks.example/hook");
    // The next webhook to the company goes to the normalised URL.
    let user = id_of(&s.create("users", &user_body("Normal", "company", &t.company.id, &[])));
    let to_company: Vec<Value> = s
        .webhooks_of(&user)
        .into_iter()
        .filter(|w| w["level"]["id"] == t.company.id.as_str())
        .collect();
    assert_eq!(to_company.len(), 1);
    assert_eq!(to_company[0]["url"], "https://hooks.example/hook");
    // Naming the same URL again is no change.
    let n = s.webhooks(&[]).len();
    s.patch_ok(&path, &json!({"webhook_url": "https://hooks.example/hook"}));
    assert_eq!(s.webhooks(&[]).len(), n, "a no-op PATCH emits nothing");
}

#[test]
fn keys_of_a_deleted_level_stop_working() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let company = id_of(&s.create(
        "companies",
        &json!({"name": "Short-lived", "contact": contact("S", "short@tidings.test"),
                "dealer": {"id": t.dealer.id}}),
    ));
    let made = s.post("/v1/api-keys", &json!({"level": "company", "id": company}));
    assert_eq!(made.status, 201, "{:?}", made.body);
    let key = made.body["key"].as_str().unwrap().to_owned();
    let path = format!("/v1/companies/{company}");
    assert_eq!(send(&s, Method::GET, &path, &key, None, "").0, 200);
    s.delete_ok(&path);
    for (method, p) in [
        (Method::GET, path.clone()),
        (Method::GET, "/v1/webhooks".to_owned()),
        (Method::GET, "/v1/packages".to_owned()),
    ] {
        let (status, _, answer) = send(&s, method, &p, &key, None, "");
        assert_eq!(status, 401, "{p}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
}

#[test]
fn a_suspended_company_reads_but_cannot_change_or_lift_its_suspension() {
    let s = TestServer::start();
    let t = Tree::build(&s);
    let key_for = |level: &str, id: &str| {
        let a = s.post("/v1/api-keys", &json!({"level": level, "id": id}));
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body["key"].as_str().unwrap().to_owned()
    };
    let company_key = key_for("company", &t.company.id);
    let dealer_key = key_for("dealer", &t.dealer.id);
    let company = format!("/v1/companies/{}", t.company.id);
    let json = Some("application/json");
    let patch = |key: &str, body: &str| send(&s, Method::PATCH, &company, key, json, body);

    // Its own authority fields are not the company's to change.
    for body in [
        json!({"suspended": true}),
        json!({"package": null}),
        json!({"dealer": {"id": t.dealer.id}, "suspended": true}),
    ] {
        let (status, _, answer) = patch(&company_key, &body.to_string());
        assert_eq!(status, 403, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden");
    }
    let (status, _, answer) = patch(&dealer_key, r#"{"suspended": true}"#);
    assert_eq!(status, 200, "{answer}");

    // Suspended: reads answer, changes do not, and nothing changed.
    let before = s.get_ok(&company);
    let sites = s.get_ok("/v1/sites?limit=1000");
    for path in [
        company.clone(),
        format!("/v1/sites/{}", t.site_a.id),
        format!("{company}/secret"),
    ] {
        assert_eq!(
            send(&s, Method::GET, &path, &company_key, None, "").0,
            200,
            "{path}"
        );
    }
    let site = json!({"name": "New", "company": {"id": t.company.id}}).to_string();
    for (method, path, body) in [
        (
            Method::PATCH,
            company.clone(),
            r#"{"suspended": false}"#.to_owned(),
        ),
        (
            Method::PATCH,
            company.clone(),
            r#"{"name": "Renamed"}"#.to_owned(),
        ),
        (Method::POST, "/v1/sites".to_owned(), site),
        (
            Method::POST,
            format!("/v1/meetings/{}/start", t.direct_meeting),
            String::new(),
        ),
        (
            Method::POST,
            format!("{company}/secret/rotate"),
            String::new(),
        ),
    ] {
        let (status, _, answer) = send(&s, method.clone(), &path, &company_key, json, &body);
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("suspended"),
            "{answer}"
        );
    }
    assert_eq!(s.get_ok(&company), before);
    assert_eq!(s.get_ok("/v1/sites?limit=1000"), sites);

    // Lifted by its dealer, the company's key changes again.
    let (status, _, answer) = patch(&dealer_key, r#"{"suspended": false}"#);
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = patch(&company_key, r#"{"name": "Renamed"}"#);
    assert_eq!(status, 200, "{answer}");
}
